//! One client connection, on the shard that accepted it.
//!
//! A reader task cuts frames off the socket and hands each request to its
//! own task, so a connection may have many requests in flight (responses
//! carry the correlation id and may leave in any order). A writer task owns
//! the sending half and writes whole responses one at a time; records read
//! from segment files go out with sendfile, never through user space.
//!
//! Limits: a frame larger than `max_frame_bytes`, or a header that cannot be
//! read, closes the connection (nothing in it can be trusted); a request
//! that cannot be decoded gets a request-level error and the connection
//! goes on. A frame's permits, from the connection's and the shard's
//! in-flight budgets, are taken as soon as its length prefix is read and
//! before anything is allocated for it, and held until its response is
//! written, so a client that sends faster than it reads stops being read.
//! So is a client whose unwritten responses pass
//! `max_unwritten_bytes_per_connection`; one whose responses make no
//! progress for `write_timeout`, or that sends nothing for
//! `connection_idle_timeout`, is disconnected. When a connection closes,
//! its long polls end at once and its responses are dropped.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use borges_net::protocol::{
    decode_request, encode_error_response, frame_length, Limits, RequestError, FRAME_PREFIX_LEN,
};
use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::handlers::{handle, Held, Outgoing, Piece, RequestCtx};
use crate::notify::{changed_any, Notify};
use crate::shard::{Shard, ShardProbe};

/// Bytes read from the socket at a time into the shared read buffer.
const READ_CHUNK: usize = 64 << 10;
/// Bytes read at a time while no frame is partly read: an idle connection
/// keeps only this much buffer (a large frame gets its own allocation, of
/// its size, once its prefix is known).
const IDLE_READ_CHUNK: usize = 4 << 10;

/// What the tasks of one connection share; lives on the connection's shard.
#[derive(Default)]
pub struct ConnState {
    closed: Cell<bool>,
    /// Bumped when the connection closes: long polls of its requests stop.
    pub on_close: Notify,
    /// Bytes of responses handed to the writer and not yet written.
    unwritten: Cell<usize>,
    /// Bumped when the writer finishes a response.
    written: Notify,
}

impl ConnState {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn close(&self) {
        if !self.closed.replace(true) {
            self.on_close.notify();
            self.written.notify();
        }
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        if self.is_closed() {
            return;
        }
        changed_any(&[&self.on_close]).await
    }
}

/// Serves one connection until the client goes away or breaks a limit.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    // A client that sends nothing for this long is gone; one that stops
    // reading its responses is cut off after the write timeout, so that
    // it cannot hold the shard's budgets.
    let _ = stream.set_read_timeout(Some(shard.config.connection_idle_timeout));
    let _ = stream.set_write_timeout(Some(shard.config.write_timeout));
    let fd = stream.as_raw_fd();
    // sendfile must not block the executor: with O_NONBLOCK it returns
    // EAGAIN when the socket is full, and the writer waits the async way.
    // glommio's own reads and writes already expect a non-blocking socket.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let (reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Outgoing>(256);
    let conn = Rc::new(ConnState::default());
    let writer_task = glommio::spawn_local(write_loop(writer, fd, rx, conn.clone())).detach();
    let host: Rc<str> = stream_host(&peer).into();
    if let Err(e) = read_loop(&shard, reader, tx, host, &conn).await {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
    // Responses still being made are not wanted any more: their long polls
    // end now, and the writer stops, so the socket and this connection's
    // place in the shard's count are given back at once.
    conn.close();
    let _ = writer_task.await;
}

/// The host part of a peer address (`ip:port`).
fn stream_host(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_string())
}

/// Runs `f` unless the connection closes first.
async fn until_closed<T>(conn: &ConnState, f: impl std::future::Future<Output = T>) -> io::Result<T> {
    futures_lite::future::or(async { Ok(f.await) }, async {
        conn.closed().await;
        Err(io::Error::other("connection closed by the broker"))
    })
    .await
}

