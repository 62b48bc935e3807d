//! Typed calls between shards.
//!
//! A shard asks another for work with a call. Every kind of call is a type
//! of its own with its own reply type ([`ShardCall::Reply`]), so a caller
//! gets exactly the answer its call produces, and the compiler checks that
//! every kind is served and answered: no match on this path has a
//! catch-all arm. The calls come in three concerns:
//! - data ([`DataCall`]): produce, fetch, list offsets and the fetch waits,
//!   served by the shard that owns the partition;
//! - metadata ([`MetaCall`]): topic changes and other brokers' requests
//!   (raft messages, registrations, heartbeats), served by shard 0, and
//!   the snapshots shard 0 hands to every shard;
//! - groups ([`GroupCall`]): consumer-group requests, served by the shard
//!   that coordinates the group.
//!
//! A call to the shard itself is served in place. Any other travels over
//! the mesh as an [`Envelope::Call`] and its answer comes back as an
//! [`Envelope::Reply`]; meanwhile the caller waits on a one-shot channel
//! parked in the table of its call's kind ([`Pending`]), so the reply is
//! handed over already typed. What crosses cores is owned and `Send`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use borges_net::protocol::{
    AlterConfigsRequest, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, ListedGroup, Request, Response,
};
use borges_storage::Chunk;
use bytes::{Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use super::{PartError, PartKey, Shard};
use crate::topics::Topics;

/// One kind of call: the request that travels, and the answer it gets.
pub trait ShardCall: Sized {
    type Reply;

    /// Serves the call on the shard it was sent to.
    fn serve(self, shard: &Rc<Shard>) -> impl Future<Output = Self::Reply>;

    /// The call as it crosses the mesh.
    fn into_call(self) -> Call;

    /// Where callers wait for this kind's replies.
    fn waiting(pending: &Pending) -> &Slots<Self::Reply>;
}

/// The other shard could not be reached (it is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

// ---- Data: served by the shard that owns the partition. ----

/// Appends records to a partition.
pub struct Produce {
    pub key: PartKey,
    pub records: BytesMut,
    pub acks: i8,
    /// How long an acks=all write may wait for the in-sync replicas.
    pub timeout: Duration,
    /// Decompressed bytes the whole produce may still recompress, shared by
    /// its partitions on every shard.
    pub recompress_budget: Arc<AtomicUsize>,
}

/// Reads a partition from an offset.
pub struct Fetch {
    pub key: PartKey,
    pub offset: i64,
    pub max_bytes: u32,
    /// A follower's fetch: it reads up to the log end, not the high
    /// watermark, and reports the follower's progress to the leader.
    pub replica: Option<ReplicaOf>,
}

/// Who fetches as a follower, and under which leader epoch.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaOf {
    pub node: borges_meta::NodeId,
    pub leader_epoch: i32,
}

/// The end of a leader epoch in a partition's log (OffsetForLeaderEpoch),
/// asked by a replica that believes `current_epoch` is the leader's.
pub struct EpochEnd {
    pub key: PartKey,
    pub current_epoch: i32,
    pub epoch: i32,
}

/// The offset for a timestamp (or the earliest or latest offset).
pub struct ListOffsets {
    pub key: PartKey,
    pub timestamp: i64,
}

/// Answered when any partition's visible end (its log end, for a
/// follower's fetch) passes the offset given with it, after `wait`, or when
/// shard `from` cancels wait `id`.
pub struct WaitForData {
    pub from: usize,
    pub id: u64,
    pub parts: Vec<(PartKey, i64)>,
    pub wait: Duration,
    pub replica: bool,
}

