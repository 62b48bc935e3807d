//! This broker as a member of its cluster, on shard 0: the metadata
//! quorum's node is started from the journal, ticked, and the broker
//! registers with the controller, heartbeats, and asks to be fenced as it
//! stops (Kafka's BrokerRegistration and BrokerHeartbeat, KIP-631).
//!
//! Today the quorum is always of one (this broker is its own controller);
//! the peers' transport and `--controllers` come with the rest of cluster
//! part 1 (issue 10).

use std::rc::Rc;
use std::time::Duration;

use borges_meta::controller::{ControllerConfig, Heartbeat, Registration};
use borges_meta::NodeId;

use crate::quorum_host::{dir_id, random_u128, DecideError, NoPeers, QuorumHost};
use crate::shard::Shard;

/// How often the broker heartbeats (`broker.heartbeat.interval.ms`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2000);
/// How long a metadata decision may take to commit.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the quorum node is ticked.
const TICK: Duration = Duration::from_millis(50);

/// Opens the quorum node, waits until a controller is active, and
/// registers this broker. Shard 0, before the broker reports that it
/// listens.
pub async fn start(shard: &Rc<Shard>) -> Result<(), String> {
    assert_eq!(shard.id, 0, "the quorum node runs on shard 0");
    let config = &shard.config;
    let me = NodeId(config.node_id);
    let controller = ControllerConfig {
        default_partitions: config.default_partitions,
        ..ControllerConfig::default()
    };
    let host = QuorumHost::open(
        &config.data_dirs[0],
        me,
        &[],
        controller,
        Box::new(NoPeers),
        Rc::new(crate::clock::SystemClock),
    )
    .map_err(|e| e.to_string())?;
    let host = Rc::new(host);
    if shard.quorum.set(host.clone()).is_err() {
        return Err("the metadata quorum was started twice".into());
    }
    let ticker = host.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(TICK).await;
            ticker.tick();
        }
    })
    .detach();
    if !host.wait_active(Duration::from_secs(10)).await {
        return Err("no metadata controller became active within 10 s".into());
    }
    let mut log_dirs = Vec::new();
    for dir in &config.data_dirs {
        let fresh = random_u128(dir.as_os_str().as_encoded_bytes());
        log_dirs.push(dir_id(dir, fresh).map_err(|e| format!("{}: directory id: {e}", dir.display()))?);
    }
    let registration = Registration {
        node: me,
        incarnation: random_u128(b"incarnation"),
        address: config.advertised_addr().to_string(),
        rack: None,
        shards: u16::try_from(shard.count).unwrap_or(u16::MAX),
        log_dirs,
    };
    register(shard, &host, &registration).await?;
    let s = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(HEARTBEAT_INTERVAL).await;
            if let Err(e) = heartbeat(&s, &host, false).await {
                tracing::warn!(error = %e, "broker heartbeat failed");
                if matches!(
                    e.code(),
                    borges_net::protocol::ErrorCode::StaleBrokerEpoch
                        | borges_net::protocol::ErrorCode::BrokerIdNotRegistered
                ) {
                    if let Err(e) = register(&s, &host, &registration).await {
                        tracing::warn!(error = %e, "broker registration failed");
                    }
                }
            }
        }
    })
    .detach();
    Ok(())
}

async fn register(shard: &Rc<Shard>, host: &QuorumHost, reg: &Registration) -> Result<(), String> {
    let epoch = host
        .decide(DECIDE_TIMEOUT, |c, now| c.register(reg, now))
        .await
        .map_err(|e| format!("broker registration: {e}"))?;
    shard.broker_epoch.set(Some(epoch));
    tracing::info!(node = reg.node.0, epoch = epoch.0, "broker registered");
    // Unfenced by the first heartbeat once this broker has applied the
    // metadata log as far as its registration.
    heartbeat(shard, host, false)
        .await
        .map_err(|e| format!("first broker heartbeat: {e}"))
}

async fn heartbeat(shard: &Shard, host: &QuorumHost, want_fence: bool) -> Result<(), DecideError> {
    let Some(epoch) = shard.broker_epoch.get() else {
        return Ok(());
    };
    let hb = Heartbeat {
        node: NodeId(shard.config.node_id),
        epoch,
        metadata_offset: host.applied(),
        want_fence,
        want_shutdown: false,
    };
    let reply = host
        .decide(DECIDE_TIMEOUT, |c, now| c.heartbeat(&hb, now))
        .await?;
    tracing::debug!(?reply, "broker heartbeat");
    Ok(())
}

/// The last heartbeat of a broker that stops: it asks to be fenced, so that
/// the controller need not wait for its session to expire.
pub async fn stop(shard: &Rc<Shard>) {
    let Some(host) = shard.quorum.get() else {
        return;
    };
    if let Err(e) = heartbeat(shard, host, true).await {
        tracing::warn!(error = %e, "the stopping broker's last heartbeat failed");
    }
}
