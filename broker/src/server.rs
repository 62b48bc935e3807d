//! Starting and stopping a broker: one pinned executor per core, joined by
//! a channel mesh, each listening on the shared port (SO_REUSEPORT).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use borges_storage::{CompactionConfig, DataDirs, SHARD_PREEMPT_TIMER};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

use crate::config::BrokerConfig;
use crate::shard::{Envelope, Shard, ShardProbe};
use crate::topics::Topics;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("data directories: {0}")]
    Storage(#[from] borges_storage::StorageError),
    #[error("topic metadata: {0}")]
    Metadata(String),
    #[error("shard {0}: {1}")]
    Shard(usize, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, String),
    #[error("data directory {0} is in use by another broker")]
    DirInUse(std::path::PathBuf),
    #[error("locking data directory {0}: {1}")]
    Lock(std::path::PathBuf, String),
}

/// Takes an exclusive lock (flock) on `<dir>/.lock` in every data directory.
fn lock_data_dirs(dirs: &[std::path::PathBuf]) -> Result<Vec<std::fs::File>, ServerError> {
    use std::os::fd::AsRawFd;
    let mut locks = Vec::new();
    for d in dirs {
        let path = d.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ServerError::Lock(d.clone(), e.to_string()))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                ServerError::DirInUse(d.clone())
            } else {
                ServerError::Lock(d.clone(), e.to_string())
            });
        }
        locks.push(f);
    }
    Ok(locks)
}

/// Set from a signal handler thread; shards poll it.
pub type StopFlag = Arc<AtomicBool>;

