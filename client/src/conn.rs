//! One pipelined TCP connection to one broker.
//!
//! A writer task owns the sending half: it takes encoded frames from a
//! bounded channel and writes as many as are waiting before one flush. A
//! reader task owns the receiving half: it cuts frames off the socket
//! (`FrameReader`), reads each response's correlation id, and hands the
//! response to whoever is waiting for that id, in whatever order the broker
//! answers. A semaphore bounds the requests in flight; each request has a
//! deadline after which its caller gets `Timeout`, and the connection is
//! closed (as Kafka does on `request.timeout.ms`): a broker that does not
//! answer one request in time may never answer any, and a flow black-holed
//! on the way looks exactly like that. TCP keepalive finds dead idle flows.
//!
//! When either task fails, or a request times out, the connection is marked
//! closed and every waiting request fails with `ClientError::Io`; the client
//! opens a new connection on the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borges_net::protocol::{
    decode_response, encode_request, frame_length, peek_correlation_id, ApiKey, DecodeError, Limits, Request,
    RequestHeader, Response, ResponseResult, FRAME_PREFIX_LEN,
};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::ClientError;

/// Most frames the writer writes before one flush.
const WRITE_COALESCE_FRAMES_MAX: usize = 64;
/// Bytes read from the socket at a time when no frame length is known yet.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Frames at least this large are read into a pooled buffer instead.
const LARGE_FRAME_BYTES: usize = 256 << 10;

/// Large buffers kept for reuse per connection.
const POOLED_BUFFERS_MAX: usize = 4;

/// Buffers for large response frames (fetches), reused once every record
/// that points into a frame is dropped. Fresh multi-megabyte allocations
/// cost a page fault per 4 KiB on first touch, which on a virtual machine
/// made receiving a fetch response cost more than decoding it.
#[derive(Default)]
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A buffer of exactly `len` initialized bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = match free.iter().position(|b| b.len() >= len) {
            Some(i) => free.swap_remove(i),
            None => free.pop().unwrap_or_default(),
        };
        drop(free);
        if buf.len() < len {
            // Room for the next frames too, which are rarely exactly this
            // size: growing a buffer later would copy it into fresh memory.
            let room = (len + len / 8).next_multiple_of(64 << 10);
            buf = vec![0; room];
        }
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_BUFFERS_MAX {
            free.push(buf);
        }
    }
}

/// A frame payload held in a pooled buffer; returns it on drop.
struct PooledFrame {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Cuts whole frames off the front of a growing receive buffer.
///
/// Pure (no I/O) so that it is tested on its own: feed it bytes with
/// `extend`, then take frames with `next_frame` until it answers `None`.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    limits: Limits,
}

impl FrameReader {
    pub(crate) fn new(limits: Limits) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            limits,
        }
    }

    /// Appends received bytes (tests; the reader task reads straight into `buf_mut`).
    #[cfg(test)]
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's payload (without the length prefix), `None`
    /// while more bytes are needed, or the error that makes the stream
    /// impossible to resynchronise (zero or oversized length).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match frame_length(&self.buf, &self.limits)? {
            None => Ok(None),
            Some(total) => {
                let mut frame = self.buf.split_to(total);
                frame.advance(FRAME_PREFIX_LEN);
                Ok(Some(frame.freeze()))
            }
        }
    }

    /// The receive buffer, with room reserved for at least the rest of the
    /// frame being received (never more than the frame limit allows).
    fn buf_mut(&mut self) -> &mut BytesMut {
        let want = match self.buf.first_chunk::<FRAME_PREFIX_LEN>() {
            Some(prefix) => {
                let total = u32::from_be_bytes(*prefix) as usize + FRAME_PREFIX_LEN;
                total.saturating_sub(self.buf.len()).max(READ_CHUNK_BYTES)
            }
            None => READ_CHUNK_BYTES,
        };
        self.buf.reserve(want);
        &mut self.buf
    }

    /// The payload length of the frame being received, if it is large
    /// enough for a pooled buffer (and within the frame limit).
    fn large_frame_payload_len(&self) -> Option<usize> {
        let prefix = self.buf.first_chunk::<FRAME_PREFIX_LEN>()?;
        let len = u32::from_be_bytes(*prefix) as usize;
        (len >= LARGE_FRAME_BYTES && len + FRAME_PREFIX_LEN <= self.limits.max_frame_bytes).then_some(len)
    }

    /// Moves the received part of the current frame's payload to the front
    /// of `out`, leaving this reader empty; returns how many bytes moved.
    fn take_partial_payload(&mut self, out: &mut [u8]) -> usize {
        self.buf.advance(FRAME_PREFIX_LEN);
        let n = self.buf.len();
        out[..n].copy_from_slice(&self.buf);
        self.buf.clear();
        n
    }

    /// Whether part of a frame has been received.
    fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A request waiting for its response.
