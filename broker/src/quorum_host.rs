//! Shard 0's adapter around the metadata quorum: the thin glue between the
//! pure `borges_meta::quorum::MetadataNode` and the world.
//!
//! The node decides; this adapter only carries out what it asks for, in
//! the order it asks:
//! - every `Write` goes to the raft journal (appended and fdatasynced)
//!   before its messages are sent and before `persisted` is reported;
//! - messages for peers go to a [`Transport`];
//! - time comes from a [`Clock`], turned into monotonic milliseconds.
//!
//! A journal write that fails stops the node for good (KRaft exits on a
//! metadata log write error): nothing can be reported durable any more, so
//! it neither ticks, steps nor decides again, and every caller gets
//! [`DecideError::Failed`].
//!
//! Raft ids are node ids plus one: raft reserves 0 for "none", and the
//! broker's default node id is 0.

use std::cell::{Cell, Ref, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use borges_meta::controller::{Controller, ControllerConfig, ControllerError};
use borges_meta::image::MetadataImage;
use borges_meta::quorum::log::Write;
use borges_meta::quorum::{MetadataNode, Outcome, QuorumConfig, StartError, StepError};
use borges_meta::record::RecordBatch;
use borges_meta::NodeId;
use borges_net::protocol::ErrorCode;

use crate::clock::Clock;
use crate::notify::{changed_any, Notify};
use crate::raft_journal::{RaftJournal, RaftJournalError};

/// Compact the journal once it is larger than this, or than twice what it
/// held after the last compaction if that is more: a state past this size
/// alone is not rewritten on every write.
const JOURNAL_COMPACT_BYTES: u64 = 64 << 20;

/// The raft id of a node.
pub fn raft_id(node: NodeId) -> u64 {
    u64::try_from(node.0).expect("node ids are not negative") + 1
}

/// The node of a raft id (0: none).
pub fn node_of(raft: u64) -> NodeId {
    if raft == 0 {
        NodeId::NONE
    } else {
        NodeId(i32::try_from(raft - 1).unwrap_or(i32::MAX))
    }
}

/// Carries raft messages to peers. Delivery is best effort: raft resends.
pub trait Transport {
    fn send(&self, to: NodeId, bytes: Vec<u8>);
}

/// The transport of a quorum of one: there is no one to send to.
#[derive(Debug, Default)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, to: NodeId, _bytes: Vec<u8>) {
        tracing::warn!(to = %to.0, "a raft message for a peer in a quorum of one was dropped");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumHostError {
    #[error(transparent)]
    Journal(#[from] RaftJournalError),
    #[error("metadata quorum: {0}")]
    Start(#[from] StartError),
    #[error("metadata quorum: node {node} is not a voter and no voters are listed")]
    NoVoters { node: i32 },
    #[error(
        "metadata quorum: the raft journal was written by a quorum of voters {journal:?}, but --controllers names {configured:?}; voters cannot be changed by restarting with other settings"
    )]
    VotersChanged { journal: Vec<i32>, configured: Vec<i32> },
}

/// Why a decision was not made, or may not have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("this broker is not the active controller")]
    NotController,
    #[error(transparent)]
    Refused(#[from] ControllerError),
    #[error("controller leadership moved before the change was committed; it may or may not apply")]
    Unknown,
    #[error("the change was not committed within {0:?}")]
    Timeout(Duration),
    #[error("the metadata journal failed: {0}")]
    Failed(String),
    /// The active controller, on another broker, answered with an error.
    #[error("the controller refused: {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    /// The active controller, on another broker, could not be asked.
    #[error("the controller on node {node} could not be reached: {error}")]
    Unreachable { node: i32, error: String },
}

impl DecideError {
    /// The code a client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecideError::NotController | DecideError::Unknown => ErrorCode::NotController,
            DecideError::Refused(ControllerError::NotActive) => ErrorCode::NotController,
            DecideError::Refused(e) => e.code(),
            DecideError::Timeout(_) => ErrorCode::RequestTimedOut,
            DecideError::Failed(_) => ErrorCode::KafkaStorageError,
            DecideError::Remote { code, .. } => *code,
            DecideError::Unreachable { .. } => ErrorCode::NotController,
        }
    }
}