/// Reads more bytes into `buf[at..]` (which the caller has sized); 0 at
/// the end of the stream. Gives up when the connection closes.
async fn read_into(reader: &mut ReadHalf<TcpStream>, buf: &mut [u8], conn: &ConnState) -> io::Result<usize> {
    futures_lite::future::or(reader.read(buf), async {
        conn.closed().await;
        Err(io::Error::other("connection closed by the broker"))
    })
    .await
}

async fn read_loop(
    shard: &Rc<Shard>,
    mut reader: ReadHalf<TcpStream>,
    tx: LocalSender<Outgoing>,
    host: Rc<str>,
    conn: &Rc<ConnState>,
) -> io::Result<()> {
    let tx = Rc::new(tx);
    let limits = Limits {
        max_frame_bytes: shard.config.max_frame_bytes,
        ..Limits::default()
    };
    let conn_budget = Rc::new(Semaphore::new(
        shard.config.max_inflight_bytes_per_connection as u64,
    ));
    // Requests in flight: small frames may build large responses (a
    // Metadata of every topic), which the unwritten-bytes bound only sees
    // once they are built.
    let requests = Rc::new(Semaphore::new(
        shard.config.max_inflight_requests_per_connection as u64,
    ));
    let read_timeout = shard.config.request_read_timeout;
    let unwritten_max = shard.config.max_unwritten_bytes_per_connection;
    let mut buf = BytesMut::new();
    loop {
        // A client that does not read its responses is not read either.
        while conn.unwritten.get() > unwritten_max && !conn.is_closed() {
            changed_any(&[&conn.written]).await;
        }
        if conn.is_closed() {
            return Ok(());
        }
        // The length prefix first: nothing is allocated for a frame
        // before it is known to be within the limit and its permits are
        // taken.
        let total = match frame_length(&buf, &limits) {
            Ok(Some(total)) => total,
            Ok(None) if buf.len() >= FRAME_PREFIX_LEN => {
                FRAME_PREFIX_LEN + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
            }
            Ok(None) => {
                let old = buf.len();
                let chunk = if old == 0 {
                    if buf.capacity() > IDLE_READ_CHUNK {
                        // Give back what a burst of requests grew.
                        buf = BytesMut::new();
                    }
                    IDLE_READ_CHUNK
                } else {
                    READ_CHUNK
                };
                buf.reserve(chunk);
                buf.resize(old + chunk, 0);
                let n = read_into(&mut reader, &mut buf[old..], conn).await?;
                buf.truncate(old + n);
                if n == 0 {
                    return end_of_stream(old);
                }
                continue;
            }
            Err(e) => {
                ShardProbe::bump(&shard.probe.frames_refused);
                tracing::warn!(shard = shard.id, error = %e, "frame refused; closing the connection");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        };
        // Waiting for budget gives up when the connection closes (its
        // writer failed or timed out): it must not wait on for a shard
        // budget that other connections hold.
        let permits = total as u64;
        let request = until_closed(conn, requests.acquire_static_permit(1))
            .await?
            .map_err(|_| io::Error::other("request budget closed"))?;
        let conn_bytes = until_closed(conn, conn_budget.acquire_static_permit(permits))
            .await?
            .map_err(|_| io::Error::other("connection budget closed"))?;
        let shard_bytes = until_closed(conn, shard.inflight.acquire_static_permit(permits))
            .await?
            .map_err(|_| io::Error::other("shard budget closed"))?;
        let held = Held {
            conn_bytes,
            shard_bytes,
            request,
        };
        // Every frame gets an allocation of its own, exactly its size: the
        // records of a produce may stay in a partition's tail cache for a
        // long time, and must not pin a read buffer shared with others.
        let mut frame = if buf.len() >= total {
            let frame = BytesMut::from(&buf[..total]);
            buf.advance(total);
            frame
        } else {
            let mut frame = BytesMut::with_capacity(total);
            frame.extend_from_slice(&buf);
            buf.clear();
            let mut have = frame.len();
            frame.resize(total, 0);
            // The frame holds its permits from now on: it must arrive
            // whole in bounded time, or a client trickling bytes would
            // hold the shard's budget for as long as it liked.
            let deadline = read_timeout + Duration::from_secs((total >> 20) as u64);
            let rest = async {
                while have < total {
                    let n = read_into(&mut reader, &mut frame[have..], conn).await?;
                    if n == 0 {
                        return end_of_stream(have).map(|_| false);
                    }
                    have += n;
                }
                Ok(true)
            };
            let whole = futures_lite::future::or(rest, async {
                glommio::timer::sleep(deadline).await;
                ShardProbe::bump(&shard.probe.frames_refused);
                tracing::info!(
                    shard = shard.id,
                    frame_bytes = total,
                    ?deadline,
                    "a frame too slow to arrive; closing the connection"
                );
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "frame not whole within its deadline",
                ))
            })
            .await?;
            if !whole {
                return Ok(());
            }
            frame
        };
        frame.advance(FRAME_PREFIX_LEN);
        match decode_request(frame, &limits) {
            Ok((header, request)) => {
                let shard = shard.clone();
                let tx = tx.clone();
                let peer_host = host.clone();
                let conn = conn.clone();
                glommio::spawn_local(async move {
                    let ctx = RequestCtx {
                        peer_host: &peer_host,
                        frame_len: total,
                        conn: &conn,
                    };
                    let out = handle(&shard, header, request, &ctx).await;
                    if let Some(mut out) = out {
                        out.permits = Some(held);
                        send(&conn, &tx, out).await;
                    }
                })
                .detach();
            }
            Err(RequestError::Request {
                correlation_id,
                api_key,
                code,
                error,
            }) => {
                ShardProbe::bump(&shard.probe.requests_refused);
                tracing::info!(shard = shard.id, api_key, %error, "request refused");
                let mut head = BytesMut::new();
                encode_error_response(correlation_id, code, &error.to_string(), &mut head);
                let out = Outgoing {
                    head,
                    pieces: Vec::new(),
                    permits: Some(held),
                };
                send(conn, &tx, out).await;
            }
            Err(RequestError::Header(e)) => {
                ShardProbe::bump(&shard.probe.frames_refused);
                tracing::warn!(shard = shard.id, error = %e, "unreadable request header; closing the connection");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
    }
}

/// The client closed its side: cleanly between frames, or in the middle of one.
fn end_of_stream(buffered: usize) -> io::Result<()> {
    if buffered == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-frame",
        ))
    }
}