struct Pending {
    api_key: ApiKey,
    reply: oneshot::Sender<Result<ResponseResult, ClientError>>,
    /// Holds a slot of the in-flight bound until the response arrives (or
    /// the caller gives up).
    _permit: OwnedSemaphorePermit,
}

struct State {
    pending: HashMap<u32, Pending>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

/// What the two tasks and the callers share.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is one insert or remove), so a poisoned
        // lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection closed and fails everything waiting on it.
    fn close(&self, why: &str) {
        let pending: Vec<Pending> = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(why.to_string());
            }
            st.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            let _ = p.reply.send(Err(ClientError::connection_closed(why)));
        }
    }

    fn take(&self, correlation_id: u32) -> Option<Pending> {
        self.lock().pending.remove(&correlation_id)
    }
}

/// A frame for the writer, and whom to tell once it is on the wire (only
/// requests that get no response, acks=0 produces, ask).
struct Outbound {
    frame: BytesMut,
    written: Option<oneshot::Sender<Result<(), ClientError>>>,
}

/// Removes a request's pending entry if its caller stops waiting (timeout or
/// a dropped future), so that the entry and its in-flight slot do not leak.
struct PendingGuard<'a> {
    shared: &'a Shared,
    correlation_id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.take(self.correlation_id);
    }
}

/// A connection to one broker, shared by every task of the client.
pub(crate) struct Connection {
    addr: String,
    client_id: String,
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Outbound>,
    in_flight: Arc<Semaphore>,
    next_correlation_id: AtomicU32,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.close("connection dropped");
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).finish()
    }
}