/// Ends wait `id` of shard `from` (its fetch was answered or its
/// connection closed); unknown ids are ignored.
pub struct CancelWait {
    pub from: usize,
    pub id: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// Records read for a fetch, in a form that can cross cores: a file range
/// travels as its own duplicated descriptor.
pub enum SendChunk {
    Memory(Bytes),
    File { file: File, position: u64, len: u64 },
}

impl SendChunk {
    /// The chunks of a read as they cross cores: every file range gets a
    /// descriptor of its own.
    pub fn from_chunks(chunks: Vec<Chunk>) -> std::io::Result<Vec<SendChunk>> {
        chunks
            .into_iter()
            .map(|c| match c {
                Chunk::Memory(b) => Ok(SendChunk::Memory(b)),
                Chunk::File(s) => Ok(SendChunk::File {
                    file: s.file.try_clone()?,
                    position: s.position,
                    len: s.len,
                }),
            })
            .collect()
    }
}

/// One partition's answer to a fetch.
pub struct Fetched<C> {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<C>,
}

impl ShardCall for Produce {
    type Reply = Result<Produced, PartError>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        shard
            .produce_local(
                self.key,
                self.records,
                self.acks,
                self.timeout,
                &self.recompress_budget,
            )
            .await
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::Produce(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.produce
    }
}

impl ShardCall for Fetch {
    type Reply = Fetched<SendChunk>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        let f = shard
            .fetch_local(self.key, self.offset, self.max_bytes, self.replica)
            .await;
        let (error, chunks) = match SendChunk::from_chunks(f.chunks) {
            Ok(chunks) => (f.error, chunks),
            Err(e) => {
                tracing::error!(error = %e, "cannot duplicate a segment descriptor");
                (ErrorCode::KafkaStorageError, Vec::new())
            }
        };
        Fetched {
            error,
            high_watermark: f.high_watermark,
            log_start_offset: f.log_start_offset,
            chunks,
        }
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::Fetch(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.fetch
    }
}

impl ShardCall for ListOffsets {
    /// (timestamp, offset).
    type Reply = Result<(i64, i64), PartError>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        shard.list_offsets_local(self.key, self.timestamp).await
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::ListOffsets(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.list_offsets
    }
}

impl ShardCall for WaitForData {
    /// The wait is over: data came, the time passed, or it was cancelled.
    type Reply = ();

    async fn serve(self, shard: &Rc<Shard>) {
        shard
            .wait_for_data(self.from, self.id, &self.parts, self.wait, self.replica)
            .await
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::WaitForData(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.wait_for_data
    }
}

impl ShardCall for EpochEnd {
    /// (epoch, end offset): the largest epoch at or below the one asked and
    /// where it ends; (-1, -1) when the log has none.
    type Reply = Result<(i32, i64), ErrorCode>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        shard.epoch_end_local(self.key, self.current_epoch, self.epoch)
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::EpochEnd(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.epoch_end
    }
}

impl ShardCall for CancelWait {
    type Reply = ();

    async fn serve(self, shard: &Rc<Shard>) {
        shard.waits.cancel((self.from, self.id))
    }

