//! Broker-to-broker calls, on shard 0: a connection to a peer broker's port
//! that sends one request and reads its answer, and the metadata
//! quorum's [`Transport`] built on it.
//!
//! Raft delivery is best effort (raft resends what is lost), so the
//! transport keeps a bounded queue per peer and one sender task that
//! connects, sends what is queued as one `RaftMessages` request, and on
//! any failure drops the connection (and the messages in flight) and
//! reconnects after a short backoff. A peer that is down costs a bounded
//! queue and a connection attempt per backoff, nothing else.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use borges_meta::NodeId;
use borges_net::protocol::{
    decode_response, encode_request, ApiKey, DecodeError, ErrorCode, Limits, RaftMessage,
    RaftMessagesRequest, Request, RequestHeader, Response, FRAME_PREFIX_LEN,
};
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::config::ControllerVoter;
use crate::notify::{changed_any, Notify};
use crate::quorum_host::Transport;

/// How long a connection attempt to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a peer may take to answer one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Raft messages queued for one peer at most; the oldest go first.
const QUEUE_MAX: usize = 4096;
/// Bytes queued for one peer at most (beyond its newest message).
const QUEUE_BYTES_MAX: usize = 128 << 20;
/// Bytes of raft messages sent in one request at most (one message may be
/// larger: a snapshot goes alone).
const BATCH_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("undecodable answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("answered {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("answered with correlation id {got}, expected {want}")]
    Correlation { got: u32, want: u32 },
    #[error("answered a {got} for a {want} request")]
    WrongApi { got: ApiKey, want: ApiKey },
}

/// One connection to a peer broker; calls go one at a time.
pub struct PeerConn {
    stream: TcpStream,
    next_correlation: u32,
    limits: Limits,
}

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    futures_lite::future::or(f, async {
        glommio::timer::sleep(timeout).await;
        Err(PeerError::Timeout(timeout))
    })
    .await
}

impl PeerConn {
    pub async fn connect(addr: SocketAddr, max_frame_bytes: usize) -> Result<PeerConn, PeerError> {
        let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        Ok(PeerConn {
            stream,
            next_correlation: 0,
            limits: Limits {
                max_frame_bytes,
                ..Limits::default()
            },
        })
    }

    /// Sends `req` and reads its answer (at most `timeout`). A failed call
    /// leaves the connection unusable: drop it.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> Result<Response, PeerError> {
        within(timeout, self.call_inner(req)).await
    }

    async fn call_inner(&mut self, req: &Request) -> Result<Response, PeerError> {
        let want = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader {
            api_key: req.api_key(),
            api_version: 0,
            correlation_id: want,
            client_id: crate::peer_api::PEER_CLIENT_ID.into(),
        };
        let mut out = BytesMut::new();
        encode_request(&header, req, &mut out);
        self.stream.write_all(&out).await?;
        let mut len = [0u8; FRAME_PREFIX_LEN];
        self.stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > self.limits.max_frame_bytes {
            return Err(PeerError::Decode(DecodeError::FrameTooLarge {
                len,
                max: self.limits.max_frame_bytes,
            }));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await?;
        let (got, result) = decode_response(req.api_key(), Bytes::from(payload), &self.limits)?;
        if got != want {
            return Err(PeerError::Correlation { got, want });
        }
        let resp = result.map_err(|(code, message)| PeerError::Refused { code, message })?;
        if resp.api_key() != req.api_key() {
            return Err(PeerError::WrongApi {
                got: resp.api_key(),
                want: req.api_key(),
            });
        }
        Ok(resp)
    }
}

/// One call on a fresh connection, answered within `timeout`.
pub async fn call_once(
    addr: SocketAddr,
    req: &Request,
    max_frame_bytes: usize,
    timeout: Duration,
) -> Result<Response, PeerError> {
    let mut conn = within(CONNECT_TIMEOUT, PeerConn::connect(addr, max_frame_bytes)).await?;
    conn.call(req, timeout).await
}

/// What is queued for one peer.
struct Outbox {
    addr: SocketAddr,
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued: Notify,
    queued_bytes: Cell<usize>,
    dropped: Cell<u64>,
}

/// The metadata quorum's transport to its peers.
pub struct PeerTransport {
    outboxes: HashMap<NodeId, Rc<Outbox>>,
}

