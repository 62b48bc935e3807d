//! Connection and frame limits: a client over a limit is refused or
//! disconnected; the clients within it keep being served.

use borges_net::protocol::{ApiVersionsRequest, Request};
use borges_system_tests::{Broker, RawConn};

#[test]
fn connections_over_the_limit_are_refused_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("borges.toml");
    std::fs::write(
        &config,
        "max_connections_per_shard = 2\nmax_frame_bytes = 65536\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let config_arg = config.to_string_lossy().to_string();
    let mut broker = Broker::start(&data, 1, &["--config", &config_arg]);

    let mut a = RawConn::connect(broker.addr);
    let mut b = RawConn::connect(broker.addr);
    assert!(a.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());
    assert!(b.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());
    // A third connection on the only shard is over the limit: closed at once.
    let mut c = RawConn::connect(broker.addr);
    assert!(c.is_closed_by_peer(), "the third connection is refused");

    // A frame over the configured 64 KiB limit closes that connection only.
    b.send_raw(&(1u32 << 20).to_be_bytes()).unwrap();
    assert!(b.is_closed_by_peer());
    assert!(a.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());

    // Room freed by the closed connections is usable again (the broker
    // counts a connection out once it has finished with it: retry briefly).
    let mut served = false;
    for _ in 0..100 {
        let mut d = RawConn::connect(broker.addr);
        if !d.is_closed_within(std::time::Duration::from_millis(50)) {
            assert!(d.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());
            served = true;
            break;
        }
    }
    assert!(served, "a new connection is accepted once others closed");
    assert!(broker.terminate().success());
}