    fn into_call(self) -> Call {
        Call::Data(DataCall::CancelWait(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.cancel_wait
    }
}

// ---- Metadata: topic changes on shard 0, snapshots to every shard. ----

/// A topic change, for shard 0.
pub enum Admin {
    Create(CreateTopicsRequest),
    Delete(DeleteTopicsRequest),
    Alter(AlterConfigsRequest),
    /// Preferred-leader election.
    Elect(borges_net::protocol::ElectLeadersRequest),
}

/// A request another broker sent (raft messages, a registration, a
/// heartbeat), for shard 0, where the quorum member lives.
pub struct PeerRequest(pub Request);

impl ShardCall for PeerRequest {
    type Reply = Result<Response, (ErrorCode, String)>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        crate::peer_api::answer(shard, self.0).await
    }

    fn into_call(self) -> Call {
        Call::Meta(MetaCall::Peer(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.peer
    }
}

/// ISR changes that leaders on any shard ask of the active controller,
/// for shard 0, which knows where it is.
pub struct AlterIsr(pub borges_net::protocol::AlterPartitionRequest);

impl ShardCall for AlterIsr {
    type Reply = borges_net::protocol::AlterPartitionResponse;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        crate::membership::alter_partition(shard, self.0).await
    }

    fn into_call(self) -> Call {
        Call::Meta(MetaCall::AlterIsr(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.alter_isr
    }
}

/// A new metadata snapshot from shard 0: open, close and reconfigure the
/// partitions to match it.
pub struct Apply(pub Arc<Topics>);

impl ShardCall for Admin {
    type Reply = Response;

    async fn serve(self, shard: &Rc<Shard>) -> Response {
        shard.admin(self).await
    }

    fn into_call(self) -> Call {
        Call::Meta(MetaCall::Admin(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.admin
    }
}

impl ShardCall for Apply {
    type Reply = ();

    async fn serve(self, shard: &Rc<Shard>) {
        shard.apply(self.0).await;
        shard.start_fetchers();
    }

    fn into_call(self) -> Call {
        Call::Meta(MetaCall::Apply(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.apply
    }
}

// ---- Groups: served by the shard that coordinates the group. ----

/// A consumer-group request, for the shard that coordinates its group.
pub struct GroupRequest {
    pub req: Request,
    pub client_id: String,
    pub client_host: String,
}

/// The groups a shard coordinates.
pub struct ListGroups;

impl ShardCall for GroupRequest {
    type Reply = Response;

    async fn serve(self, shard: &Rc<Shard>) -> Response {
        crate::group::handle(shard, self.req, self.client_id, self.client_host).await
    }

    fn into_call(self) -> Call {
        Call::Group(GroupCall::Request(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.group
    }
}

impl ShardCall for ListGroups {
    type Reply = Vec<ListedGroup>;

    async fn serve(self, shard: &Rc<Shard>) -> Self::Reply {
        shard.coordinator.list()
    }

    fn into_call(self) -> Call {
        Call::Group(GroupCall::List(self))
    }

    fn waiting(pending: &Pending) -> &Slots<Self::Reply> {
        &pending.list_groups
    }
}

// ---- What crosses the mesh. ----

pub enum DataCall {
    Produce(Produce),
    Fetch(Fetch),
    ListOffsets(ListOffsets),
    EpochEnd(EpochEnd),
    WaitForData(WaitForData),
    CancelWait(CancelWait),
}

pub enum DataReply {
    Produce(<Produce as ShardCall>::Reply),
    Fetch(<Fetch as ShardCall>::Reply),
    ListOffsets(<ListOffsets as ShardCall>::Reply),
    EpochEnd(<EpochEnd as ShardCall>::Reply),
    WaitForData,
    CancelWait,
}

pub enum MetaCall {
    Admin(Admin),
    Apply(Apply),
    Peer(PeerRequest),
    AlterIsr(AlterIsr),
}

pub enum MetaReply {
    Admin(<Admin as ShardCall>::Reply),
    Apply,
    Peer(<PeerRequest as ShardCall>::Reply),
    AlterIsr(<AlterIsr as ShardCall>::Reply),
}

pub enum GroupCall {
    Request(GroupRequest),
    List(ListGroups),
}

pub enum GroupReply {
    Request(<GroupRequest as ShardCall>::Reply),
    List(<ListGroups as ShardCall>::Reply),
}

/// A call as it crosses the mesh.
pub enum Call {
    Data(DataCall),
    Meta(MetaCall),
    Group(GroupCall),
}

/// A reply as it crosses the mesh; always of its call's kind.
pub enum Reply {
    Data(DataReply),
    Meta(MetaReply),
    Group(GroupReply),
}

/// What travels over the mesh.
pub enum Envelope {
    Call { id: u64, from: usize, call: Call },
    Reply { id: u64, reply: Reply },
}

impl Call {
    /// Serves a call that came over the mesh.
    pub async fn serve(self, shard: &Rc<Shard>) -> Reply {
        match self {
            Call::Data(c) => Reply::Data(c.serve(shard).await),
            Call::Meta(c) => Reply::Meta(c.serve(shard).await),
            Call::Group(c) => Reply::Group(c.serve(shard).await),
        }
    }
}

impl DataCall {
    async fn serve(self, shard: &Rc<Shard>) -> DataReply {
        match self {
            DataCall::Produce(c) => DataReply::Produce(c.serve(shard).await),
            DataCall::Fetch(c) => DataReply::Fetch(c.serve(shard).await),
            DataCall::ListOffsets(c) => DataReply::ListOffsets(c.serve(shard).await),
            DataCall::EpochEnd(c) => DataReply::EpochEnd(c.serve(shard).await),
            DataCall::WaitForData(c) => {
                c.serve(shard).await;
                DataReply::WaitForData
            }
            DataCall::CancelWait(c) => {
                c.serve(shard).await;
                DataReply::CancelWait
            }
        }
    }
}

impl MetaCall {
    async fn serve(self, shard: &Rc<Shard>) -> MetaReply {
        match self {
            MetaCall::Admin(c) => MetaReply::Admin(c.serve(shard).await),
            MetaCall::Peer(c) => MetaReply::Peer(c.serve(shard).await),
            MetaCall::AlterIsr(c) => MetaReply::AlterIsr(c.serve(shard).await),
            MetaCall::Apply(c) => {
                c.serve(shard).await;
                MetaReply::Apply
            }
        }
    }
}

impl GroupCall {
    async fn serve(self, shard: &Rc<Shard>) -> GroupReply {
        match self {
            GroupCall::Request(c) => GroupReply::Request(c.serve(shard).await),
            GroupCall::List(c) => GroupReply::List(c.serve(shard).await),
        }
    }
}

// ---- The callers waiting for replies. ----

/// The callers of one kind waiting for replies from other shards, by call id.
pub struct Slots<T>(RefCell<HashMap<u64, LocalSender<T>>>);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots(RefCell::new(HashMap::new()))
    }
}

impl<T> Slots<T> {
    /// Parks a caller; its reply arrives on the receiver.
    pub fn park(&self, id: u64) -> LocalReceiver<T> {
        let (tx, rx) = local_channel::new_bounded(1);
        let old = self.0.borrow_mut().insert(id, tx);
        debug_assert!(old.is_none(), "call ids are never reused");
        rx
    }

    /// Forgets a caller whose call never left.
    pub fn forget(&self, id: u64) {
        self.0.borrow_mut().remove(&id);
    }

    /// Hands a reply to its caller (gone if it stopped waiting).
    fn answer(&self, id: u64, reply: T) {
        let tx = self.0.borrow_mut().remove(&id);
        if let Some(tx) = tx {
            let _ = tx.try_send(reply);
        }
    }

    /// Callers waiting now.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The calls this shard made of others and waits on, one table per kind;
/// ids are unique over all of them.
#[derive(Default)]
pub struct Pending {
    next_id: Cell<u64>,
    produce: Slots<<Produce as ShardCall>::Reply>,
    fetch: Slots<<Fetch as ShardCall>::Reply>,
    list_offsets: Slots<<ListOffsets as ShardCall>::Reply>,
    epoch_end: Slots<<EpochEnd as ShardCall>::Reply>,
    wait_for_data: Slots<<WaitForData as ShardCall>::Reply>,
    cancel_wait: Slots<<CancelWait as ShardCall>::Reply>,
    admin: Slots<<Admin as ShardCall>::Reply>,
    apply: Slots<<Apply as ShardCall>::Reply>,
    peer: Slots<<PeerRequest as ShardCall>::Reply>,
    alter_isr: Slots<<AlterIsr as ShardCall>::Reply>,
    group: Slots<<GroupRequest as ShardCall>::Reply>,
    list_groups: Slots<<ListGroups as ShardCall>::Reply>,
}

impl Pending {
    /// A fresh call id.
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Hands a reply that came over the mesh to the caller waiting for it.
    pub fn answer(&self, id: u64, reply: Reply) {
        match reply {
            Reply::Data(r) => match r {
                DataReply::Produce(r) => self.produce.answer(id, r),
                DataReply::Fetch(r) => self.fetch.answer(id, r),
                DataReply::ListOffsets(r) => self.list_offsets.answer(id, r),
                DataReply::EpochEnd(r) => self.epoch_end.answer(id, r),
                DataReply::WaitForData => self.wait_for_data.answer(id, ()),
                DataReply::CancelWait => self.cancel_wait.answer(id, ()),
            },
            Reply::Meta(r) => match r {
                MetaReply::Admin(r) => self.admin.answer(id, r),
                MetaReply::Apply => self.apply.answer(id, ()),
                MetaReply::Peer(r) => self.peer.answer(id, r),
                MetaReply::AlterIsr(r) => self.alter_isr.answer(id, r),
            },
            Reply::Group(r) => match r {
                GroupReply::Request(r) => self.group.answer(id, r),
                GroupReply::List(r) => self.list_groups.answer(id, r),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_reaches_the_caller_of_its_kind_only() {
        let pending = Pending::default();
        let a = pending.next_id();
        let b = pending.next_id();
        assert_ne!(a, b);
        let produce = pending.produce.park(a);
        let list = pending.list_groups.park(b);
        let produced = Produced {
            base_offset: 7,
            log_start_offset: 0,
        };
        pending.answer(a, Reply::Data(DataReply::Produce(Ok(produced))));
        assert!(pending.produce.is_empty());
        assert_eq!(pending.list_groups.len(), 1, "another kind's caller was answered");
        let got = futures_lite::future::block_on(produce.recv());
        assert!(matches!(got, Some(Ok(Produced { base_offset: 7, .. }))));
        // A reply for a caller that stopped waiting is dropped.
        drop(list);
        pending.answer(b, Reply::Group(GroupReply::List(Vec::new())));
        assert!(pending.list_groups.is_empty());
    }
}