/// The metadata quorum node of this broker, on shard 0.
pub struct QuorumHost {
    /// The quorum member of a voter; `None` on an observer, which follows
    /// the committed image a voter hands it (`observed`).
    member: Option<Member>,
    observed: RefCell<Observed>,
    clock: Rc<dyn Clock>,
    origin: Instant,
    /// Bumped whenever the applied index or the role may have changed.
    changed: Notify,
    failed: RefCell<Option<String>>,
    voters: Vec<NodeId>,
}

/// A voter's part: its raft node, journal and transport.
struct Member {
    node: RefCell<MetadataNode>,
    journal: RefCell<RaftJournal>,
    transport: Box<dyn Transport>,
    /// The journal is compacted by this host, not by its own threshold:
    /// once it is longer than `compact_at`, which is `compact_bytes` or
    /// twice its length after the last compaction, whichever is more.
    compact_bytes: u64,
    compact_at: Cell<u64>,
}

/// What an observer knows: the last committed image a voter sent it.
#[derive(Default)]
struct Observed {
    image: MetadataImage,
    applied: u64,
    leader: NodeId,
}

impl QuorumHost {
    /// Opens the journal under `meta_home` and starts the node from it.
    /// `voters` are the controllers' node ids; empty means a quorum of one,
    /// this node.
    pub fn open(
        meta_home: &Path,
        node: NodeId,
        voters: &[NodeId],
        controller: ControllerConfig,
        transport: Box<dyn Transport>,
        clock: Rc<dyn Clock>,
    ) -> Result<QuorumHost, QuorumHostError> {
        Self::open_with(
            meta_home,
            node,
            voters,
            controller,
            transport,
            clock,
            JOURNAL_COMPACT_BYTES,
        )
    }

    /// [`QuorumHost::open`], compacting the journal from `compact_bytes`.
    fn open_with(
        meta_home: &Path,
        node: NodeId,
        voters: &[NodeId],
        controller: ControllerConfig,
        transport: Box<dyn Transport>,
        clock: Rc<dyn Clock>,
        compact_bytes: u64,
    ) -> Result<QuorumHost, QuorumHostError> {
        let voters: Vec<u64> = if voters.is_empty() {
            vec![raft_id(node)]
        } else {
            voters.iter().map(|v| raft_id(*v)).collect()
        };
        let (journal, dropped) = RaftJournal::open(meta_home, u64::MAX)?;
        if dropped > 0 {
            tracing::warn!(bytes = dropped, "cut a torn tail off the raft journal");
        }
        // A snapshot in the journal carries the voters it was taken with,
        // and raft would take them over the settings: a journal of a
        // quorum of one reopened as one voter of three would lead alone
        // (and the other two elect a second controller). Refuse instead.
        let stored = journal.stored();
        if stored.snapshot.get_metadata().index > 0 {
            let mut had: Vec<u64> = stored.snapshot.get_metadata().get_conf_state().voters.clone();
            let mut want = voters.clone();
            had.sort_unstable();
            want.sort_unstable();
            if had != want {
                return Err(QuorumHostError::VotersChanged {
                    journal: had.into_iter().map(|v| node_of(v).0).collect(),
                    configured: want.into_iter().map(|v| node_of(v).0).collect(),
                });
            }
        }
        let config_voters: Vec<NodeId> = voters.iter().map(|v| node_of(*v)).collect();
        let config = QuorumConfig::new(raft_id(node), voters);
        let solo = config.voters == [config.node];
        let node = MetadataNode::start(config, controller, journal.stored())?;
        let compact_at = compact_bytes.max(journal.len().saturating_mul(2));
        let host = QuorumHost {
            member: Some(Member {
                node: RefCell::new(node),
                journal: RefCell::new(journal),
                transport,
                compact_bytes,
                compact_at: Cell::new(compact_at),
            }),
            observed: RefCell::new(Observed::default()),
            origin: clock.now(),
            clock,
            changed: Notify::default(),
            failed: RefCell::new(None),
            voters: config_voters,
        };
        if solo {
            // Nobody to wait for: lead at once.
            host.member().expect("a voter").node.borrow_mut().campaign();
        }
        host.pump();
        Ok(host)
    }

    /// A host for a broker that is not a voter (KRaft's observer): it holds
    /// no raft node and no journal, only the committed image that a voter
    /// last sent it ([`QuorumHost::observe`]); it never decides.
    pub fn observer(voters: &[NodeId], clock: Rc<dyn Clock>) -> QuorumHost {
        QuorumHost {
            member: None,
            observed: RefCell::new(Observed {
                leader: NodeId::NONE,
                ..Observed::default()
            }),
            origin: clock.now(),
            clock,
            changed: Notify::default(),
            failed: RefCell::new(None),
            voters: voters.to_vec(),
        }
    }

