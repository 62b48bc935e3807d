//! Starts a real `borges` broker process for integration tests.
//!
//! `Broker::start()` builds the binary once per test process
//! (`cargo build -p borges-broker --bin borges`), picks a free port on
//! 127.0.0.1, starts `borges start` on a fresh temporary data directory with
//! two cores, and waits (at most 20 s) for its `listening on` line. Dropping
//! the `Broker` kills the process (SIGKILL) and removes the directory.
//!
//! Shared by every test binary in `tests/` (`mod common;`), and meant to be
//! copied or reused by whole-system tests elsewhere in the workspace.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a broker may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root: the client crate's parent.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the client crate lives inside the workspace")
        .to_path_buf()
}

/// Builds the broker binary (once per process) and returns its path.
pub fn broker_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let status = Command::new(cargo)
                .args(["build", "-p", "borges-broker", "--bin", "borges"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("building the broker failed: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            let bin = target.join("debug").join("borges");
            if bin.exists() {
                Ok(bin)
            } else {
                Err(format!("{} does not exist after the build", bin.display()))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// A running broker process; killed on drop.
pub struct Broker {
    child: Child,
    addr: String,
    data_dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with two cores on a free port and a fresh data directory.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// `start`, with extra `borges start` arguments.
    pub fn start_with(extra: &[&str]) -> Broker {
        let bin = broker_binary();
        // A port picked free can be taken by someone else before the broker
        // binds it; try a few.
        let mut last_error = String::new();
        for _ in 0..3 {
            let data_dir = tempfile::tempdir().expect("create a temporary data directory");
            let addr = format!("127.0.0.1:{}", free_port());
            match spawn(&bin, &addr, data_dir.path(), extra) {
                Ok(child) => {
                    return Broker {
                        child,
                        addr,
                        data_dir,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("the broker did not start: {last_error}");
    }

    /// `host:port` to bootstrap from.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Kills the process with SIGKILL, then starts it again on the same
    /// address and data directory (a crash and recovery).
    pub fn restart(&mut self) {
        self.kill();
        let bin = broker_binary();
        let mut last_error = String::new();
        // The port was just released; retry briefly in case it lingers.
        for _ in 0..10 {
            match spawn(&bin, &self.addr, self.data_dir.path(), &[]) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the broker did not restart: {last_error}");
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(bin: &Path, addr: &str, data_dir: &Path, extra: &[&str]) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .arg("start")
        .args(["--listen", addr])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--cores", "2"])
        .args(extra)
        .env(
            "BORGES_LOG",
            std::env::var("BORGES_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if !ready && line.contains("listening on") {
                ready = true;
                let _ = tx.send(());
            }
        }
        // Keep draining so the broker never blocks on a full pipe.
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(()) => Ok(child),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            Err(format!(
                "no 'listening on' line within {START_TIMEOUT:?} (exit status {status:?})"
            ))
        }
    }
}
