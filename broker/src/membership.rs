//! This broker as a member of its cluster, on shard 0: the metadata
//! quorum's node is started from the journal, ticked, and the broker
//! registers with the active controller, heartbeats, and asks to be fenced
//! as it stops (Kafka's BrokerRegistration and BrokerHeartbeat, KIP-631).
//!
//! With no `--controllers` the quorum is of one: this broker is its own
//! controller. With them, the brokers listed are voters and any other is
//! an observer that follows the committed image (MetadataFetch): raft
//! messages travel between the voters on their own ports ([`crate::peer`]
//! sends, [`crate::peer_api`] answers), and a broker that is not the active
//! controller registers, heartbeats and sends its leaders' ISR changes
//! (AlterPartition) to the broker that is.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use borges_meta::controller::{AlterIsr, ControllerConfig, Heartbeat, ImportedTopic, NewTopic, Registration};
use borges_meta::seams::SplitMix64;
use borges_meta::{NodeId, TopicId};
use borges_net::protocol::{
    AlterPartitionRequest, AlterPartitionResponse, AlterPartitionResult, BrokerHeartbeatRequest,
    BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRegistrationResponse, ErrorCode, LogDirId,
    Request, Response,
};
use borges_net::types::BrokerEpoch;

use crate::peer::{call_once, PeerConn, PeerTransport, CALL_TIMEOUT};
use crate::quorum_host::{dir_id, random_u128, DecideError, NoPeers, QuorumHost, Transport};
use crate::server::StopFlag;
use crate::shard::Shard;
use crate::topics::Topics;

/// How often shard 0 hands the shards a committed image that moved
/// without a topic change (fencing, elections).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);
/// How long a metadata decision may take to commit.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the quorum node is ticked.
const TICK: Duration = Duration::from_millis(50);
/// How long the active controller of a cluster waits for every voter
/// before it creates `__consumer_offsets` on the brokers it has.
const OFFSETS_TOPIC_GRACE: Duration = Duration::from_secs(30);
/// How long a stopping broker asks for a controlled shutdown with no
/// controller answering before it stops anyway.
const NO_CONTROLLER_GIVE_UP: Duration = Duration::from_secs(3);
/// How long a registered broker heartbeats often to be unfenced before it
/// goes on starting anyway (fenced, it leads nothing).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registration that failed waits before it is tried again.
const RETRY: Duration = Duration::from_millis(200);

