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
//! goes on. Requests hold permits for their bytes from the connection's and
//! the shard's in-flight budgets until their response is written, so a
//! client that sends faster than it reads stops being read.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use borges_net::protocol::{decode_request, encode_error_response, frame_length, Limits, RequestError};
use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::handlers::{handle, Outgoing, Piece};
use crate::shard::{Shard, ShardProbe};

/// Serves one connection until the client goes away or breaks a limit.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
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
    let writer_task = glommio::spawn_local(write_loop(writer, fd, rx)).detach();
    let host: Rc<str> = stream_host(&peer).into();
    if let Err(e) = read_loop(&shard, reader, tx, host).await {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
    // The sending side ends when every handler has sent its response.
    let _ = writer_task.await;
}

/// The host part of a peer address (`ip:port`).
fn stream_host(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_string())
}

async fn read_loop(
    shard: &Rc<Shard>,
    mut reader: ReadHalf<TcpStream>,
    tx: LocalSender<Outgoing>,
    host: Rc<str>,
) -> io::Result<()> {
    let tx = Rc::new(tx);
    let limits = Limits {
        max_frame_bytes: shard.config.max_frame_bytes,
        ..Limits::default()
    };
    let conn_budget = Rc::new(Semaphore::new(
        shard.config.max_inflight_bytes_per_connection as u64,
    ));
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        let total = match frame_length(&buf, &limits) {
            Ok(Some(total)) => total,
            Ok(None) => {
                // Read at least what the announced frame still needs.
                let want = if buf.len() >= 4 {
                    let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4;
                    (announced - buf.len()).max(64 << 10)
                } else {
                    64 << 10
                };
                let old = buf.len();
                buf.resize(old + want, 0);
                let n = reader.read(&mut buf[old..]).await?;
                buf.truncate(old + n);
                if n == 0 {
                    return if old == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed mid-frame",
                        ))
                    };
                }
                continue;
            }
            Err(e) => {
                ShardProbe::bump(&shard.probe.frames_refused);
                tracing::warn!(shard = shard.id, error = %e, "frame refused; closing the connection");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        };
        let mut frame = buf.split_to(total);
        frame.advance(4);
        let permits = total as u64;
        let conn_permit = conn_budget
            .acquire_static_permit(permits)
            .await
            .map_err(|_| io::Error::other("connection budget closed"))?;
        let shard_permit = shard
            .inflight
            .acquire_static_permit(permits)
            .await
            .map_err(|_| io::Error::other("shard budget closed"))?;
        match decode_request(frame, &limits) {
            Ok((header, request)) => {
                let shard = shard.clone();
                let tx = tx.clone();
                let peer_host = host.clone();
                glommio::spawn_local(async move {
                    let out = handle(&shard, header, request, &peer_host).await;
                    if let Some(mut out) = out {
                        out.permits = Some((conn_permit, shard_permit));
                        let _ = tx.send(out).await;
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
                    permits: Some((conn_permit, shard_permit)),
                };
                tx.send(out).await.map_err(|_| io::Error::other("writer gone"))?;
            }
            Err(RequestError::Header(e)) => {
                ShardProbe::bump(&shard.probe.frames_refused);
                tracing::warn!(shard = shard.id, error = %e, "unreadable request header; closing the connection");
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            }
        }
    }
}

async fn write_loop(mut writer: WriteHalf<TcpStream>, fd: RawFd, rx: local_channel::LocalReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        if let Err(e) = write_outgoing(&mut writer, fd, &out).await {
            tracing::debug!(error = %e, "write failed; closing the connection");
            let _ = writer.close().await;
            return;
        }
    }
    let _ = writer.close().await;
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
                let k = len.min(16 << 10) as usize;
                let mut piece = vec![0u8; k];
                let r = unsafe { libc::pread(file, piece.as_mut_ptr().cast(), k, position as libc::off_t) };
                if r <= 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment shorter than the range sent",
                    ));
                }
                w.write_all(&piece[..r as usize]).await?;
                position += r as u64;
                len -= r as u64;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}