/// Hands a response to the writer, counting its bytes as unwritten; a
/// response for a connection that closed is dropped (and its permits with
/// it), also while it waits for room in the writer's queue.
async fn send(conn: &ConnState, tx: &LocalSender<Outgoing>, out: Outgoing) {
    if conn.is_closed() {
        return;
    }
    let len = out.wire_len();
    conn.unwritten.set(conn.unwritten.get() + len);
    let sent = futures_lite::future::or(async { tx.send(out).await.is_ok() }, async {
        conn.closed().await;
        false
    })
    .await;
    if !sent {
        conn.unwritten.set(conn.unwritten.get() - len);
    }
}

async fn write_loop(
    mut writer: WriteHalf<TcpStream>,
    fd: RawFd,
    rx: LocalReceiver<Outgoing>,
    conn: Rc<ConnState>,
) {
    loop {
        let next = futures_lite::future::or(rx.recv(), async {
            conn.closed().await;
            None
        })
        .await;
        let Some(out) = next else { break };
        let len = out.wire_len();
        let r = write_outgoing(&mut writer, fd, &out).await;
        conn.unwritten.set(conn.unwritten.get() - len);
        conn.written.notify();
        if let Err(e) = r {
            tracing::debug!(error = %e, "write failed; closing the connection");
            break;
        }
    }
    // The reader stops too (a client that does not read is not served).
    conn.close();
    let _ = writer.close().await;
    drop(writer);
    // Responses queued or still being handed over are dropped here, and
    // their permits given back, until every sender is gone: left in the
    // queue they would hold the shard's budget for as long as the
    // channel lived.
    // (A task of its own: a JoinGroup may wait minutes for its rebalance,
    // and the connection is gone already.)
    glommio::spawn_local(async move {
        while let Some(out) = rx.recv().await {
            conn.unwritten.set(conn.unwritten.get() - out.wire_len());
        }
        debug_assert_eq!(
            conn.unwritten.get(),
            0,
            "every response handed over is accounted for"
        );
    })
    .detach();
}