impl PeerTransport {
    /// A transport to every voter but `me`, with one sender task each
    /// (spawned on the calling executor; they live as long as it does).
    pub fn start(me: NodeId, voters: &[ControllerVoter], max_frame_bytes: usize) -> PeerTransport {
        let mut outboxes = HashMap::new();
        for v in voters.iter().filter(|v| v.node != me.0) {
            let outbox = Rc::new(Outbox {
                addr: v.addr,
                queue: RefCell::new(VecDeque::new()),
                queued: Notify::default(),
                queued_bytes: Cell::new(0),
                dropped: Cell::new(0),
            });
            outboxes.insert(NodeId(v.node), outbox.clone());
            let peer = NodeId(v.node);
            glommio::spawn_local(send_loop(me, peer, outbox, max_frame_bytes)).detach();
        }
        PeerTransport { outboxes }
    }
}

impl Transport for PeerTransport {
    fn send(&self, to: NodeId, bytes: Vec<u8>) {
        let Some(outbox) = self.outboxes.get(&to) else {
            tracing::warn!(to = %to.0, "a raft message for a node that is not a peer was dropped");
            return;
        };
        let mut queue = outbox.queue.borrow_mut();
        outbox.queued_bytes.set(outbox.queued_bytes.get() + bytes.len());
        queue.push_back(bytes);
        while queue.len() > QUEUE_MAX || (queue.len() > 1 && outbox.queued_bytes.get() > QUEUE_BYTES_MAX) {
            let old = queue.pop_front().expect("not empty");
            outbox.queued_bytes.set(outbox.queued_bytes.get() - old.len());
            outbox.dropped.set(outbox.dropped.get() + 1);
        }
        drop(queue);
        outbox.queued.notify();
    }
}

/// Takes what fits one request off the front of the queue.
fn take_batch(queue: &mut VecDeque<Vec<u8>>) -> Vec<RaftMessage> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(front) = queue.front() {
        if !batch.is_empty() && bytes + front.len() > BATCH_BYTES {
            break;
        }
        bytes += front.len();
        let m = queue.pop_front().expect("front exists");
        batch.push(RaftMessage {
            bytes: Bytes::from(m),
        });
    }
    batch
}

async fn send_loop(me: NodeId, peer: NodeId, outbox: Rc<Outbox>, max_frame_bytes: usize) {
    const BACKOFF_MIN: Duration = Duration::from_millis(50);
    const BACKOFF_MAX: Duration = Duration::from_millis(1000);
    let mut conn: Option<PeerConn> = None;
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    loop {
        loop {
            let notifies = [&outbox.queued];
            let queued = changed_any(&notifies);
            if !outbox.queue.borrow().is_empty() {
                break;
            }
            futures_lite::future::or(queued, async {
                glommio::timer::sleep(Duration::from_millis(250)).await;
            })
            .await;
        }
        if conn.is_none() {
            match within(CONNECT_TIMEOUT, PeerConn::connect(outbox.addr, max_frame_bytes)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    // Once, then every 64th, so a peer that is down for long
                    // does not flood the log.
                    if failures == 1 || failures % 64 == 0 {
                        tracing::info!(peer = %peer.0, addr = %outbox.addr, error = %e, failures, "cannot reach a controller peer");
                    }
                    // What is queued is stale by the next attempt: raft
                    // resends what still matters.
                    outbox.queue.borrow_mut().clear();
                    outbox.queued_bytes.set(0);
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let messages = take_batch(&mut outbox.queue.borrow_mut());
        let taken: usize = messages.iter().map(|m| m.bytes.len()).sum();
        outbox.queued_bytes.set(outbox.queued_bytes.get() - taken);
        let req = Request::RaftMessages(RaftMessagesRequest { from: me.0, messages });
        let c = conn.as_mut().expect("connected above");
        match c.call(&req, CALL_TIMEOUT).await {
            Ok(Response::RaftMessages(r)) => {
                if failures > 0 {
                    tracing::info!(peer = %peer.0, "controller peer reachable again");
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                if r.error != ErrorCode::None || r.refused > 0 {
                    tracing::warn!(peer = %peer.0, error = ?r.error, refused = r.refused, "a controller peer refused raft messages");
                }
            }
            Ok(other) => {
                tracing::warn!(peer = %peer.0, api = %other.api_key(), "a controller peer answered the wrong api");
                conn = None;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 64 == 0 {
                    tracing::info!(peer = %peer.0, error = %e, "sending raft messages failed; reconnecting");
                }
                conn = None;
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_but_a_large_message_goes_alone() {
        let mut q: VecDeque<Vec<u8>> = VecDeque::new();
        q.push_back(vec![0; BATCH_BYTES + 1]);
        q.push_back(vec![1; 10]);
        q.push_back(vec![2; BATCH_BYTES - 10]);
        q.push_back(vec![3; 1]);
        assert_eq!(take_batch(&mut q).len(), 1);
        assert_eq!(take_batch(&mut q).len(), 2);
        assert_eq!(take_batch(&mut q).len(), 1);
        assert!(q.is_empty());
        assert!(take_batch(&mut q).is_empty());
    }
}