impl Connection {
    /// Connects to `addr` and starts the reader and writer tasks.
    pub(crate) async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        in_flight_max: usize,
        limits: Limits,
    ) -> Result<Connection, ClientError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        stream.set_nodelay(true)?;
        set_keepalive(&stream)?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
            }),
        });
        let in_flight_max = in_flight_max.max(1);
        let (tx, rx) = mpsc::channel(in_flight_max);
        let writer = tokio::spawn(write_loop(write, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(read, shared.clone(), limits));
        tracing::debug!(addr, "connected");
        Ok(Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            shared,
            outbound: tx,
            in_flight: Arc::new(Semaphore::new(in_flight_max)),
            next_correlation_id: AtomicU32::new(1),
            tasks: [writer, reader],
        })
    }

    /// The address this connection was opened to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed (a new one must be opened).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Closes the connection after a request got no answer in time: every
    /// other request waiting on it fails with `Io` (retriable) and the
    /// client reconnects on the next call.
    fn close_timed_out(&self, api_key: ApiKey, timeout: Duration) {
        tracing::debug!(addr = %self.addr, %api_key, ?timeout, "request timed out; closing the connection");
        self.shared
            .close(&format!("a {api_key} request got no answer within {timeout:?}"));
        for t in &self.tasks {
            t.abort();
        }
    }

    fn encode(&self, req: &Request) -> (u32, BytesMut) {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader {
            api_key: req.api_key(),
            api_version: 0,
            correlation_id,
            client_id: self.client_id.clone(),
        };
        let mut frame = BytesMut::new();
        encode_request(&header, req, &mut frame);
        (correlation_id, frame)
    }

    /// Sends `req` and waits for its response, at most `timeout` in all
    /// (waiting for an in-flight slot included). A request-level error comes
    /// back as `ClientError::Broker`.
    pub(crate) async fn request(&self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let deadline = Instant::now() + timeout;
        let permit = timeout_at(deadline, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::connection_closed("connection closed"))?;
        let (correlation_id, frame) = self.encode(req);
        let (reply, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(why) = &st.closed {
                return Err(ClientError::connection_closed(why));
            }
            st.pending.insert(
                correlation_id,
                Pending {
                    api_key: req.api_key(),
                    reply,
                    _permit: permit,
                },
            );
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            correlation_id,
        };
        let out = Outbound { frame, written: None };
        match timeout_at(deadline, self.outbound.send(out)).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(Err(_)) => return Err(ClientError::connection_closed("connection closed")),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, rx).await {
            Err(_) => {
                // As Kafka does on `request.timeout.ms`: a connection that
                // does not answer in time may be dead without either side
                // knowing (a black-holed flow), so it is not used again;
                // the next call opens a new one.
                self.close_timed_out(req.api_key(), timeout);
                Err(ClientError::Timeout)
            }
            Ok(Err(_)) => Err(ClientError::connection_closed("connection closed")),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(Ok(resp)))) => Ok(resp),
            Ok(Ok(Ok(Err((code, message))))) => Err(ClientError::broker(code, Some(message))),
        }
    }

    /// Sends a request that gets no response (a produce with acks=0) and
    /// returns once it has been written to the socket.
    pub(crate) async fn send_oneway(&self, req: &Request, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        // The slot bounds frames queued for the writer; it is released once written.
        let _permit = timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::connection_closed("connection closed"))?;
        if let Some(why) = &self.shared.lock().closed {
            return Err(ClientError::connection_closed(why));
        }
        let (_, frame) = self.encode(req);
        let (written, rx) = oneshot::channel();
        let out = Outbound {
            frame,
            written: Some(written),
        };
        match timeout_at(deadline, self.outbound.send(out)).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(Err(_)) => return Err(ClientError::connection_closed("connection closed")),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, rx).await {
            Err(_) => {
                // Not written within the timeout: the socket does not drain.
                self.close_timed_out(req.api_key(), timeout);
                Err(ClientError::Timeout)
            }
            Ok(Err(_)) => Err(ClientError::connection_closed("connection closed")),
            Ok(Ok(r)) => r,
        }
    }
}

/// TCP keepalive probes after this long without traffic...
const KEEPALIVE_IDLE_SECS: libc::c_int = 30;
/// ...this often...
const KEEPALIVE_INTERVAL_SECS: libc::c_int = 10;
/// ...and the connection is dead after this many unanswered.
const KEEPALIVE_PROBES: libc::c_int = 3;

/// Turns TCP keepalive on, so that an idle connection to a broker that
/// vanished (a host gone, a flow dropped by a firewall) fails within about
/// a minute instead of only on the next request's timeout.
fn set_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open socket for the call's duration and the
        // option value is a live `c_int` of the length passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECS)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES)
}