/// Runs a broker until `stop` is set; then every shard stops accepting,
/// closes its partitions cleanly, and this returns.
pub fn run(config: BrokerConfig, stop: StopFlag) -> Result<(), ServerError> {
    config.validate()?;
    DataDirs::new(config.data_dirs.clone())?;
    // One broker per data directory: two writing the same logs would
    // corrupt them. The locks live as long as this call.
    let _locks = lock_data_dirs(&config.data_dirs)?;
    // The shards bind with SO_REUSEPORT, which would let a second broker of
    // the same user share the port silently: refuse to start when something
    // already accepts connections there. (A plain bind would also refuse
    // the port while connections of a killed broker linger in FIN_WAIT.)
    let mut config = config;
    // Port 0: the kernel picks a free port, held (bound, not listening, so
    // no connection is ever queued on it) until every shard listens there.
    let _port_hold = if config.listen.port() == 0 {
        let (fd, port) =
            hold_free_port(config.listen).map_err(|e| ServerError::Listen(config.listen, e.to_string()))?;
        config.listen.set_port(port);
        let mut advertised = config.advertised_addr();
        if advertised.port() == 0 {
            advertised.set_port(port);
            config.advertised = Some(advertised);
        }
        Some(fd)
    } else {
        let mut probe = config.listen;
        if probe.ip().is_unspecified() {
            probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(300)).is_ok() {
            return Err(ServerError::Listen(
                config.listen,
                "another process is already listening there".into(),
            ));
        }
        None
    };
    // A single-node metadata file not yet imported must at least read:
    // a broken one stops the start before anything else happens.
    Topics::load(&config.data_dirs[0]).map_err(ServerError::Metadata)?;
    stop_on_panic(&stop);
    let mesh = MeshBuilder::<Envelope, _>::full(config.cores, 4096);
    let config = Arc::new(config);
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live = crate::watchdog::Liveness::new(config.cores);
    let _watchdog = crate::watchdog::Watchdog::start(live.clone(), config.shard_stall_timeout);
    let mut handles = Vec::new();
    for core in 0..config.cores {
        let mesh = mesh.clone();
        let config = config.clone();
        let stop = stop.clone();
        let ready = ready.clone();
        let live = live.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("shard-{core}"))
            .preempt_timer(SHARD_PREEMPT_TIMER)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(config.blocking_threads_per_shard))
            .spawn(move || async move {
                glommio::spawn_local(crate::watchdog::heartbeat(live, core)).detach();
                if injected_block(core) {
                    glommio::spawn_local(async {
                        glommio::timer::sleep(Duration::from_millis(500)).await;
                        tracing::warn!("fault injection: blocking this shard's thread for 3 s");
                        std::thread::sleep(Duration::from_secs(3));
                    })
                    .detach();
                }
                let r = shard_main((*config).clone(), mesh, stop.clone(), ready).await;
                if r.is_err() {
                    // One shard that cannot start (its port, its mesh) stops them all.
                    stop.store(true, Ordering::SeqCst);
                }
                r
            })
            .map_err(|e| ServerError::Shard(core, e.to_string()))?;
        handles.push(handle);
    }
    let mut first_error = None;
    for (core, h) in handles.into_iter().enumerate() {
        let r = match h.join() {
            Ok(r) => r,
            Err(e) => Err(format!("executor failed: {e}")),
        };
        if let Err(e) = r {
            tracing::error!(core, error = %e, "shard failed");
            // One shard failing (a port in use, say) stops them all.
            stop.store(true, Ordering::SeqCst);
            first_error.get_or_insert(ServerError::Shard(core, e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A panic on any shard thread stops the whole broker: the other shards
/// close their partitions cleanly and the process exits with an error,
/// instead of serving on while every call to the dead shard waits forever.
fn stop_on_panic(stop: &StopFlag) {
    let stop = stop.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        tracing::error!(panic = %info, "a shard panicked; stopping the broker");
        stop.store(true, Ordering::SeqCst);
    }));
}

/// Fault injection for the whole-system tests: `BORGES_FAULT_BLOCK_SHARD=N`
/// blocks shard N's thread for 3 s soon after the start, as a task that
/// blocked would, so that the watchdog's report can be checked.
fn injected_block(shard: usize) -> bool {
    std::env::var("BORGES_FAULT_BLOCK_SHARD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(shard)
}

/// Fault injection for the whole-system tests: `BORGES_FAULT_PANIC_SHARD=N`
/// makes shard N panic once the broker is ready, as a bug would.
fn injected_panic(shard: usize) -> bool {
    std::env::var("BORGES_FAULT_PANIC_SHARD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(shard)
}

/// TCP sockets in LISTEN state on `addr`'s port and address, from
/// `/proc/net/tcp` and `/proc/net/tcp6` (0 if they cannot be read).
fn listeners_on(addr: SocketAddr) -> usize {
    let port = format!("{:04X}", addr.port());
    let ip = match addr {
        SocketAddr::V4(a) => format!("{:08X}", u32::from_ne_bytes(a.ip().octets())),
        SocketAddr::V6(a) => a
            .ip()
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(local), Some(state)) = (f.nth(1), f.nth(1)) else {
                continue;
            };
            if state == "0A" && local.rsplit_once(':') == Some((ip.as_str(), port.as_str())) {
                n += 1;
            }
        }
    }
    n
}

/// Binds (without listening) a SO_REUSEPORT socket to `addr` with port 0;
/// returns it and the port the kernel chose. The shards, which bind with
/// SO_REUSEPORT too, can then listen on that port while nobody else can
/// take it.
fn hold_free_port(addr: SocketAddr) -> std::io::Result<(std::os::fd::OwnedFd, u16)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // address structures are fully initialised before use.
    unsafe {
        let fd = OwnedFd::from_raw_fd(check(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = 0;
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = 0;
                sin6.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        } as libc::socklen_t;
        check(libc::bind(
            raw,
            &storage as *const _ as *const libc::sockaddr,
            len,
        ))?;
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        check(libc::getsockname(
            raw,
            &mut storage as *mut _ as *mut libc::sockaddr,
            &mut len,
        ))?;
        // sin_port and sin6_port sit at the same offset.
        let port = u16::from_be((*(&storage as *const _ as *const libc::sockaddr_in)).sin_port);
        Ok((fd, port))
    }
}

/// The low bits of the shards' ready word: how many shards have started.
const SHARDS_MASK: usize = (1 << 32) - 1;
/// Set in the ready word once every shard has its metadata.
const SERVING: usize = 1 << 32;
/// Set in the ready word once the port is this broker's alone.
const ACCEPTING: usize = 1 << 33;
/// Set in the ready word once shard 0 has finished the broker's
/// controlled shutdown.
const MEMBERSHIP_STOPPED: usize = 1 << 34;
/// Added to the ready word by each shard that serves clients (the high
/// bits count them).
const SERVED_ONE: usize = 1 << 40;

/// Takes connections until the broker stops.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, stop: StopFlag) {
    let id = shard.id;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            wait_stop(&stop).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(shard = id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.connections.get() >= shard.config.max_connections_per_shard {
            ShardProbe::bump(&shard.probe.connections_refused);
            tracing::warn!(shard = id, "connection limit reached; refusing a connection");
            drop(stream);
            continue;
        }
        ShardProbe::bump(&shard.probe.connections_accepted);
        shard.connections.set(shard.connections.get() + 1);
        let s = shard.clone();
        glommio::spawn_local(async move {
            crate::conn::serve(s.clone(), stream).await;
            s.connections.set(s.connections.get() - 1);
        })
        .detach();
    }
    drop(listener);
}

