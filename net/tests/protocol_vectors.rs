//! Fixed byte vectors and limit checks for the native protocol.
//!
//! The vectors are literal bytes written from `docs/PROTOCOL.md`, not
//! produced by the encoder, so they pin the documented layout.

use bytes::{Bytes, BytesMut};

use borges_net::protocol::*;
use borges_net::types::TopicId;

/// Decodes the hex strings the vectors are written in; whitespace ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const PRODUCE_FRAME: &str = "
    00000021          // frame length 33
    0004              // api_key Produce
    0000              // api_version 0
    00000007          // correlation_id 7
    01 63             // client_id \"c\"
    ff                // acks -1
    000003e8          // timeout_ms 1000
    01                // topics: 1
    0102030405060708  //   topic_id
    01                //   partitions: 1
    00000003          //     partition 3
    03 616263         //     records: 3 bytes \"abc\"
";

fn produce_request() -> (RequestHeader, Request) {
    let header = RequestHeader {
        api_key: ApiKey::Produce,
        api_version: 0,
        correlation_id: 7,
        client_id: "c".into(),
    };
    let req = Request::Produce(ProduceRequest {
        acks: -1,
        timeout_ms: 1000,
        topics: vec![ProduceTopic {
            topic_id: TopicId(0x0102030405060708),
            partitions: vec![ProducePartition {
                partition: 3,
                records: BytesMut::from(&b"abc"[..]),
            }],
        }],
    });
    (header, req)
}

#[test]
fn produce_request_bytes() {
    let (header, req) = produce_request();
    let mut out = BytesMut::new();
    encode_request(&header, &req, &mut out);
    let expected = hex(PRODUCE_FRAME);
    assert_eq!(&out[..], &expected[..]);

    let limits = Limits::default();
    assert_eq!(frame_length(&expected, &limits), Ok(Some(expected.len())));
    let payload = BytesMut::from(&expected[4..]);
    let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
    let (h, r) = decode_request(payload, &limits).unwrap();
    assert_eq!((h.clone(), r.clone()), (header, req));

    // The records are a piece of the payload's own allocation, not a copy.
    let Request::Produce(p) = r else { unreachable!() };
    let records = &p.topics[0].partitions[0].records;
    assert!(range.contains(&(records.as_ptr() as usize)));
}

const FETCH_RESPONSE_FRAME: &str = "
    0000002c          // frame length 44
    00000007          // correlation_id 7
    0000              // error 0
    01                // topics: 1
    0000000000000009  //   topic_id 9
    01                //   partitions: 1
    00000000          //     partition 0
    0000              //     error None
    000000000000000a  //     high_watermark 10
    0000000000000000  //     log_start_offset 0
    00000002 7879     //     records: u32 length 2, \"xy\"
";

fn fetch_response() -> Response {
    Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            topic_id: TopicId(9),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                high_watermark: 10,
                log_start_offset: 0,
                records: Bytes::from_static(b"xy"),
            }],
        }],
    })
}

#[test]
fn fetch_response_bytes() {
    let resp = fetch_response();
    let mut out = BytesMut::new();
    encode_response(7, &resp, &mut out);
    let expected = hex(FETCH_RESPONSE_FRAME);
    assert_eq!(&out[..], &expected[..]);

    let payload = Bytes::from(expected[4..].to_vec());
    assert_eq!(peek_correlation_id(&payload), Some(7));
    let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
    let (cid, r) = decode_response(ApiKey::Fetch, payload, &Limits::default()).unwrap();
    assert_eq!(cid, 7);
    assert_eq!(r, Ok(resp));
    let Ok(Response::Fetch(f)) = r else { unreachable!() };
    assert!(range.contains(&(f.topics[0].partitions[0].records.as_ptr() as usize)));
}

#[test]
fn fetch_frame_with_a_hole_bytes() {
    let heads = vec![(
        TopicId(9),
        vec![FetchPartitionHead {
            partition: 0,
            error: ErrorCode::None,
            high_watermark: 10,
            log_start_offset: 0,
            records_len: 2,
        }],
    )];
    let mut out = BytesMut::new();
    let holes = encode_fetch_response_frame(7, &heads, &mut out);
    let expected = hex(FETCH_RESPONSE_FRAME);
    assert_eq!(holes, vec![expected.len() - 2]);
    assert_eq!(&out[..], &expected[..expected.len() - 2]);
}