async fn write_outgoing(w: &mut WriteHalf<TcpStream>, fd: RawFd, out: &Outgoing) -> io::Result<()> {
    let mut at = 0;
    for (pos, pieces) in &out.pieces {
        w.write_all(&out.head[at..*pos]).await?;
        for p in pieces {
            match p {
                Piece::Memory(b) => w.write_all(b).await?,
                Piece::File { file, position, len } => {
                    send_file(w, fd, file.as_raw_fd(), *position, *len).await?
                }
            }
        }
        at = *pos;
    }
    w.write_all(&out.head[at..]).await?;
    w.flush().await
}

/// Sends `len` bytes of `file` from `position` with sendfile(2). The call
/// runs on glommio's blocking-thread pool: when the pages are not in the
/// page cache, sendfile reads them from the disk synchronously, and that
/// must not stall the shard. When the socket is full, a small piece goes
/// through the async write path, which waits for room without blocking the
/// executor; then sendfile resumes.
async fn send_file(
    w: &mut WriteHalf<TcpStream>,
    sock: RawFd,
    file: RawFd,
    mut position: u64,
    mut len: u64,
) -> io::Result<()> {
    // Asked once, before the first sendfile: this range (sendfile alone
    // reads a cold file in readahead-window steps, one at a time) and the
    // one after it, which a consumer reading on sequentially fetches next,
    // so that the disk reads it while this one is sent and decoded.
    let mut advise = Some([(position, len), (position + len, len)]);
    while len > 0 {
        let (from, count) = (position, len.min(1 << 30) as usize);
        let advise_now = advise.take();
        // The descriptors stay open: the caller holds the socket and the
        // file until this returns, and this awaits the call.
        let (n, err) = glommio::executor()
            .spawn_blocking(move || {
                // Past the end of the file an advice does nothing.
                for (at, n) in advise_now.into_iter().flatten() {
                    unsafe {
                        libc::posix_fadvise(
                            file,
                            at as libc::off_t,
                            n as libc::off_t,
                            libc::POSIX_FADV_WILLNEED,
                        );
                    }
                }
                let mut off = from as libc::off_t;
                let n = unsafe { libc::sendfile(sock, file, &mut off, count) };
                (n, (n < 0).then(io::Error::last_os_error))
            })
            .await;
        if n > 0 {
            position += n as u64;
            len -= n as u64;
            continue;
        }
        let Some(e) = err else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than the range sent",
            ));
        };
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                // The socket is full: a small piece goes through the async
                // write, which waits for room (within the write timeout).
                // Its bytes are read on the blocking pool too, since they
                // may not be in the page cache either.
                let k = len.min(16 << 10) as usize;
                let piece = glommio::executor()
                    .spawn_blocking(move || {
                        let mut piece = vec![0u8; k];
                        let r = unsafe {
                            libc::pread(file, piece.as_mut_ptr().cast(), k, position as libc::off_t)
                        };
                        piece.truncate(r.max(0) as usize);
                        piece
                    })
                    .await;
                if piece.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment shorter than the range sent",
                    ));
                }
                w.write_all(&piece).await?;
                position += piece.len() as u64;
                len -= piece.len() as u64;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}
