//! Controller-listener messages, between brokers only: the metadata
//! quorum's Raft messages, and a broker's registration and heartbeats sent
//! to the active controller (Kafka's BrokerRegistration and BrokerHeartbeat,
//! KIP-631, trimmed to what Borges's controller reads).
//!
//! A broker answers these on its controller listener alone; on the client
//! listener they are refused, so no client can speak for a peer.

use bytes::{BufMut, Bytes, BytesMut};

use super::super::wire::{
    put_array, put_bool, put_bytes32, put_nullable_string, put_string, Decode, Encode, Input, Reader,
};
use super::super::{DecodeError, ErrorCode};
use super::{error_code, put_error};
use crate::types::BrokerEpoch;

// ------------------------------------------------------------ RaftMessages

/// One encoded Raft message (`borges_meta::quorum::wire`), opaque here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftMessage {
    pub bytes: Bytes,
}

wire_struct! { RaftMessage, min = 4,
    encode(self, out) { put_bytes32(out, &self.bytes); }
    decode(r) { Ok(RaftMessage { bytes: r.bytes32("raft message")?.into_bytes() }) }
}

/// Raft messages from one voter to another. Delivery is best effort: Raft
/// resends what is lost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftMessagesRequest {
    /// The sender's node id.
    pub from: i32,
    pub messages: Vec<RaftMessage>,
}

