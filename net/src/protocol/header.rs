//! Request and response headers.

use bytes::{BufMut, BytesMut};

use super::wire::{put_string, Input, Reader};
use super::{ApiKey, DecodeError, ErrorCode};

/// What precedes every request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: ApiKey,
    pub api_version: u16,
    /// Chosen by the client and echoed in the response, which is how the
    /// client matches responses to requests.
    pub correlation_id: u32,
    /// Free-form client name, for the broker's logs.
    pub client_id: String,
}

impl RequestHeader {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.api_key.key());
        out.put_u16(self.api_version);
        out.put_u32(self.correlation_id);
        put_string(out, &self.client_id);
    }
}

/// A request header as read, before the api key and version are checked.
pub(crate) struct RawRequestHeader {
    pub(crate) api_key: u16,
    pub(crate) api_version: u16,
    pub(crate) correlation_id: u32,
    pub(crate) client_id: String,
}

impl RawRequestHeader {
    pub(crate) fn decode<B: Input>(r: &mut Reader<'_, B>) -> Result<Self, DecodeError> {
        Ok(RawRequestHeader {
            api_key: r.u16()?,
            api_version: r.u16()?,
            correlation_id: r.u32()?,
            client_id: r.string("client_id")?,
        })
    }
}

/// Bytes in a response header: `correlation_id` (4) + `error` (2).
pub(crate) const RESPONSE_HEADER_LEN: usize = 6;

pub(crate) fn encode_response_header(out: &mut BytesMut, correlation_id: u32, error: ErrorCode) {
    out.put_u32(correlation_id);
    out.put_i16(error.code());
}