async fn wait_stop(stop: &StopFlag) {
    while !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

async fn shard_main(
    config: BrokerConfig,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    stop: StopFlag,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(), String> {
    let listener =
        TcpListener::bind(config.listen).map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|_| "joining the shard mesh".to_string())?;
    let id = senders.peer_id();
    let count = senders.nr_consumers();
    let dirs = DataDirs::new(config.data_dirs.clone()).map_err(|e| e.to_string())?;
    let shard = Rc::new(Shard::new(id, count, Rc::new(config), dirs, senders));
    for (_, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(env) = stream.recv().await {
                let shard = shard.clone();
                glommio::spawn_local(async move { shard.on_envelope(env).await }).detach();
            }
        })
        .detach();
    }
    spawn_housekeeping(&shard);
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            crate::group::tick(&s);
            s.retry_group_loads();
        }
    })
    .detach();
    if id == 0 {
        // SO_REUSEPORT spreads connections over every listening socket of
        // the port, ours and anyone else's. A process of ours killed just
        // before may leave its listeners behind for a few seconds (io_uring
        // tears down asynchronously), and connections handed to them would
        // never be answered: wait until the port is ours alone. (A second
        // broker started on this address, the same node id twice, is
        // refused here too.)
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let n = listeners_on(shard.config.listen);
            if n <= count || stop.load(Ordering::SeqCst) {
                break;
            }
            if std::time::Instant::now() > deadline {
                tracing::error!(listen = %shard.config.listen, sockets = n, "other sockets keep listening on this port");
                stop.store(true, Ordering::SeqCst);
                break;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        if stop.load(Ordering::SeqCst) {
            return Err(format!(
                "{}: another process listens on this port too",
                shard.config.listen
            ));
        }
        ready.fetch_add(ACCEPTING, Ordering::SeqCst);
    }
    // Connections are taken from here on: the cluster's other brokers
    // reach this one's quorum member through them before it serves
    // clients (which are answered LEADER_NOT_AVAILABLE until then).
    while ready.load(Ordering::SeqCst) & ACCEPTING == 0 {
        if stop.load(Ordering::SeqCst) {
            shard.close_all().await;
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let accepting = glommio::spawn_local(accept_loop(shard.clone(), listener, stop.clone()));
    if id == 0 {
        // The metadata quorum and this broker's registration come first:
        // a broker that cannot join its cluster does not serve.
        if let Err(e) = crate::membership::start(&shard, &stop).await {
            stop.store(true, Ordering::SeqCst);
            ready.fetch_or(MEMBERSHIP_STOPPED, Ordering::SeqCst);
            accepting.await;
            shard.close_all().await;
            return Err(e);
        }
    }
    ready.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        // The broker is ready once every shard has opened its partitions
        // (a connection may land on any shard's socket).
        while ready.load(Ordering::SeqCst) & SHARDS_MASK < count && !stop.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // Every shard opens the partitions of the committed metadata image
        // before any of them serves a client.
        shard.refresh_metadata().await;
        let s = shard.clone();
        let stopping = stop.clone();
        glommio::spawn_local(async move {
            while !stopping.load(Ordering::SeqCst) {
                glommio::timer::sleep(crate::membership::REFRESH_INTERVAL).await;
                s.refresh_metadata().await;
            }
        })
        .detach();
        ready.fetch_add(SERVING, Ordering::SeqCst);
    }
    while ready.load(Ordering::SeqCst) & SERVING == 0 && !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    shard.serving.set(true);
    ready.fetch_add(SERVED_ONE, Ordering::SeqCst);
    if id == 0 {
        // Every shard serves clients before the broker says it listens.
        while ready.load(Ordering::SeqCst) / SERVED_ONE < count && !stop.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        if !stop.load(Ordering::SeqCst) {
            // The line tests and operators wait for.
            println!("borges: listening on {}", shard.config.listen);
            tracing::info!(listen = %shard.config.listen, shards = count, lost_wakeups = glommio::lost_wakeups(), "broker started");
        }
    }
    if injected_panic(id) {
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(200)).await;
            panic!("injected fault: shard {id} panics (BORGES_FAULT_PANIC_SHARD)");
        })
        .detach();
    }
    accepting.await;
    if id == 0 {
        crate::membership::stop(&shard).await;
        ready.fetch_or(MEMBERSHIP_STOPPED, Ordering::SeqCst);
    } else {
        // The partitions serve what is in flight until the controlled
        // shutdown is over (leaderships moved, the broker fenced): closing
        // them first would leave a leader that cannot answer.
        let deadline =
            std::time::Instant::now() + shard.config.controlled_shutdown_timeout + Duration::from_secs(5);
        while ready.load(Ordering::SeqCst) & MEMBERSHIP_STOPPED == 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    shard.close_all().await;
    if let Some(e) = shard.quorum.get().and_then(|h| h.failed()) {
        return Err(format!("the metadata journal failed: {e}"));
    }
    tracing::info!(shard = id, probe = ?shard.probe, "shard stopped");
    Ok(())
}