    /// An observer takes the committed image at `applied` from a voter
    /// (never an older one than it has).
    pub fn observe(&self, image: Option<(MetadataImage, u64)>, leader: NodeId) {
        debug_assert!(self.member.is_none(), "only an observer is handed images");
        let mut o = self.observed.borrow_mut();
        if let Some((image, applied)) = image {
            if applied >= o.applied {
                o.applied = applied;
                o.image = image;
            }
        }
        o.leader = leader;
        drop(o);
        self.changed.notify();
    }

    /// Whether this broker is a voter of the quorum.
    pub fn is_voter(&self) -> bool {
        self.member.is_some()
    }

    fn member(&self) -> Option<&Member> {
        self.member.as_ref()
    }

    fn now_ms(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// Why the node stopped for good (its journal failed), if it did.
    pub fn failed(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Advances time; call it every few tens of milliseconds.
    pub fn tick(&self) {
        if self.failed().is_some() {
            return;
        }
        let Some(m) = self.member() else {
            return;
        };
        let now = self.now_ms();
        m.node.borrow_mut().tick(now);
        self.pump();
    }

    /// Messages from peer `from` (each must say so), stepped one after another and their output
    /// carried out once (one journal write and fdatasync for the lot):
    /// each message's result, in order.
    pub fn step_all<'a>(
        &self,
        from: NodeId,
        messages: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<(), StepError>> {
        let results = match self.member() {
            None => messages
                .into_iter()
                .map(|_| Err(StepError::Invalid("this broker is not a voter")))
                .collect(),
            Some(_) if self.failed().is_some() => messages.into_iter().map(|_| Ok(())).collect(),
            Some(m) => messages
                .into_iter()
                .map(|b| m.node.borrow_mut().step_from(Some(raft_id(from)), b))
                .collect(),
        };
        self.pump();
        results
    }

    /// A message from a peer.
    pub fn step(&self, bytes: &[u8]) -> Result<(), StepError> {
        if self.failed().is_some() {
            return Ok(());
        }
        let Some(m) = self.member() else {
            return Err(StepError::Invalid("this broker is not a voter"));
        };
        let r = m.node.borrow_mut().step(bytes);
        self.pump();
        r
    }

    /// Carries out the node's output until it has none: writes first (each
    /// durable before its messages and its `persisted`), then messages.
    fn pump(&self) {
        let Some(m) = self.member() else {
            return;
        };
        loop {
            let out = m.node.borrow_mut().take_output();
            if out.send.is_empty() && out.writes.is_empty() {
                break;
            }
            for (to, bytes) in out.send {
                m.transport.send(node_of(to), bytes);
            }
            for (write, after) in out.writes {
                if let Err(e) = Self::append(m, &write) {
                    tracing::error!(error = %e, "metadata journal write failed; this node stops taking part in the quorum");
                    *self.failed.borrow_mut() = Some(e.to_string());
                    self.changed.notify();
                    return;
                }
                for (to, bytes) in after {
                    m.transport.send(node_of(to), bytes);
                }
                if let Some(ready) = write.ready {
                    m.node.borrow_mut().persisted(ready);
                }
            }
        }
        // Waiters re-check their own conditions; a spurious wake is cheap.
        self.changed.notify();
    }

    /// Appends `w` to the journal, and compacts it when it has grown past
    /// `compact_at`.
    fn append(m: &Member, w: &Write) -> Result<(), RaftJournalError> {
        let mut journal = m.journal.borrow_mut();
        journal.append(w)?;
        if journal.len() > m.compact_at.get() {
            journal.compact()?;
            m.compact_at
                .set(m.compact_bytes.max(journal.len().saturating_mul(2)));
        }
        Ok(())
    }

    /// Whether this node is the active controller.
    pub fn is_active(&self) -> bool {
        self.failed().is_none() && self.member().is_some_and(|m| m.node.borrow().is_active())
    }

    /// The controller leader as far as this node knows.
    pub fn leader(&self) -> NodeId {
        match self.member() {
            Some(m) => node_of(m.node.borrow().leader()),
            None => self.observed.borrow().leader,
        }
    }

    /// The controller quorum's voters.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// The committed metadata image.
    pub fn image(&self) -> Ref<'_, MetadataImage> {
        match self.member() {
            Some(m) => Ref::map(m.node.borrow(), |n| n.image()),
            None => Ref::map(self.observed.borrow(), |o| &o.image),
        }
    }

    /// The last metadata log index applied here.
    pub fn applied(&self) -> u64 {
        match self.member() {
            Some(m) => m.node.borrow().applied(),
            None => self.observed.borrow().applied,
        }
    }

    /// Waits until the applied index is beyond `index`, or `timeout`.
    pub async fn wait_applied_beyond(&self, index: u64, timeout: Duration) {
        let deadline = self.clock.now() + timeout;
        loop {
            let notifies = [&self.changed];
            let changed = changed_any(&notifies);
            if self.applied() > index || self.failed().is_some() {
                return;
            }
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                return;
            }
            let nap = left.min(Duration::from_millis(50));
            futures_lite::future::or(changed, async {
                glommio::timer::sleep(nap).await;
            })
            .await;
        }
    }