async fn write_loop(write: OwnedWriteHalf, mut rx: mpsc::Receiver<Outbound>, shared: Arc<Shared>) {
    let mut w = BufWriter::with_capacity(64 << 10, write);
    let mut batch: Vec<Outbound> = Vec::with_capacity(WRITE_COALESCE_FRAMES_MAX);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < WRITE_COALESCE_FRAMES_MAX {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut result = Ok(());
        for o in &batch {
            result = w.write_all(&o.frame).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        match result {
            Ok(()) => {
                for o in batch.drain(..) {
                    if let Some(tx) = o.written {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                let why = format!("write failed: {e}");
                tracing::debug!(error = %e, "connection write failed");
                for o in batch.drain(..) {
                    if let Some(tx) = o.written {
                        let _ = tx.send(Err(ClientError::connection_closed(&why)));
                    }
                }
                shared.close(&why);
                return;
            }
        }
    }
}

async fn read_loop(mut read: OwnedReadHalf, shared: Arc<Shared>, limits: Limits) {
    let mut frames = FrameReader::new(limits);
    let pool = Arc::new(BufferPool::default());
    let why = loop {
        match frames.next_frame() {
            Ok(Some(payload)) => {
                dispatch(&shared, payload, &limits);
                continue;
            }
            Ok(None) => {}
            Err(e) => break format!("unreadable frame from the broker: {e}"),
        }
        if let Some(len) = frames.large_frame_payload_len() {
            // Whatever of the payload has arrived moves over, the rest is
            // read straight into the pooled buffer.
            let mut buf = pool.take(len);
            let have = frames.take_partial_payload(&mut buf);
            if let Err(e) = read.read_exact(&mut buf[have..len]).await {
                break format!("read failed: {e}");
            }
            let frame = PooledFrame {
                buf,
                len,
                pool: pool.clone(),
            };
            dispatch(&shared, Bytes::from_owner(frame), &limits);
            continue;
        }
        let partial = frames.has_partial();
        match read.read_buf(frames.buf_mut()).await {
            Ok(0) if partial => break "the broker closed the connection mid-frame".to_string(),
            Ok(0) => break "the broker closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    tracing::debug!(reason = %why, "connection closed");
    shared.close(&why);
}

/// Hands one response payload to the request waiting for it.
fn dispatch(shared: &Shared, payload: Bytes, limits: &Limits) {
    let Some(correlation_id) = peek_correlation_id(&payload) else {
        tracing::warn!("response too short for a correlation id; dropped");
        return;
    };
    let Some(pending) = shared.take(correlation_id) else {
        // Its caller timed out or went away.
        tracing::debug!(correlation_id, "response for no waiting request; dropped");
        return;
    };
    let result = match decode_response(pending.api_key, payload, limits) {
        Ok((_, r)) => Ok(r),
        Err(e) => Err(ClientError::Protocol(e)),
    };
    let _ = pending.reply.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use borges_net::protocol::{encode_response, MetadataResponse};

    fn frame_of(correlation_id: u32) -> BytesMut {
        let mut out = BytesMut::new();
        encode_response(
            correlation_id,
            &Response::Metadata(MetadataResponse {
                brokers: vec![],
                controller_id: 7,
                topics: vec![],
            }),
            &mut out,
        );
        out
    }

    #[test]
    fn frames_split_at_every_boundary() {
        let mut all = BytesMut::new();
        for id in 1..=3 {
            all.extend_from_slice(&frame_of(id));
        }
        // Feed the bytes in every chunk size; every frame comes out whole, in order.
        for chunk in 1..=all.len() {
            let mut r = FrameReader::new(Limits::default());
            let mut ids = Vec::new();
            for piece in all.chunks(chunk) {
                r.extend(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    ids.push(peek_correlation_id(&f).unwrap());
                    let (_, resp) = decode_response(ApiKey::Metadata, f, &Limits::default()).unwrap();
                    assert!(resp.is_ok());
                }
            }
            assert_eq!(ids, vec![1, 2, 3], "chunk size {chunk}");
            assert!(!r.has_partial());
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_errors() {
        let limits = Limits {
            max_frame_bytes: 16,
            ..Limits::default()
        };
        let mut r = FrameReader::new(limits);
        r.extend(&17u32.to_be_bytes());
        assert!(matches!(r.next_frame(), Err(DecodeError::FrameTooLarge { .. })));
        let mut r = FrameReader::new(limits);
        r.extend(&0u32.to_be_bytes());
        assert_eq!(r.next_frame(), Err(DecodeError::EmptyFrame));
    }

    #[test]
    fn buffer_reserves_the_announced_frame() {
        let mut r = FrameReader::new(Limits::default());
        r.extend(&(1_000_000u32).to_be_bytes());
        assert!(r.buf_mut().capacity() >= 1_000_004);
        assert_eq!(r.next_frame(), Ok(None));
    }
}
