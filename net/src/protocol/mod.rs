//! The Borges native wire protocol: frames, headers, and every api's
//! messages. Pure encode/decode into caller-owned buffers, no I/O; the broker
//! and the client share it. The byte layout is specified in `docs/PROTOCOL.md`.
//!
//! A frame is a `u32` big-endian length and that many payload bytes. A
//! request payload is a header (api key, api version, correlation id, client
//! id) and the api's body; a response payload is the correlation id, an error
//! code and, on success, the api's body, or on a request-level error a
//! message.
//!
//! Reading a connection: call `frame_length` on the bytes buffered so far
//! (it allocates nothing and rejects oversized frames from the prefix alone);
//! once it returns `Some(total)`, split those bytes off, drop the prefix, and
//! hand the payload to `decode_request` / `decode_response`.
//!
//! Layout:
//! - `api.rs`: `ApiKey`, its versions, and the decoder's `Limits`.
//! - `error.rs`: `ErrorCode` (Kafka's numbers), `DecodeError`, `RequestError`.
//! - `wire.rs`: the primitives (big-endian integers, varints, strings,
//!   nullable values, arrays) and the bounds-checked reader.
//! - `header.rs`: the request header and the response header.
//! - `messages.rs`: every request and response body.
//! - `frame.rs`: `frame_length`, `Request`/`Response`, the encode/decode entry
//!   points, and the zero-copy fetch response frame.
//!
//! Nothing here panics on input bytes, and nothing is allocated from a length
//! before that length has been checked against `Limits` and against the bytes
//! that remain; the decoders are fuzzed (`net/fuzz`, target `protocol`).

mod api;
mod error;
mod frame;
mod header;
mod messages;
mod wire;

pub use api::{ApiKey, Limits, MAX_ARRAY_LEN_DEFAULT, MAX_FRAME_BYTES_DEFAULT, MAX_STRING_BYTES_DEFAULT};
pub use error::{DecodeError, ErrorCode, RequestError};
pub use frame::{
    decode_request, decode_response, encode_error_response, encode_fetch_response_frame, encode_request,
    encode_response, frame_length, peek_correlation_id, FetchPartitionHead, Request, Response,
    ResponseResult, FRAME_PREFIX_LEN,
};
pub use header::RequestHeader;
pub use messages::*;