    /// Waits until this node is the active controller, or `timeout`.
    pub async fn wait_active(&self, timeout: Duration) -> bool {
        let deadline = self.clock.now() + timeout;
        loop {
            let notifies = [&self.changed];
            let changed = changed_any(&notifies);
            if self.is_active() {
                return true;
            }
            if self.failed().is_some() {
                return false;
            }
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                return false;
            }
            // The tick task moves time on; wake at least every tick.
            let nap = left.min(Duration::from_millis(50));
            futures_lite::future::or(changed, async {
                glommio::timer::sleep(nap).await;
            })
            .await;
        }
    }

    /// Runs a controller decision and waits until its records, if any, are
    /// committed and applied here (at most `timeout`).
    pub async fn decide<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Controller, u64) -> Result<(T, RecordBatch), ControllerError>,
    ) -> Result<T, DecideError> {
        if let Some(e) = self.failed() {
            return Err(DecideError::Failed(e));
        }
        let Some(m) = self.member() else {
            return Err(DecideError::NotController);
        };
        let now = self.now_ms();
        let decided = m.node.borrow_mut().decide(|c| f(c, now));
        self.pump();
        let (value, proposal) = match decided {
            Err(ControllerError::NotActive) => return Err(DecideError::NotController),
            Err(e) => return Err(DecideError::Refused(e)),
            Ok(v) => v,
        };
        let Some(proposal) = proposal else {
            return Ok(value);
        };
        let deadline = self.clock.now() + timeout;
        loop {
            let notifies = [&self.changed];
            let changed = changed_any(&notifies);
            if let Some(e) = self.failed() {
                return Err(DecideError::Failed(e));
            }
            match m.node.borrow().outcome(proposal) {
                Outcome::Committed => return Ok(value),
                Outcome::Unknown => return Err(DecideError::Unknown),
                Outcome::Pending => {}
            }
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                return Err(DecideError::Timeout(timeout));
            }
            let nap = left.min(Duration::from_millis(50));
            futures_lite::future::or(changed, async {
                glommio::timer::sleep(nap).await;
            })
            .await;
        }
    }
}

/// Reads this data directory's id, writing a new random one the first
/// time (`<dir>/.dir-id`, 32 hex digits). The controller uses the ids to
/// tell a restart of the same broker (same directories, locked by one
/// process at a time) from a second broker with the same node id.
pub fn dir_id(dir: &Path, fresh: u128) -> std::io::Result<u128> {
    use std::io::Write;
    let path = dir.join(".dir-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => u128::from_str_radix(text.trim(), 16).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a directory id: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(".dir-id.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{fresh:032x}")?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(fresh)
        }
        Err(e) => Err(e),
    }
}

