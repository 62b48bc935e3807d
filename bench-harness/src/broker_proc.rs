//! Running a real broker for the network benchmarks: the release `borges`
//! binary, one shard pinned to one core, data on the real disk; and a
//! tokio runtime pinned to another core for the load generator.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net_baseline::pin_to_core;

/// The release broker binary beside this benchmark, built if missing or stale.
pub fn broker_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "--release", "-p", "borges", "--bin", "borges"])
        .current_dir(&workspace)
        .status()
        .expect("run cargo build for the broker");
    assert!(status.success(), "building the broker failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("release").join("borges")
}

/// A broker process; killed when dropped.
pub struct BrokerProc {
    pub addr: SocketAddr,
    child: Child,
}

impl BrokerProc {
    /// Starts `bin` with one shard on `core`, data in `dir`, extra flags.
    pub fn start(bin: &Path, dir: &Path, core: usize, extra: &[&str]) -> BrokerProc {
        // Port 0: the broker takes a free port and prints it.
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        // `--cores 1` pins the only shard to core 0; taskset moves the whole
        // process (and so the shard) to the core asked for.
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(core.to_string())
            .arg(bin)
            .args([
                "start",
                "--cores",
                "1",
                "--listen",
                &addr.to_string(),
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env("BORGES_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the broker (is taskset installed?)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.split("listening on ").nth(1) {
                        break a.trim().parse::<SocketAddr>().expect("the broker's address");
                    }
                }
                _ => panic!("the broker exited before listening"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        BrokerProc { addr, child }
    }
}

impl BrokerProc {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the broker process has used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(self.child.id()).unwrap_or_default()
    }
}

/// User plus system CPU time of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-threaded tokio runtime on a thread pinned to `core`; runs `f`
/// there and returns its result.
pub fn run_pinned<F, T>(core: usize, f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let _ = pin_to_core(core);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
    .join()
    .expect("load generator thread")
}
