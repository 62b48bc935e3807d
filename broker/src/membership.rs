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

use borges_meta::controller::{ControllerConfig, Heartbeat, ImportedTopic, NewTopic, Registration};
use borges_meta::seams::SplitMix64;
use borges_meta::{NodeId, TopicId};

use crate::quorum_host::{dir_id, random_u128, DecideError, NoPeers, QuorumHost};
use crate::shard::Shard;
use crate::topics::Topics;

/// How often the broker heartbeats (`broker.heartbeat.interval.ms`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2000);
/// How often shard 0 hands the shards a committed image that moved
/// without a topic change (fencing, elections).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);
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
    adopt_topics(shard, &host).await?;
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

/// Brings the topics of a single-node data directory into the metadata
/// log (once: `topics.json` is renamed after), and creates the internal
/// topic of consumer groups if the cluster has none.
async fn adopt_topics(shard: &Rc<Shard>, host: &QuorumHost) -> Result<(), String> {
    let home = &shard.config.data_dirs[0];
    let me = NodeId(shard.config.node_id);
    if Topics::has_file(home) {
        let imported_before = host.image().topics().next().is_some();
        if !imported_before {
            let old = Topics::load(home)?;
            let topics: Vec<ImportedTopic> = old
                .topics
                .values()
                .map(|t| ImportedTopic {
                    id: TopicId(t.id),
                    name: t.name.clone(),
                    partitions: t.partitions,
                    configs: t.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
                .collect();
            host.decide(DECIDE_TIMEOUT, |c, _| {
                c.import_topics(&topics, TopicId(old.next_id), me)
                    .map(|b| ((), b))
            })
            .await
            .map_err(|e| format!("importing {}: {e}", Topics::path(home).display()))?;
            tracing::info!(
                topics = topics.len(),
                "imported the topics of a single-node data directory"
            );
        }
        // Committed (now or by an earlier start that stopped before this).
        Topics::retire_file(home).map_err(|e| format!("{}: {e}", Topics::path(home).display()))?;
    }
    let has_offsets = host.image().topic_by_name(crate::group::OFFSETS_TOPIC).is_some();
    if !has_offsets {
        let offsets = NewTopic {
            name: crate::group::OFFSETS_TOPIC.to_string(),
            partitions: shard.config.offsets_topic_partitions as i32,
            replication_factor: 1,
            configs: crate::metadata::offsets_topic_configs(),
        };
        let mut rng = SplitMix64::new(random_u128(b"offsets") as u64);
        let results = host
            .decide(DECIDE_TIMEOUT, |c, _| {
                c.create_topics(std::slice::from_ref(&offsets), false, &mut rng)
            })
            .await
            .map_err(|e| format!("creating {}: {e}", crate::group::OFFSETS_TOPIC))?;
        if let Some(Err(e)) = results.into_iter().next() {
            return Err(format!("creating {}: {e}", crate::group::OFFSETS_TOPIC));
        }
    }
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
    send_heartbeat(shard, host, epoch, want_fence).await
}

async fn send_heartbeat(
    shard: &Shard,
    host: &QuorumHost,
    epoch: borges_net::types::BrokerEpoch,
    want_fence: bool,
) -> Result<(), DecideError> {
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
    // The periodic heartbeat stops here (it finds no epoch): one sent after
    // this would unfence the broker again.
    let Some(epoch) = shard.broker_epoch.take() else {
        return;
    };
    if let Err(e) = send_heartbeat(shard, host, epoch, true).await {
        tracing::warn!(error = %e, "the stopping broker's last heartbeat failed");
    }
}