/// Periodic work on every shard: interval flushes, retention, the log
/// cleaner of compacted topics, and the replication tick.
fn spawn_housekeeping(shard: &Rc<Shard>) {
    glommio::spawn_local(shard.clone().replication_ticker()).detach();
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            for p in s.local_partitions() {
                if let Err(e) = p.log.tick().await {
                    tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "flush failed");
                }
            }
        }
    })
    .detach();
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(s.config.retention_check_interval).await;
            for p in s.local_partitions() {
                match p.log.apply_retention().await {
                    Ok(out) if out.segments_deleted > 0 => {
                        tracing::info!(topic = %p.topic, partition = p.key.1, ?out, "retention deleted segments")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "retention failed"),
                }
            }
        }
    })
    .detach();
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(s.config.cleaner_interval).await;
            for p in s.local_partitions() {
                let cfg = {
                    let settings = p.settings.borrow();
                    if settings.cleanup == crate::topics::CleanupPolicy::Delete {
                        continue;
                    }
                    CompactionConfig {
                        delete_retention_ms: settings.delete_retention_ms,
                        min_compaction_lag_ms: settings.min_compaction_lag_ms,
                        max_bytes_per_sec: Some(s.config.cleaner_max_bytes_per_sec),
                    }
                };
                match p.log.compact(&cfg, None).await {
                    Ok(out) if out.segments_rewritten > 0 => {
                        tracing::info!(topic = %p.topic, partition = p.key.1, ?out, "compacted")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(topic = %p.topic, partition = p.key.1, error = %e, "compaction failed"),
                }
            }
        }
    })
    .detach();
}

/// Blocks SIGTERM and SIGINT in every thread and sets `stop` when one
/// arrives. Call before starting the shards so that they inherit the mask.
pub fn stop_on_signals() -> StopFlag {
    let stop: StopFlag = Arc::new(AtomicBool::new(false));
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) == 0 {
                    tracing::info!(signal = sig, "stopping");
                    flag.store(true, Ordering::SeqCst);
                }
            })
            .expect("spawn the signal thread");
    }
    stop
}
