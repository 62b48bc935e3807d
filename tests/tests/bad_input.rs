//! A broker faced with garbage, truncated and oversized frames, unknown
//! APIs, corrupt batches and unknown topics: typed errors or a closed
//! connection, and it goes on serving everyone else with nothing stored
//! lost or altered.

use borges_net::batch::{decode_records, BatchIter};
use borges_net::protocol::*;
use borges_net::types::TopicId;
use borges_system_tests::{batch, Broker, RawConn};
use bytes::BytesMut;

fn fetch_values(c: &mut RawConn, topic: TopicId, partition: u32) -> Vec<String> {
    let resp = c
        .call(Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                topic_id: topic,
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: 0,
                    partition_max_bytes: 1 << 20,
                }],
            }],
        }))
        .expect("fetch");
    let Response::Fetch(r) = resp else {
        panic!("wrong response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error, ErrorCode::None);
    let mut out = Vec::new();
    for item in BatchIter::new(&p.records) {
        let (_, range) = item.unwrap();
        for rec in decode_records(&p.records[range]).unwrap() {
            out.push(String::from_utf8(rec.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

#[test]
fn bad_input_gets_typed_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), 2, &["--max-frame-bytes", "1048576"]);
    let mut good = RawConn::connect(broker.addr);
    let topic = good.create_topic("orders", 2, &[]);
    assert_eq!(good.produce(topic, 0, batch(&["a", "b"])).error, ErrorCode::None);

    // A batch with a bad CRC: refused with CORRUPT_MESSAGE, nothing stored.
    let mut bad = batch(&["evil"]);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(good.produce(topic, 0, bad).error, ErrorCode::CorruptMessage);
    // Impossible lengths inside the records: refused too.
    let mut lying = batch(&["liar"]);
    lying[8..12].copy_from_slice(&40i32.to_be_bytes());
    assert_ne!(good.produce(topic, 0, lying).error, ErrorCode::None);
    // Records that are not a batch at all.
    assert_ne!(
        good.produce(topic, 1, BytesMut::from(&b"not a record batch"[..]))
            .error,
        ErrorCode::None
    );

    // Unknown topic id and partition.
    assert_eq!(
        good.produce(TopicId(9999), 0, batch(&["x"])).error,
        ErrorCode::UnknownTopicId
    );
    assert_eq!(
        good.produce(topic, 7, batch(&["x"])).error,
        ErrorCode::UnknownTopicOrPartition
    );

    // An invalid topic name.
    let resp = good
        .call(Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: "../../etc".into(),
                partitions: 1,
                replication_factor: 1,
                configs: vec![],
            }],
            timeout_ms: 1000,
            validate_only: false,
        }))
        .unwrap();
    let Response::CreateTopics(r) = resp else { panic!() };
    assert_eq!(r.topics[0].error, ErrorCode::InvalidTopicException);

    // An unknown API: a request-level error, and the connection stays usable.
    let mut c = RawConn::connect(broker.addr);
    let mut frame = Vec::new();
    let payload = [
        &99u16.to_be_bytes()[..],
        &0u16.to_be_bytes(),
        &77u32.to_be_bytes(),
        &[0u8],
    ]
    .concat();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    c.send_raw(&frame).unwrap();
    let (corr, resp) = c.read_response(ApiKey::ApiVersions).expect("an answer");
    assert_eq!(corr, 77);
    assert_eq!(resp.unwrap_err().0, ErrorCode::InvalidRequest);
    assert!(c.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());

    // An oversized frame: the connection is closed.
    let mut c = RawConn::connect(broker.addr);
    c.send_raw(&(64u32 << 20).to_be_bytes()).unwrap();
    c.send_raw(&[0u8; 1024]).unwrap_or(());
    assert!(c.is_closed_by_peer());

    // A header too short to read: closed.
    let mut c = RawConn::connect(broker.addr);
    c.send_raw(&[0, 0, 0, 3, 0, 1, 0]).unwrap();
    assert!(c.is_closed_by_peer());

    // Garbage of every kind, and a frame cut off mid-way by a vanishing client.
    for seed in 0..50u32 {
        let mut c = RawConn::connect(broker.addr);
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        let junk: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = c.send_raw(&junk);
    }
    {
        let mut c = RawConn::connect(broker.addr);
        c.send_raw(&[0, 0, 1, 0, 0, 4]).unwrap();
    }

    // The broker is alive, serves a new client, and nothing stored changed.
    assert!(broker.is_running());
    let mut fresh = RawConn::connect(broker.addr);
    assert_eq!(fetch_values(&mut fresh, topic, 0), vec!["a", "b"]);
    assert_eq!(fresh.produce(topic, 0, batch(&["c"])).base_offset, 2);
    assert_eq!(fetch_values(&mut good, topic, 0), vec!["a", "b", "c"]);
    assert!(broker.terminate().success());
}