/// Opens the quorum node, waits until a controller is active, and
/// registers this broker. Shard 0, before the broker reports that it
/// listens. Gives up only when the broker is stopped.
pub async fn start(shard: &Rc<Shard>, stop: &StopFlag) -> Result<(), String> {
    assert_eq!(shard.id, 0, "the quorum node runs on shard 0");
    let config = &shard.config;
    let me = NodeId(config.node_id);
    let controller = ControllerConfig {
        default_partitions: config.default_partitions,
        session_timeout_ms: u64::try_from(config.broker_session_timeout.as_millis()).unwrap_or(u64::MAX),
        max_replication_factor: borges_meta::record::MAX_REPLICAS,
        default_replication_factor: config.default_replication_factor,
        ..ControllerConfig::default()
    };
    let voters: Vec<NodeId> = config.controllers.iter().map(|v| NodeId(v.node)).collect();
    let voter = voters.is_empty() || voters.contains(&me);
    let host = if voter {
        let transport: Box<dyn Transport> = if voters.is_empty() {
            Box::new(NoPeers)
        } else {
            Box::new(PeerTransport::start(
                me,
                &config.controllers,
                config.max_frame_bytes,
            ))
        };
        QuorumHost::open(
            &config.data_dirs[0],
            me,
            &voters,
            controller,
            transport,
            Rc::new(crate::clock::SystemClock),
        )
        .map_err(|e| e.to_string())?
    } else {
        QuorumHost::observer(&voters, Rc::new(crate::clock::SystemClock))
    };
    let host = Rc::new(host);
    if shard.quorum.set(host.clone()).is_err() {
        return Err("the metadata quorum was started twice".into());
    }
    if !voter {
        glommio::spawn_local(follow(shard.clone(), host.clone())).detach();
    }
    let ticker = host.clone();
    let stopping = stop.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(TICK).await;
            ticker.tick();
            // A metadata journal that cannot be written stops the broker
            // (KRaft exits likewise): a member that can no longer persist
            // would otherwise stay registered and alive with a frozen image.
            if let Some(e) = ticker.failed() {
                tracing::error!(error = %e, "the metadata journal failed; stopping the broker");
                stopping.store(true, Ordering::SeqCst);
                return;
            }
        }
    })
    .detach();
    let mut log_dirs = Vec::new();
    for dir in &config.data_dirs {
        let fresh = random_u128(dir.as_os_str().as_encoded_bytes());
        log_dirs.push(LogDirId(
            dir_id(dir, fresh).map_err(|e| format!("{}: directory id: {e}", dir.display()))?,
        ));
    }
    let registration = BrokerRegistrationRequest {
        node: me.0,
        incarnation: random_u128(b"incarnation"),
        address: config.advertised_addr().to_string(),
        rack: None,
        shards: u16::try_from(shard.count).unwrap_or(u16::MAX),
        log_dirs,
    };
    // Until a controller is active and takes the registration.
    let began = std::time::Instant::now();
    let mut last_said = began;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err("stopped before the broker joined its cluster".into());
        }
        if let Some(e) = host.failed() {
            return Err(format!("the metadata journal failed: {e}"));
        }
        match register(shard, &host, &registration).await {
            Ok(()) => break,
            Err(e) => {
                if matches!(
                    e,
                    DecideError::Remote {
                        code: ErrorCode::DuplicateBrokerRegistration,
                        ..
                    }
                ) || matches!(
                    e,
                    DecideError::Refused(borges_meta::controller::ControllerError::DuplicateBroker { .. })
                ) && began.elapsed() > config.broker_session_timeout * 2
                {
                    // Another live broker holds this node id. (A restart
                    // with new data directories is refused too until the old
                    // session expires: hence the wait before giving up.)
                    return Err(format!("broker registration: {e}"));
                }
                if last_said.elapsed() >= Duration::from_secs(5) {
                    last_said = std::time::Instant::now();
                    tracing::warn!(error = %e, waited_s = began.elapsed().as_secs(), "waiting for an active controller to register with");
                }
            }
        }
        glommio::timer::sleep(RETRY).await;
    }
    adopt_topics(shard, &host).await?;
    let s = shard.clone();
    let interval = config.broker_heartbeat_interval;
    let started = std::time::Instant::now();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            if s.stopping.get() {
                return;
            }
            if let Err(e) = heartbeat(&s, &host, false).await {
                tracing::warn!(error = %e, "broker heartbeat failed");
                if matches!(
                    e.code(),
                    ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered
                ) && s.broker_epoch.get().is_some()
                {
                    if let Err(e) = register(&s, &host, &registration).await {
                        tracing::warn!(error = %e, "broker registration failed");
                    }
                }
            }
            // The active controller makes the internal topic of consumer
            // groups once every voter is alive to take a share of it, or
            // after a grace period with the brokers there are.
            let every_voter = {
                let image = host.image();
                s.config
                    .controllers
                    .iter()
                    .all(|v| image.is_eligible(NodeId(v.node)))
            };
            if host.is_active()
                && (every_voter || started.elapsed() > OFFSETS_TOPIC_GRACE)
                && host.image().topic_by_name(crate::group::OFFSETS_TOPIC).is_none()
            {
                if let Err(e) = create_offsets_topic(&s, &host).await {
                    tracing::warn!(error = %e, "creating the offsets topic failed");
                }
            }
        }
    })
    .detach();
    Ok(())
}

/// How long an observer's MetadataFetch waits for a newer image.
const FOLLOW_WAIT_MS: u32 = 500;

