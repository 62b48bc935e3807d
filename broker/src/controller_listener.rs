//! The controller listener, on shard 0: where the other brokers of the
//! cluster reach this broker's metadata quorum member (raft messages), its
//! controller when it is the active one (registrations, heartbeats), and
//! its topic changes forwarded by brokers that are not the controller.
//!
//! It is a listener of its own (Kafka's `controller.listener.names`), so
//! that the client listener can refuse every controller-only api: no
//! client speaks for a peer. Each connection answers one request at a
//! time, in order; a frame that cannot be read closes it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use borges_net::protocol::{
    decode_request, encode_error_response, encode_response, ErrorCode, Limits, RaftMessagesResponse, Request,
    RequestError, Response, FRAME_PREFIX_LEN,
};
use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::calls::Admin;
use crate::shard::Shard;

/// A started frame must arrive whole within this.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

/// Binds the listener and serves it for as long as the executor runs.
pub fn start(shard: Rc<Shard>, addr: SocketAddr) -> std::io::Result<()> {
    // Bound without SO_REUSEPORT (unlike the client listener): a second
    // process started with the same node id must fail here rather than
    // share this quorum member's address and take half its connections.
    let std_listener = std::net::TcpListener::bind(addr)?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is a listening TCP socket just taken from
    // `std_listener`, owned by nothing else.
    let listener = unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
    tracing::info!(%addr, "controller listener");
    let open = Rc::new(std::cell::Cell::new(0usize));
    glommio::spawn_local(async move {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener: accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if open.get() >= MAX_CONNECTIONS {
                tracing::warn!("controller listener: too many connections; refusing one");
                continue;
            }
            open.set(open.get() + 1);
            let (s, open) = (shard.clone(), open.clone());
            glommio::spawn_local(async move {
                if let Err(e) = serve(&s, stream).await {
                    tracing::debug!(error = %e, "controller listener: connection closed");
                }
                open.set(open.get() - 1);
            })
            .detach();
        }
    })
    .detach();
    Ok(())
}

async fn read_frame(stream: &mut TcpStream, max: usize) -> std::io::Result<Option<BytesMut>> {
    let mut len = [0u8; FRAME_PREFIX_LEN];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut payload = BytesMut::zeroed(len);
    let read = futures_lite::future::or(async { Some(stream.read_exact(&mut payload).await) }, async {
        glommio::timer::sleep(FRAME_READ_TIMEOUT).await;
        None
    })
    .await;
    match read {
        Some(r) => r.map(|()| Some(payload)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "a frame did not arrive whole in time",
        )),
    }
}

async fn serve(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let limits = Limits {
        max_frame_bytes: shard.config.max_frame_bytes,
        ..Limits::default()
    };
    while let Some(payload) = read_frame(&mut stream, limits.max_frame_bytes).await? {
        let mut out = BytesMut::new();
        match decode_request(payload, &limits) {
            Err(RequestError::Header(e)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
            Err(RequestError::Request {
                correlation_id,
                code,
                error,
                ..
            }) => encode_error_response(correlation_id, code, &error.to_string(), &mut out),
            Ok((header, req)) => match answer(shard, req).await {
                Ok(resp) => encode_response(header.correlation_id, &resp, &mut out),
                Err((code, message)) => {
                    encode_error_response(header.correlation_id, code, &message, &mut out)
                }
            },
        }
        stream.write_all(&out).await?;
    }
    Ok(())
}

async fn answer(shard: &Rc<Shard>, req: Request) -> Result<Response, (ErrorCode, String)> {
    let Some(host) = shard.quorum.get().cloned() else {
        return Err((
            ErrorCode::NotController,
            "the metadata quorum has not started".into(),
        ));
    };
    Ok(match req {
        Request::RaftMessages(r) => {
            let voter = shard.config.controllers.iter().any(|v| v.node == r.from);
            if !voter || r.from == shard.config.node_id {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("node {} is not a peer of this quorum", r.from),
                ));
            }
            let mut refused = 0;
            for m in &r.messages {
                if let Err(e) = host.step(&m.bytes) {
                    refused += 1;
                    tracing::warn!(from = r.from, error = %e, "a raft message was refused");
                }
            }
            Response::RaftMessages(RaftMessagesResponse {
                error: ErrorCode::None,
                refused,
            })
        }
        Request::BrokerRegistration(r) => {
            if !host.is_active() {
                return Ok(Response::BrokerRegistration(
                    borges_net::protocol::BrokerRegistrationResponse {
                        error: ErrorCode::NotController,
                        message: Some("this node is not the active controller".into()),
                        epoch: borges_net::types::BrokerEpoch(-1),
                        controller: host.leader().0,
                    },
                ));
            }
            Response::BrokerRegistration(crate::membership::registration(&host, &r).await)
        }
        Request::BrokerHeartbeat(r) => {
            if !host.is_active() {
                return Ok(Response::BrokerHeartbeat(
                    borges_net::protocol::BrokerHeartbeatResponse {
                        error: ErrorCode::NotController,
                        message: Some("this node is not the active controller".into()),
                        controller: host.leader().0,
                        ..Default::default()
                    },
                ));
            }
            Response::BrokerHeartbeat(crate::membership::heartbeat_here(&host, &r).await)
        }
        // Topic changes forwarded by a broker that is not the controller:
        // decided here, never forwarded on.
        Request::CreateTopics(r) => shard.admin_here(Admin::Create(r)).await,
        Request::DeleteTopics(r) => shard.admin_here(Admin::Delete(r)).await,
        Request::AlterConfigs(r) => shard.admin_here(Admin::Alter(r)).await,
        Request::ElectLeaders(r) => shard.admin_here(Admin::Elect(r)).await,
        other => {
            return Err((
                ErrorCode::InvalidRequest,
                format!("{} is not served on the controller listener", other.api_key()),
            ))
        }
    })
}