/// A random 128-bit value from the process, the time and `salt` (unique per
/// start, which is all an incarnation or a directory id needs).
pub fn random_u128(salt: &[u8]) -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = Vec::with_capacity(salt.len() + 40);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&(Instant::now().elapsed().as_nanos()).to_le_bytes());
    let stack = 0u8;
    seed.extend_from_slice(&(&stack as *const u8 as usize).to_le_bytes());
    seed.extend_from_slice(salt);
    xxhash_rust::xxh3::xxh3_128(&seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use borges_meta::controller::{Heartbeat, Registration};

    fn registration(node: i32, incarnation: u128, dir: u128) -> Registration {
        Registration {
            node: NodeId(node),
            incarnation,
            address: "127.0.0.1:9092".into(),
            rack: None,
            shards: 1,
            log_dirs: vec![dir],
        }
    }

    fn open(dir: &Path) -> QuorumHost {
        QuorumHost::open(
            dir,
            NodeId(0),
            &[],
            ControllerConfig::default(),
            Box::new(NoPeers),
            Rc::new(crate::clock::SystemClock),
        )
        .expect("open the quorum")
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { f().await })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn an_observer_follows_images_never_backwards_and_never_decides() {
        run(|| async {
            let host = QuorumHost::observer(
                &[NodeId(0), NodeId(1), NodeId(2)],
                Rc::new(crate::clock::SystemClock),
            );
            assert!(!host.is_voter() && !host.is_active());
            assert_eq!((host.applied(), host.leader()), (0, NodeId::NONE));
            let decided = host
                .decide(Duration::from_secs(1), |c, now| {
                    c.register(&registration(5, 1, 1), now)
                })
                .await;
            assert_eq!(decided, Err(DecideError::NotController));
            assert!(
                host.step(b"anything").is_err(),
                "an observer takes no raft messages"
            );
            let mut newer = MetadataImage::default();
            let imported = borges_meta::controller::ImportedTopic {
                id: borges_meta::TopicId(1),
                name: "t".into(),
                partitions: 1,
                configs: Default::default(),
            };
            let mut c = Controller::new(ControllerConfig::default(), MetadataImage::default());
            c.become_active(0);
            let batch = c
                .import_topics(&[imported], borges_meta::TopicId(2), NodeId(0))
                .unwrap();
            assert!(newer.apply_batch(7, &batch).is_empty());
            host.observe(Some((newer, 7)), NodeId(1));
            assert_eq!((host.applied(), host.leader()), (7, NodeId(1)));
            assert!(host.image().topic_by_name("t").is_some());
            // An older image (a voter that lags) is not taken; the leader is.
            host.observe(Some((MetadataImage::default(), 3)), NodeId(2));
            assert_eq!((host.applied(), host.leader()), (7, NodeId(2)));
            assert!(host.image().topic_by_name("t").is_some());
        });
    }

    #[test]
    fn a_journal_of_other_voters_is_refused_rather_than_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            {
                let host = open(&path);
                assert!(host.wait_active(Duration::from_secs(5)).await);
                // Past one snapshot: each registration of a new
                // incarnation is one entry.
                for i in 0..1100u128 {
                    host.decide(Duration::from_secs(5), |c, now| {
                        c.register(&registration(0, 100 + i, 9), now)
                    })
                    .await
                    .expect("register");
                }
                let m = host.member().expect("a voter");
                assert!(
                    m.journal.borrow().stored().snapshot.get_metadata().index > 0,
                    "a snapshot was taken"
                );
            }
            // The same journal as node 0 of voters 0, 1, 2: raft would take
            // the snapshot's voters (node 0 alone) and lead alone.
            let opened = QuorumHost::open(
                &path,
                NodeId(0),
                &[NodeId(0), NodeId(1), NodeId(2)],
                ControllerConfig::default(),
                Box::new(NoPeers),
                Rc::new(crate::clock::SystemClock),
            );
            let Err(e) = opened else {
                panic!("a journal of other voters was opened")
            };
            assert!(matches!(e, QuorumHostError::VotersChanged { .. }), "{e}");
            assert!(
                e.to_string().contains("[0]") && e.to_string().contains("[0, 1, 2]"),
                "{e}"
            );
            // As it was, it opens.
            let host = open(&path);
            assert!(host.wait_active(Duration::from_secs(5)).await);
        });
    }

    #[test]
    fn raft_ids_skip_zero() {
        assert_eq!(raft_id(NodeId(0)), 1);
        assert_eq!(node_of(1), NodeId(0));
        assert_eq!(node_of(0), NodeId::NONE);
        assert_eq!(node_of(raft_id(NodeId(41))), NodeId(41));
    }

    #[test]
    fn a_quorum_of_one_leads_registers_and_keeps_it_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let first_epoch;
            {
                let host = open(&path);
                assert!(
                    host.wait_active(Duration::from_secs(5)).await,
                    "a quorum of one becomes active"
                );
                assert_eq!(host.leader(), NodeId(0));
                first_epoch = host
                    .decide(Duration::from_secs(5), |c, now| {
                        c.register(&registration(0, 7, 9), now)
                    })
                    .await
                    .expect("register");
                assert_eq!(
                    host.image().broker(NodeId(0)).map(|b| b.reg.epoch),
                    Some(first_epoch)
                );
            }
            // Restarted from the journal: the registration is still there,
            // and a new incarnation on the same directory gets a new epoch.
            let host = open(&path);
            assert_eq!(
                host.image().broker(NodeId(0)).map(|b| b.reg.epoch),
                Some(first_epoch),
                "the journal replays the committed registration"
            );
            assert!(host.wait_active(Duration::from_secs(5)).await);
            let second = host
                .decide(Duration::from_secs(5), |c, now| {
                    c.register(&registration(0, 8, 9), now)
                })
                .await
                .expect("re-register");
            assert!(second > first_epoch, "a restart gets a later broker epoch");
            let caught_up = host.applied();
            let reply = host
                .decide(Duration::from_secs(5), |c, now| {
                    c.heartbeat(
                        &Heartbeat {
                            node: NodeId(0),
                            epoch: second,
                            metadata_offset: caught_up,
                            want_fence: false,
                            want_shutdown: false,
                        },
                        now,
                    )
                })
                .await
                .expect("heartbeat");
            assert!(!reply.fenced, "an up-to-date broker is unfenced by its heartbeat");
        });
    }

    #[test]
    fn refusals_are_typed_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let host = open(&path);
            assert!(host.wait_active(Duration::from_secs(5)).await);
            let applied = host.applied();
            let err = host
                .decide(Duration::from_secs(5), |c, now| {
                    c.heartbeat(
                        &Heartbeat {
                            node: NodeId(3),
                            epoch: borges_meta::BrokerEpoch(1),
                            metadata_offset: 0,
                            want_fence: false,
                            want_shutdown: false,
                        },
                        now,
                    )
                })
                .await
                .expect_err("an unregistered broker's heartbeat is refused");
            assert_eq!(err.code(), ErrorCode::BrokerIdNotRegistered);
            assert_eq!(host.applied(), applied, "a refusal writes nothing");
        });
    }

    #[test]
    fn a_state_larger_than_the_compaction_threshold_is_not_rewritten_on_every_write() {
        // Compacting rewrites the whole state; once the state alone is past
        // the threshold, a fixed threshold would rewrite it on every write.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let host = QuorumHost::open_with(
                &path,
                NodeId(0),
                &[],
                ControllerConfig::default(),
                Box::new(NoPeers),
                Rc::new(crate::clock::SystemClock),
                4096,
            )
            .expect("open the quorum");
            assert!(host.wait_active(Duration::from_secs(5)).await);
            let mut lens = Vec::new();
            for i in 0..16u64 {
                let topic = borges_meta::controller::ImportedTopic {
                    id: borges_meta::TopicId(i + 1),
                    name: format!("t{i}"),
                    partitions: 1,
                    configs: vec![("retention.ms".into(), "1".repeat(1000))],
                };
                host.decide(Duration::from_secs(5), |c, _| {
                    Ok(((), c.import_topics(&[topic], borges_meta::TopicId(1), NodeId(0))?))
                })
                .await
                .expect("import");
                let j = host.member().expect("a voter").journal.borrow();
                let state = borges_meta::quorum::journal::encode_state(j.stored()).len() as u64;
                lens.push((j.len(), state));
            }
            let (_, state) = *lens.last().unwrap();
            assert!(state > 3 * 4096, "the state outgrew the threshold: {state} bytes");
            let rewritten = lens
                .iter()
                .filter(|&&(len, state)| state > 4096 && len == state)
                .count();
            assert!(rewritten <= 3, "rewritten on {rewritten} writes: {lens:?}");
            // Still bounded: at most twice the state after a compaction,
            // and the writes since.
            assert!(
                lens.iter().all(|&(len, state)| len <= 2 * state + 4096),
                "{lens:?}"
            );
        });
    }

    #[test]
    fn a_directory_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir_id(dir.path(), 0xabc).unwrap();
        assert_eq!(a, 0xabc);
        assert_eq!(dir_id(dir.path(), 0xdef).unwrap(), 0xabc, "the stored id wins");
        std::fs::write(dir.path().join(".dir-id"), "not hex\n").unwrap();
        assert!(
            dir_id(dir.path(), 1).is_err(),
            "a damaged id is an error, not a new id"
        );
        assert_ne!(random_u128(b"a"), random_u128(b"a"));
    }
}
