//! Borges wire formats, shared by the storage engine, the broker and the client.
//!
//! Everything here is pure: it encodes into caller-owned buffers and decodes
//! from byte slices, with no I/O and no runtime, so it is property-tested and
//! fuzzed in isolation, and the client never pulls in glommio.
//!
//! Layout:
//! - `types.rs`: identifier newtypes (offsets, epochs, partition ids, timestamps,
//!   topic ids).
//! - `batch/`: Kafka RecordBatch v2 (magic 2): header, validation, builder,
//!   record decoding and compression.
//! - `protocol/`: the Borges native wire protocol: framing, request and
//!   response headers, every api's messages, request-level errors and limits
//!   (specified in `docs/PROTOCOL.md`).

pub mod batch;
pub mod protocol;
pub mod types;