/// An observer follows the committed metadata: it long-polls a voter for
/// images newer than its own (MetadataFetch), staying with one voter while
/// it answers and moving to the next when it does not.
async fn follow(shard: Rc<Shard>, host: Rc<QuorumHost>) {
    let voters = shard.config.controllers.clone();
    let me = shard.config.node_id;
    let mut at = 0usize;
    let mut conn: Option<PeerConn> = None;
    let mut failures = 0u64;
    loop {
        let voter = voters[at % voters.len()];
        if conn.is_none() {
            match PeerConn::connect(voter.addr, shard.config.max_frame_bytes).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 64 == 0 {
                        tracing::info!(voter = %voter, error = %e, "observer: cannot reach a voter");
                    }
                    at += 1;
                    glommio::timer::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let req = Request::MetadataFetch(borges_net::protocol::MetadataFetchRequest {
            node: me,
            applied: host.applied(),
            max_wait_ms: FOLLOW_WAIT_MS,
        });
        let c = conn.as_mut().expect("connected above");
        match c.call(&req, CALL_TIMEOUT).await {
            Ok(Response::MetadataFetch(r)) if r.error == ErrorCode::None => {
                failures = 0;
                let image = match r
                    .image
                    .map(|b| borges_meta::image::MetadataImage::decode_snapshot(&b))
                {
                    None => None,
                    Some(Ok(image)) => Some((image, r.applied)),
                    Some(Err(e)) => {
                        tracing::warn!(voter = %voter, error = %e, "observer: a voter sent an image that does not load");
                        conn = None;
                        at += 1;
                        continue;
                    }
                };
                host.observe(image, NodeId(r.controller));
            }
            other => {
                failures += 1;
                if failures == 1 || failures % 64 == 0 {
                    tracing::info!(voter = %voter, answer = ?other.as_ref().map(|r| r.api_key()), "observer: a voter did not hand out metadata");
                }
                conn = None;
                at += 1;
                glommio::timer::sleep(RETRY).await;
            }
        }
    }
}

/// Asks the active controller, here or on its broker.
async fn to_controller(shard: &Shard, host: &QuorumHost, req: Request) -> Result<Response, DecideError> {
    if host.is_active() {
        return Ok(match req {
            Request::BrokerRegistration(r) => Response::BrokerRegistration(registration(host, &r).await),
            Request::BrokerHeartbeat(r) => Response::BrokerHeartbeat(heartbeat_here(host, &r).await),
            Request::AlterPartition(r) => Response::AlterPartition(alter_partition_here(host, &r).await),
            other => unreachable!("{} is not asked of the controller", other.api_key()),
        });
    }
    let leader = host.leader();
    if leader == NodeId::NONE || leader.0 == shard.config.node_id {
        return Err(DecideError::NotController);
    }
    let Some(voter) = shard.config.controllers.iter().find(|v| v.node == leader.0) else {
        return Err(DecideError::Unreachable {
            node: leader.0,
            error: "not among the configured controllers".into(),
        });
    };
    // A heartbeat stuck on a controller that stopped answering (a paused
    // process) must not outlast this broker's own session: the next
    // heartbeat goes to whichever controller is active by then.
    let timeout = match req {
        Request::BrokerHeartbeat(_) => {
            (shard.config.broker_session_timeout / 3).clamp(Duration::from_millis(200), CALL_TIMEOUT)
        }
        _ => CALL_TIMEOUT,
    };
    call_once(voter.addr, &req, shard.config.max_frame_bytes, timeout)
        .await
        .map_err(|e| DecideError::Unreachable {
            node: leader.0,
            error: e.to_string(),
        })
}

fn remote(code: ErrorCode, message: Option<String>) -> Result<(), DecideError> {
    if code == ErrorCode::None {
        Ok(())
    } else {
        Err(DecideError::Remote {
            code,
            message: message.unwrap_or_default(),
        })
    }
}

/// Decides a registration on the active controller (this node): the
/// answer a peer gets, or this broker itself.
pub async fn registration(host: &QuorumHost, r: &BrokerRegistrationRequest) -> BrokerRegistrationResponse {
    let reg = Registration {
        node: NodeId(r.node),
        incarnation: r.incarnation,
        address: r.address.clone(),
        rack: r.rack.clone(),
        shards: r.shards,
        log_dirs: r.log_dirs.iter().map(|d| d.0).collect(),
    };
    match host.decide(DECIDE_TIMEOUT, |c, now| c.register(&reg, now)).await {
        Ok(epoch) => BrokerRegistrationResponse {
            error: ErrorCode::None,
            message: None,
            epoch,
            controller: host.leader().0,
        },
        Err(e) => BrokerRegistrationResponse {
            error: e.code(),
            message: Some(e.to_string()),
            epoch: BrokerEpoch(-1),
            controller: host.leader().0,
        },
    }
}

/// Decides a heartbeat on the active controller (this node).
pub async fn heartbeat_here(host: &QuorumHost, r: &BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
    let hb = Heartbeat {
        node: NodeId(r.node),
        epoch: r.epoch,
        metadata_offset: r.metadata_offset,
        want_fence: r.want_fence,
        want_shutdown: r.want_shutdown,
    };
    match host.decide(DECIDE_TIMEOUT, |c, now| c.heartbeat(&hb, now)).await {
        Ok(reply) => BrokerHeartbeatResponse {
            error: ErrorCode::None,
            message: None,
            controller: host.leader().0,
            fenced: reply.fenced,
            shutting_down: reply.shutting_down,
            should_shut_down: reply.should_shut_down,
        },
        Err(e) => BrokerHeartbeatResponse {
            error: e.code(),
            message: Some(e.to_string()),
            controller: host.leader().0,
            ..BrokerHeartbeatResponse::default()
        },
    }
}

/// Sends ISR changes that leaders on this broker's shards ask for to the
/// active controller (here or on its broker), with this broker's epoch.
pub async fn alter_partition(shard: &Shard, mut req: AlterPartitionRequest) -> AlterPartitionResponse {
    let refused = |code: ErrorCode, message: String| AlterPartitionResponse {
        error: code,
        message: Some(message),
        partitions: Vec::new(),
    };
    let Some(host) = shard.quorum.get() else {
        return refused(
            ErrorCode::NotController,
            "the metadata quorum has not started".into(),
        );
    };
    let Some(epoch) = shard.broker_epoch.get() else {
        return refused(
            ErrorCode::BrokerIdNotRegistered,
            "this broker is not registered".into(),
        );
    };
    req.node = shard.config.node_id;
    req.broker_epoch = epoch;
    match to_controller(shard, host, Request::AlterPartition(req)).await {
        Ok(Response::AlterPartition(r)) => r,
        Ok(other) => refused(
            ErrorCode::UnknownServerError,
            format!("the controller answered {} to AlterPartition", other.api_key()),
        ),
        Err(e) => refused(e.code(), e.to_string()),
    }
}

/// Decides ISR changes on the active controller (this node), each a
/// compare-and-set on the epochs its leader saw.
pub async fn alter_partition_here(host: &QuorumHost, r: &AlterPartitionRequest) -> AlterPartitionResponse {
    let mut partitions = Vec::with_capacity(r.partitions.len());
    for item in &r.partitions {
        let req = AlterIsr {
            node: NodeId(r.node),
            broker_epoch: r.broker_epoch,
            topic: TopicId(item.topic_id.0),
            partition: item.partition,
            leader_epoch: borges_meta::LeaderEpoch(item.leader_epoch),
            partition_epoch: borges_meta::PartitionEpoch(item.partition_epoch),
            isr: item.isr.iter().map(|&n| NodeId(n)).collect(),
        };
        let result = host.decide(DECIDE_TIMEOUT, |c, _| c.alter_isr(&req)).await;
        partitions.push(match result {
            Ok(state) => AlterPartitionResult {
                topic_id: item.topic_id,
                partition: item.partition,
                error: ErrorCode::None,
                message: None,
                leader: state.leader.0,
                leader_epoch: state.leader_epoch.0,
                partition_epoch: state.partition_epoch.0,
                isr: state.isr.iter().map(|n| n.0).collect(),
            },
            Err(DecideError::NotController) => {
                return AlterPartitionResponse {
                    error: ErrorCode::NotController,
                    message: Some(format!("the active controller is node {}", host.leader().0)),
                    partitions: Vec::new(),
                }
            }
            Err(e) => AlterPartitionResult {
                topic_id: item.topic_id,
                partition: item.partition,
                error: e.code(),
                message: Some(e.to_string()),
                leader: -1,
                leader_epoch: -1,
                partition_epoch: -1,
                isr: Vec::new(),
            },
        });
    }
    AlterPartitionResponse {
        error: ErrorCode::None,
        message: None,
        partitions,
    }
}

/// Brings the topics of a single-node data directory into the metadata
/// log (once: `topics.json` is renamed after), and creates the internal
/// topic of consumer groups if the cluster has none.
async fn adopt_topics(shard: &Rc<Shard>, host: &QuorumHost) -> Result<(), String> {
    let home = &shard.config.data_dirs[0];
    let me = NodeId(shard.config.node_id);
    if Topics::has_file(home) {
        let old = Topics::load(home)?;
        // Imported before: every topic of the file is in the image, with its
        // id (an earlier start committed the import and stopped before the
        // rename). Some there and some not, or a cluster that has topics of
        // its own, and the file is not this cluster's to import.
        let (present, clashing) = {
            let image = host.image();
            let present = old
                .topics
                .values()
                .filter(|t| image.topic_by_name(&t.name).is_some_and(|i| i.id.0 == t.id))
                .count();
            let clashing = image
                .topics()
                .any(|i| old.topics.get(&i.name).is_none_or(|t| t.id != i.id.0));
            (present, clashing)
        };
        let imported_before =
            present == old.topics.len() && !old.topics.is_empty() || (old.topics.is_empty() && !clashing);
        if !imported_before && (present > 0 || clashing) {
            return Err(format!(
                "{} holds the topics of a single-node broker, and the cluster's metadata already holds others: it cannot be imported here (move it away to start without its topics)",
                Topics::path(home).display()
            ));
        }
        if !imported_before && !host.is_active() {
            return Err(format!(
                "{} holds the topics of a single-node broker: start it once without --controllers to import them",
                Topics::path(home).display()
            ));
        }
        if !imported_before {
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
    // A cluster of one makes it at once; a larger one once its brokers are
    // there (the heartbeat task).
    if !has_offsets && host.is_active() && shard.config.controllers.len() <= 1 {
        create_offsets_topic(shard, host).await?;
    }
    Ok(())
}

/// Creates the internal topic of consumer groups; the active controller only.
async fn create_offsets_topic(shard: &Shard, host: &QuorumHost) -> Result<(), String> {
    // A cluster replicates the groups' offsets like any topic; a broker
    // alone has no one to copy them to.
    let rf = if shard.config.controllers.len() <= 1 {
        1
    } else {
        shard.config.offsets_topic_replication_factor
    };
    let offsets = NewTopic {
        name: crate::group::OFFSETS_TOPIC.to_string(),
        partitions: shard.config.offsets_topic_partitions as i32,
        replication_factor: i16::try_from(rf).unwrap_or(1),
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
    Ok(())
}

async fn register(
    shard: &Rc<Shard>,
    host: &QuorumHost,
    reg: &BrokerRegistrationRequest,
) -> Result<(), DecideError> {
    let resp = match to_controller(shard, host, Request::BrokerRegistration(reg.clone())).await? {
        Response::BrokerRegistration(r) => r,
        other => {
            return Err(DecideError::Unreachable {
                node: host.leader().0,
                error: format!("answered {} to a registration", other.api_key()),
            })
        }
    };
    remote(resp.error, resp.message)?;
    if shard.stopping.get() {
        // The broker began to stop meanwhile: its epoch is not taken up
        // again, or the periodic heartbeat would unfence it.
        return Ok(());
    }
    shard.broker_epoch.set(Some(resp.epoch));
    tracing::info!(
        node = reg.node,
        epoch = resp.epoch.0,
        controller = resp.controller,
        "broker registered"
    );
    // Unfenced by the first heartbeat that shows this broker has applied
    // the metadata log as far as its registration, which a broker that is
    // not the controller learns of a moment later: heartbeat often until
    // then, so that a broker is alive when it says it listens.
    let began = std::time::Instant::now();
    loop {
        let fenced = heartbeat(shard, host, false).await?;
        if !fenced || began.elapsed() > CATCH_UP_TIMEOUT {
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// A heartbeat; whether the broker is still fenced.
async fn heartbeat(shard: &Shard, host: &QuorumHost, want_fence: bool) -> Result<bool, DecideError> {
    let Some(epoch) = shard.broker_epoch.get() else {
        return Ok(true);
    };
    send_heartbeat(shard, host, epoch, want_fence).await
}

async fn send_heartbeat(
    shard: &Shard,
    host: &QuorumHost,
    epoch: BrokerEpoch,
    want_fence: bool,
) -> Result<bool, DecideError> {
    Ok(ask_heartbeat(shard, host, epoch, want_fence, false).await?.fenced)
}

async fn ask_heartbeat(
    shard: &Shard,
    host: &QuorumHost,
    epoch: BrokerEpoch,
    want_fence: bool,
    want_shutdown: bool,
) -> Result<BrokerHeartbeatResponse, DecideError> {
    let hb = BrokerHeartbeatRequest {
        node: shard.config.node_id,
        epoch,
        metadata_offset: host.applied(),
        want_fence,
        want_shutdown,
    };
    let resp = match to_controller(shard, host, Request::BrokerHeartbeat(hb)).await? {
        Response::BrokerHeartbeat(r) => r,
        other => {
            return Err(DecideError::Unreachable {
                node: host.leader().0,
                error: format!("answered {} to a heartbeat", other.api_key()),
            })
        }
    };
    remote(resp.error, resp.message.clone())?;
    tracing::debug!(?resp, "broker heartbeat");
    Ok(resp)
}

/// A broker that stops: a controlled shutdown first (the controller moves
/// the leaderships that can move, and says when nothing more can), then a
/// last heartbeat that asks to be fenced, so that the controller need not
/// wait for its session to expire. Gives up on the shutdown after
/// `controlled.shutdown.timeout.ms`, or sooner when no controller has
/// answered for [`NO_CONTROLLER_GIVE_UP`] (the last voters of a cluster:
/// nothing can move without a quorum).
pub async fn stop(shard: &Rc<Shard>) {
    let Some(host) = shard.quorum.get() else {
        return;
    };
    // The periodic heartbeat stops here (it finds no epoch): one sent after
    // this would end the shutdown or unfence the broker again.
    shard.stopping.set(true);
    let Some(epoch) = shard.broker_epoch.take() else {
        return;
    };
    let began = std::time::Instant::now();
    let mut answered = began;
    loop {
        match ask_heartbeat(shard, host, epoch, false, true).await {
            Ok(r) if r.should_shut_down => {
                tracing::info!(
                    took_ms = began.elapsed().as_millis() as u64,
                    "controlled shutdown complete"
                );
                break;
            }
            Ok(_) => answered = std::time::Instant::now(),
            Err(e) => tracing::debug!(error = %e, "controlled shutdown: the controller did not answer"),
        }
        if began.elapsed() >= shard.config.controlled_shutdown_timeout {
            tracing::warn!("controlled shutdown timed out; stopping anyway");
            break;
        }
        if answered.elapsed() >= NO_CONTROLLER_GIVE_UP {
            tracing::warn!("no controller answers; stopping without a controlled shutdown");
            break;
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = send_heartbeat(shard, host, epoch, true).await {
        tracing::warn!(error = %e, "the stopping broker's last heartbeat failed");
    }
}