#[test]
fn error_response_bytes() {
    let mut out = BytesMut::new();
    encode_error_response(7, ErrorCode::UnsupportedVersion, "no", &mut out);
    let expected = hex("
        00000009  // frame length 9
        00000007  // correlation_id 7
        0023      // error 35 UnsupportedVersion
        02 6e6f   // message \"no\"
    ");
    assert_eq!(&out[..], &expected[..]);
    for key in ApiKey::ALL {
        let r = decode_response(key, Bytes::from(expected[4..].to_vec()), &Limits::default());
        assert_eq!(r, Ok((7, Err((ErrorCode::UnsupportedVersion, "no".to_string())))));
    }
}

#[test]
fn other_message_bytes() {
    // Metadata for all topics: a null array is a zero count.
    let mut out = BytesMut::new();
    let header = RequestHeader {
        api_key: ApiKey::Metadata,
        api_version: 0,
        correlation_id: 1,
        client_id: String::new(),
    };
    encode_request(
        &header,
        &Request::Metadata(MetadataRequest { topics: None }),
        &mut out,
    );
    assert_eq!(&out[..], &hex("0000000a 0001 0000 00000001 00 00")[..]);
    out.clear();
    let req = Request::Metadata(MetadataRequest {
        topics: Some(vec!["t".into()]),
    });
    encode_request(&header, &req, &mut out);
    assert_eq!(&out[..], &hex("0000000c 0001 0000 00000001 00 02 0174")[..]);

    // Alter configs: a null value is varint 0, a value "v" is 02 76.
    out.clear();
    let header = RequestHeader {
        api_key: ApiKey::AlterConfigs,
        ..header
    };
    let req = Request::AlterConfigs(AlterConfigsRequest {
        topics: vec![AlterConfigsTopic {
            name: "t".into(),
            configs: vec![("a".into(), None), ("b".into(), Some("v".into()))],
        }],
        validate_only: true,
    });
    encode_request(&header, &req, &mut out);
    assert_eq!(
        &out[..],
        &hex("00000015 0008 0000 00000001 00  01 0174 02 0161 00 0162 02 76  01")[..]
    );
    let limits = Limits::default();
    assert_eq!(decode_request(BytesMut::from(&out[4..]), &limits).unwrap().1, req);
}

// ------------------------------------------------------------------- limits

fn payload(hex_str: &str) -> BytesMut {
    BytesMut::from(&hex(hex_str)[..])
}

fn request_error(p: BytesMut, limits: &Limits) -> RequestError {
    decode_request(p, limits).unwrap_err()
}

#[test]
fn frame_length_limits() {
    let limits = Limits {
        max_frame_bytes: 16,
        ..Limits::default()
    };
    assert_eq!(frame_length(&[], &limits), Ok(None));
    assert_eq!(frame_length(&[0, 0, 0], &limits), Ok(None));
    assert_eq!(frame_length(&[0, 0, 0, 0], &limits), Err(DecodeError::EmptyFrame));
    assert_eq!(frame_length(&[0, 0, 0, 16], &limits), Ok(None));
    assert_eq!(
        frame_length(&[0, 0, 0, 17], &limits),
        Err(DecodeError::FrameTooLarge { len: 17, max: 16 })
    );
    assert_eq!(
        frame_length(&[0xff, 0xff, 0xff, 0xff], &Limits::default()),
        Err(DecodeError::FrameTooLarge {
            len: u32::MAX as usize,
            max: MAX_FRAME_BYTES_DEFAULT
        })
    );
    let mut buf = vec![0, 0, 0, 2, 9, 9];
    assert_eq!(frame_length(&buf, &limits), Ok(Some(6)));
    buf.push(1);
    assert_eq!(frame_length(&buf, &limits), Ok(Some(6)));

    // A payload over the limit handed straight to the decoders.
    let big = BytesMut::from(&[0u8; 17][..]);
    assert!(matches!(
        decode_request(big.clone(), &limits),
        Err(RequestError::Header(DecodeError::FrameTooLarge {
            len: 17,
            max: 16
        }))
    ));
    assert_eq!(
        decode_response(ApiKey::Fetch, big.freeze(), &limits),
        Err(DecodeError::FrameTooLarge { len: 17, max: 16 })
    );
}

#[test]
fn header_cut_short_is_a_header_error() {
    let limits = Limits::default();
    let full = hex("0001 0000 00000007 03 616263 00");
    for k in 0..full.len() - 1 {
        let e = request_error(BytesMut::from(&full[..k]), &limits);
        assert!(
            matches!(e, RequestError::Header(DecodeError::Truncated { .. })),
            "{k}: {e:?}"
        );
        assert_eq!(e.correlation_id(), None);
    }
    // Invalid UTF-8 in the client id.
    let e = request_error(payload("0001 0000 00000007 01 ff 00"), &limits);
    assert_eq!(e, RequestError::Header(DecodeError::InvalidUtf8));
    // An overlong client id length.
    let e = request_error(payload("0001 0000 00000007 8000 00"), &limits);
    assert_eq!(e, RequestError::Header(DecodeError::VarintOverlong));
}

#[test]
fn unknown_api_key_and_unsupported_version() {
    let limits = Limits::default();
    let e = request_error(payload("0063 0000 0000002a 00"), &limits);
    assert_eq!(
        e,
        RequestError::Request {
            correlation_id: 42,
            api_key: 99,
            code: ErrorCode::InvalidRequest,
            error: DecodeError::UnknownApiKey(99),
        }
    );
    assert_eq!(e.correlation_id(), Some(42));
    let e = request_error(payload("0005 0001 0000002b 00"), &limits);
    assert_eq!(
        e,
        RequestError::Request {
            correlation_id: 43,
            api_key: 5,
            code: ErrorCode::UnsupportedVersion,
            error: DecodeError::UnsupportedVersion {
                api_key: 5,
                version: 1
            },
        }
    );
}

fn body_error(api_key: u16, body: &str, limits: &Limits) -> DecodeError {
    let mut p = BytesMut::from(&api_key.to_be_bytes()[..]);
    p.extend_from_slice(&hex("0000 00000063 00"));
    p.extend_from_slice(&hex(body));
    match request_error(p, limits) {
        RequestError::Request {
            correlation_id: 99,
            api_key: k,
            code: ErrorCode::InvalidRequest,
            error,
        } if k == api_key => error,
        other => panic!("expected a request-level InvalidRequest, got {other:?}"),
    }
}

#[test]
fn string_over_the_limit() {
    let limits = Limits {
        max_string_bytes: 3,
        ..Limits::default()
    };
    // DeleteTopics with one name of 4 bytes.
    assert_eq!(
        body_error(3, "01 04 61626364 00000000", &limits),
        DecodeError::TooLong {
            what: "string",
            len: 4,
            max: 3
        }
    );
    // 3 bytes is fine.
    let ok = BytesMut::from(&hex("0003 0000 00000063 00 01 03 616263 00000000")[..]);
    assert!(decode_request(ok, &limits).is_ok());
    // A nullable string (a config value) over the limit.
    assert!(matches!(
        body_error(8, "01 0174 01 0161 05 61626364 00", &limits),
        DecodeError::TooLong { len: 4, max: 3, .. }
    ));
    // A header string over the limit is a header error.
    let e = request_error(payload("0000 0000 00000001 04 61626364"), &limits);
    assert!(matches!(
        e,
        RequestError::Header(DecodeError::TooLong { len: 4, .. })
    ));
}

#[test]
fn array_count_over_the_limit_or_the_bytes() {
    let limits = Limits {
        max_array_len: 2,
        ..Limits::default()
    };
    // DescribeConfigs with 3 names.
    assert_eq!(
        body_error(7, "03 0161 0162 0163", &limits),
        DecodeError::TooMany {
            what: "topics",
            count: 3,
            max: 2
        }
    );
    // A count far beyond the bytes that follow fails before allocating.
    let limits = Limits::default();
    assert_eq!(
        body_error(7, "a08d06 0161", &limits),
        DecodeError::Truncated {
            needed: 100_000,
            available: 2
        }
    );
    // Fetch: 2 partitions need 32 bytes at least; 16 remain.
    assert_eq!(
        body_error(
            5,
            "00000000 00000000 00000000 01 0000000000000001 02 00000000 0000000000000000 00000000",
            &limits
        ),
        DecodeError::Truncated {
            needed: 32,
            available: 16
        }
    );
    // Over the default cap.
    assert!(matches!(
        body_error(7, "a18d06", &limits),
        DecodeError::TooMany { count: 100_001, .. }
    ));
}

#[test]
fn invalid_values_and_trailing_bytes() {
    let limits = Limits::default();
    assert_eq!(
        body_error(4, "02 00000000 00", &limits),
        DecodeError::InvalidValue {
            what: "acks",
            value: 2
        }
    );
    assert_eq!(
        body_error(4, "fe 00000000 00", &limits),
        DecodeError::InvalidValue {
            what: "acks",
            value: -2
        }
    );
    assert_eq!(
        body_error(2, "00 00000000 02", &limits),
        DecodeError::InvalidValue {
            what: "validate_only",
            value: 2
        }
    );
    assert_eq!(body_error(0, "00", &limits), DecodeError::TrailingBytes(1));
    assert_eq!(body_error(7, "00 0000", &limits), DecodeError::TrailingBytes(2));
    assert_eq!(body_error(7, "01 01ff", &limits), DecodeError::InvalidUtf8);
    assert!(matches!(
        body_error(7, "01", &limits),
        DecodeError::Truncated { .. }
    ));
    // A records length beyond the frame.
    assert!(matches!(
        body_error(4, "01 00000000 01 0000000000000001 01 00000000 7f 00", &limits),
        DecodeError::Truncated {
            needed: 127,
            available: 1
        }
    ));

    // Responses: trailing bytes after the body or after an error message.
    let r = decode_response(
        ApiKey::ApiVersions,
        Bytes::from(hex("00000001 0000 00 ff")),
        &limits,
    );
    assert_eq!(r, Err(DecodeError::TrailingBytes(1)));
    let r = decode_response(
        ApiKey::ApiVersions,
        Bytes::from(hex("00000001 0023 00 ff")),
        &limits,
    );
    assert_eq!(r, Err(DecodeError::TrailingBytes(1)));
    // An error code this build does not know reads as UnknownServerError.
    let r = decode_response(ApiKey::ApiVersions, Bytes::from(hex("00000001 7fff 00")), &limits);
    assert_eq!(r, Ok((1, Err((ErrorCode::UnknownServerError, String::new())))));
}

#[test]
fn error_codes() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_i16(code.code()), code);
        assert!(!code.description().is_empty());
    }
    assert_eq!(ErrorCode::from_i16(12345), ErrorCode::UnknownServerError);
    assert_eq!(ErrorCode::NotLeaderOrFollower.code(), 6);
    assert_eq!(ErrorCode::UnknownTopicId.code(), 100);
    assert!(ErrorCode::UnknownTopicOrPartition.is_retriable());
    assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
    assert!(!ErrorCode::InvalidRequest.is_retriable());
    assert!(!ErrorCode::None.is_retriable());
    assert_eq!(TopicId(255).to_string(), "00000000000000ff");
}

#[test]
fn api_versions_supported_lists_every_api() {
    let r = ApiVersionsResponse::supported();
    assert_eq!(r.apis.len(), ApiKey::ALL.len());
    for (range, key) in r.apis.iter().zip(ApiKey::ALL) {
        assert_eq!(range.api_key, key as u16);
        assert_eq!(range.max_version, key.max_version());
    }
}

#[test]
#[should_panic(expected = "different api")]
fn mismatched_header_is_a_caller_bug() {
    let header = RequestHeader {
        api_key: ApiKey::Fetch,
        api_version: 0,
        correlation_id: 1,
        client_id: String::new(),
    };
    encode_request(
        &header,
        &Request::ApiVersions(ApiVersionsRequest {}),
        &mut BytesMut::new(),
    );
}
