//! A real `borges` broker for the integration tests: the workspace's shared
//! process helper (`borges_system_tests::Broker`), with a temporary data
//! directory that lives as long as the broker and two shards.

#![allow(dead_code)]

use std::path::Path;

/// A running broker on a free 127.0.0.1 port; killed and its data removed on drop.
pub struct Broker {
    inner: borges_system_tests::Broker,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with two cores and a fresh data directory.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// `start`, with extra `borges start` arguments.
    pub fn start_with(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let inner = borges_system_tests::Broker::start(&dir.path().join("data"), 2, extra);
        Broker {
            addr: inner.addr.to_string(),
            inner,
            _dir: dir,
        }
    }

    /// `host:port` to bootstrap from.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// SIGKILL, then start again on the same address and data (a crash and recovery).
    pub fn restart(&mut self) {
        self.inner.restart();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.inner.kill();
    }
}
