//! Fuzzes the native protocol decoders on arbitrary bytes: `frame_length`,
//! `decode_request`, and `decode_response` for every api key.
//!
//! Whatever decodes must re-encode to a frame that decodes to the same value,
//! and a request that fails after its header must carry a correlation id.

#![no_main]

use borges_net::protocol::{
    decode_request, decode_response, encode_request, encode_response, frame_length, peek_correlation_id,
    ApiKey, Limits, RequestError, FRAME_PREFIX_LEN,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();

    if let Ok(Some(total)) = frame_length(data, &limits) {
        assert!(total > FRAME_PREFIX_LEN && total <= data.len());
    }

    match decode_request(BytesMut::from(data), &limits) {
        Ok((header, req)) => {
            let mut out = BytesMut::new();
            encode_request(&header, &req, &mut out);
            assert_eq!(frame_length(&out, &limits), Ok(Some(out.len())));
            let again = decode_request(out.split_off(FRAME_PREFIX_LEN), &limits);
            assert_eq!(again, Ok((header, req)));
        }
        Err(RequestError::Request { correlation_id, .. }) => {
            assert_eq!(peek_correlation_id(&data[4..]), Some(correlation_id));
        }
        Err(RequestError::Header(_)) => {}
    }

    for key in ApiKey::ALL {
        if let Ok((cid, Ok(resp))) = decode_response(key, Bytes::copy_from_slice(data), &limits) {
            assert_eq!(resp.api_key(), key);
            let mut out = BytesMut::new();
            encode_response(cid, &resp, &mut out);
            let again = decode_response(key, out.split_off(FRAME_PREFIX_LEN).freeze(), &limits);
            assert_eq!(again, Ok((cid, Ok(resp))));
        }
    }
});
