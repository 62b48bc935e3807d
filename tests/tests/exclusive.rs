//! A second broker cannot take a port or a data directory that a running
//! broker holds: it exits with a clear error instead of sharing them.

use std::process::Command;
use std::time::Duration;

use borges_system_tests::{borges_bin, free_port, Broker};

fn start_second(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(borges_bin())
        .arg("start")
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), err);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the second broker kept running");
}

#[test]
fn a_second_broker_is_refused_the_port_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Broker::start(&dir.path().join("a"), 1, &[]);
    let other = dir.path().join("b");
    let (ok, err) = start_second(&[
        "--listen",
        &first.addr.to_string(),
        "--data-dir",
        other.to_str().unwrap(),
        "--cores",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("cannot listen"), "{err}");
    let port = format!("127.0.0.1:{}", free_port());
    let (ok, err) = start_second(&[
        "--listen",
        &port,
        "--data-dir",
        dir.path().join("a").to_str().unwrap(),
        "--cores",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("in use by another broker"), "{err}");
    assert!(first.is_running());
    assert!(first.terminate().success());
}