wire_struct! { RaftMessagesRequest, min = 4 + 1,
    encode(self, out) {
        out.put_i32(self.from);
        put_array(out, &self.messages);
    }
    decode(r) {
        Ok(RaftMessagesRequest { from: r.i32()?, messages: r.array("raft messages")? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftMessagesResponse {
    /// `None`, or why none of the messages was taken (this node is not a
    /// voter, or its journal failed).
    pub error: ErrorCode,
    /// How many messages were refused as malformed.
    pub refused: u32,
}

wire_struct! { RaftMessagesResponse, min = 2 + 4,
    encode(self, out) {
        put_error(out, self.error);
        out.put_u32(self.refused);
    }
    decode(r) { Ok(RaftMessagesResponse { error: error_code(r)?, refused: r.u32()? }) }
}

// ------------------------------------------------------------ BrokerRegistration

/// A 128-bit id (an incarnation, a directory id) as two big-endian halves.
fn put_u128(out: &mut BytesMut, v: u128) {
    out.put_u64((v >> 64) as u64);
    out.put_u64(v as u64);
}

fn get_u128<B: Input>(r: &mut Reader<'_, B>) -> Result<u128, DecodeError> {
    let hi = r.u64()?;
    let lo = r.u64()?;
    Ok((u128::from(hi) << 64) | u128::from(lo))
}

/// A log directory's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogDirId(pub u128);

wire_struct! { LogDirId, min = 16,
    encode(self, out) { put_u128(out, self.0); }
    decode(r) { Ok(LogDirId(get_u128(r)?)) }
}

/// A broker asks the active controller for a broker epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerRegistrationRequest {
    pub node: i32,
    /// Random per process start: tells a restart from a duplicate.
    pub incarnation: u128,
    /// `host:port` of the broker's client listener.
    pub address: String,
    pub rack: Option<String>,
    pub shards: u16,
    pub log_dirs: Vec<LogDirId>,
}

wire_struct! { BrokerRegistrationRequest, min = 4 + 16 + 1 + 1 + 2 + 1,
    encode(self, out) {
        out.put_i32(self.node);
        put_u128(out, self.incarnation);
        put_string(out, &self.address);
        put_nullable_string(out, self.rack.as_deref());
        out.put_u16(self.shards);
        put_array(out, &self.log_dirs);
    }
    decode(r) {
        Ok(BrokerRegistrationRequest {
            node: r.i32()?,
            incarnation: get_u128(r)?,
            address: r.string("address")?,
            rack: r.nullable_string("rack")?,
            shards: r.u16()?,
            log_dirs: r.array("log dirs")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerRegistrationResponse {
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The broker epoch granted (when `error` is `None`).
    pub epoch: BrokerEpoch,
    /// The active controller as far as the answering node knows (-1:
    /// unknown), so that a `NotController` answer says where to go.
    pub controller: i32,
}

wire_struct! { BrokerRegistrationResponse, min = 2 + 1 + 8 + 4,
    encode(self, out) {
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
        out.put_i64(self.epoch.0);
        out.put_i32(self.controller);
    }
    decode(r) {
        Ok(BrokerRegistrationResponse {
            error: error_code(r)?,
            message: r.nullable_string("message")?,
            epoch: BrokerEpoch(r.i64()?),
            controller: r.i32()?,
        })
    }
}

// ------------------------------------------------------------ BrokerHeartbeat

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerHeartbeatRequest {
    pub node: i32,
    pub epoch: BrokerEpoch,
    /// The last metadata log index this broker has applied.
    pub metadata_offset: u64,
    pub want_fence: bool,
    pub want_shutdown: bool,
}

wire_struct! { BrokerHeartbeatRequest, min = 4 + 8 + 8 + 1 + 1,
    encode(self, out) {
        out.put_i32(self.node);
        out.put_i64(self.epoch.0);
        out.put_u64(self.metadata_offset);
        put_bool(out, self.want_fence);
        put_bool(out, self.want_shutdown);
    }
    decode(r) {
        Ok(BrokerHeartbeatRequest {
            node: r.i32()?,
            epoch: BrokerEpoch(r.i64()?),
            metadata_offset: r.u64()?,
            want_fence: r.bool("want fence")?,
            want_shutdown: r.bool("want shutdown")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerHeartbeatResponse {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub controller: i32,
    pub fenced: bool,
    pub shutting_down: bool,
    pub should_shut_down: bool,
}

wire_struct! { BrokerHeartbeatResponse, min = 2 + 1 + 4 + 3,
    encode(self, out) {
        put_error(out, self.error);
        put_nullable_string(out, self.message.as_deref());
        out.put_i32(self.controller);
        put_bool(out, self.fenced);
        put_bool(out, self.shutting_down);
        put_bool(out, self.should_shut_down);
    }
    decode(r) {
        Ok(BrokerHeartbeatResponse {
            error: error_code(r)?,
            message: r.nullable_string("message")?,
            controller: r.i32()?,
            fenced: r.bool("fenced")?,
            shutting_down: r.bool("shutting down")?,
            should_shut_down: r.bool("should shut down")?,
        })
    }
}

// ------------------------------------------------------------ MetadataFetch

/// A broker that is not a voter (an observer) asks a voter for the
/// committed metadata image, if it is newer than the one it has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataFetchRequest {
    pub node: i32,
    /// The metadata log index of the image the observer has (0: none).
    pub applied: u64,
    /// How long the voter may wait for a newer image before it answers
    /// without one.
    pub max_wait_ms: u32,
}

wire_struct! { MetadataFetchRequest, min = 4 + 8 + 4,
    encode(self, out) {
        out.put_i32(self.node);
        out.put_u64(self.applied);
        out.put_u32(self.max_wait_ms);
    }
    decode(r) {
        Ok(MetadataFetchRequest { node: r.i32()?, applied: r.u64()?, max_wait_ms: r.u32()? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataFetchResponse {
    pub error: ErrorCode,
    /// The active controller as the voter knows it (-1: none).
    pub controller: i32,
    /// The index of the voter's committed image.
    pub applied: u64,
    /// That image as a snapshot (`MetadataImage::encode_snapshot`), when it
    /// is newer than the observer's; `None` otherwise.
    pub image: Option<Bytes>,
}

wire_struct! { MetadataFetchResponse, min = 2 + 4 + 8 + 1,
    encode(self, out) {
        put_error(out, self.error);
        out.put_i32(self.controller);
        out.put_u64(self.applied);
        match &self.image {
            None => put_bool(out, false),
            Some(b) => {
                put_bool(out, true);
                put_bytes32(out, b);
            }
        }
    }
    decode(r) {
        let error = error_code(r)?;
        let controller = r.i32()?;
        let applied = r.u64()?;
        let image = if r.bool("has image")? {
            Some(r.bytes32("image")?.into_bytes())
        } else {
            None
        };
        Ok(MetadataFetchResponse { error, controller, applied, image })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;

    fn round_trip<T: Encode + Decode<Bytes> + PartialEq + std::fmt::Debug>(v: &T) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let limits = Limits::default();
        let mut r = Reader::new(out.freeze(), &limits);
        let back = T::decode(&mut r).expect("decodes");
        r.finish().expect("nothing left over");
        assert_eq!(&back, v);
    }

    #[test]
    fn messages_round_trip() {
        round_trip(&RaftMessagesRequest {
            from: 2,
            messages: vec![
                RaftMessage {
                    bytes: Bytes::from_static(b"\x01\x02"),
                },
                RaftMessage::default(),
            ],
        });
        round_trip(&RaftMessagesResponse {
            error: ErrorCode::NotController,
            refused: 3,
        });
        round_trip(&BrokerRegistrationRequest {
            node: 4,
            incarnation: u128::MAX - 7,
            address: "127.0.0.4:9092".into(),
            rack: Some("r1".into()),
            shards: 2,
            log_dirs: vec![LogDirId(1 << 100), LogDirId(5)],
        });
        round_trip(&BrokerRegistrationResponse {
            error: ErrorCode::None,
            message: None,
            epoch: BrokerEpoch(17),
            controller: 1,
        });
        round_trip(&BrokerHeartbeatRequest {
            node: 1,
            epoch: BrokerEpoch(9),
            metadata_offset: 1234,
            want_fence: true,
            want_shutdown: false,
        });
        round_trip(&MetadataFetchRequest {
            node: 5,
            applied: 99,
            max_wait_ms: 500,
        });
        round_trip(&MetadataFetchResponse {
            error: ErrorCode::None,
            controller: 2,
            applied: 100,
            image: Some(Bytes::from_static(b"snapshot")),
        });
        round_trip(&MetadataFetchResponse::default());
        round_trip(&BrokerHeartbeatResponse {
            error: ErrorCode::StaleBrokerEpoch,
            message: Some("old".into()),
            controller: -1,
            fenced: true,
            shutting_down: false,
            should_shut_down: true,
        });
    }

    #[test]
    fn a_truncated_registration_is_refused() {
        let mut out = BytesMut::new();
        BrokerRegistrationRequest {
            node: 1,
            ..Default::default()
        }
        .encode(&mut out);
        let limits = Limits::default();
        let cut = out.freeze().slice(..10);
        let mut r = Reader::new(cut, &limits);
        assert!(BrokerRegistrationRequest::decode(&mut r).is_err());
    }
}
