//! Property tests for the native protocol: round trips of every request and
//! response (request-level errors included), `frame_length` on partial
//! buffers, the zero-copy fetch frame, and no decoder panics on arbitrary,
//! truncated or mutated input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use borges_net::protocol::*;
use borges_net::types::TopicId;

// ------------------------------------------------------------------ strategies

fn string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,6}", "[a-z._-]{0,12}"]
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of(string())
}

fn vec_of<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(s, 0..4)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn failure_code() -> impl Strategy<Value = ErrorCode> {
    error_code().prop_filter("not None", |c| *c != ErrorCode::None)
}

fn topic_id() -> impl Strategy<Value = TopicId> {
    any::<u64>().prop_map(TopicId)
}

fn records() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 100..300),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let metadata = prop::option::of(vec_of(string())).prop_map(|topics| MetadataRequest { topics });
    let create = (
        vec_of((string(), any::<u32>(), any::<u16>(), vec_of((string(), string())))),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(topics, timeout_ms, validate_only)| CreateTopicsRequest {
            topics: topics
                .into_iter()
                .map(|(name, partitions, replication_factor, configs)| CreatableTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                })
                .collect(),
            timeout_ms,
            validate_only,
        });
    let delete = (vec_of(string()), any::<u32>())
        .prop_map(|(names, timeout_ms)| DeleteTopicsRequest { names, timeout_ms });
    let produce = (
        prop::sample::select(vec![-1i8, 0, 1]),
        any::<u32>(),
        vec_of((topic_id(), vec_of((any::<u32>(), records())))),
    )
        .prop_map(|(acks, timeout_ms, topics)| ProduceRequest {
            acks,
            timeout_ms,
            topics: topics
                .into_iter()
                .map(|(topic_id, parts)| ProduceTopic {
                    topic_id,
                    partitions: parts
                        .into_iter()
                        .map(|(partition, r)| ProducePartition {
                            partition,
                            records: BytesMut::from(&r[..]),
                        })
                        .collect(),
                })
                .collect(),
        });
    let fetch = (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        vec_of((topic_id(), vec_of((any::<u32>(), any::<i64>(), any::<u32>())))),
    )
        .prop_map(|(max_wait_ms, min_bytes, max_bytes, topics)| FetchRequest {
            max_wait_ms,
            min_bytes,
            max_bytes,
            topics: topics
                .into_iter()
                .map(|(topic_id, parts)| FetchTopic {
                    topic_id,
                    partitions: parts
                        .into_iter()
                        .map(|(partition, fetch_offset, partition_max_bytes)| FetchPartition {
                            partition,
                            fetch_offset,
                            partition_max_bytes,
                        })
                        .collect(),
                })
                .collect(),
        });
    let list =
        vec_of((topic_id(), vec_of((any::<u32>(), any::<i64>())))).prop_map(|topics| ListOffsetsRequest {
            topics: topics
                .into_iter()
                .map(|(topic_id, parts)| ListOffsetsTopic {
                    topic_id,
                    partitions: parts
                        .into_iter()
                        .map(|(partition, timestamp)| ListOffsetsPartition { partition, timestamp })
                        .collect(),
                })
                .collect(),
        });
    let describe = vec_of(string()).prop_map(|topics| DescribeConfigsRequest { topics });
    let alter = (
        vec_of((string(), vec_of((string(), opt_string())))),
        any::<bool>(),
    )
        .prop_map(|(topics, validate_only)| AlterConfigsRequest {
            topics: topics
                .into_iter()
                .map(|(name, configs)| AlterConfigsTopic { name, configs })
                .collect(),
            validate_only,
        });
    prop_oneof![
        Just(Request::ApiVersions(ApiVersionsRequest {})),
        metadata.prop_map(Request::Metadata),
        create.prop_map(Request::CreateTopics),
        delete.prop_map(Request::DeleteTopics),
        produce.prop_map(Request::Produce),
        fetch.prop_map(Request::Fetch),
        list.prop_map(Request::ListOffsets),
        describe.prop_map(Request::DescribeConfigs),
        alter.prop_map(Request::AlterConfigs),
    ]
}

fn topic_result() -> impl Strategy<Value = TopicResult> {
    (string(), error_code(), opt_string()).prop_map(|(name, error, message)| TopicResult {
        name,
        error,
        message,
    })
}

fn fetch_response() -> impl Strategy<Value = FetchResponse> {
    vec_of((
        topic_id(),
        vec_of((any::<u32>(), error_code(), any::<i64>(), any::<i64>(), records())),
    ))
    .prop_map(|topics| FetchResponse {
        topics: topics
            .into_iter()
            .map(|(topic_id, parts)| FetchTopicResponse {
                topic_id,
                partitions: parts
                    .into_iter()
                    .map(
                        |(partition, error, high_watermark, log_start_offset, r)| FetchPartitionResponse {
                            partition,
                            error,
                            high_watermark,
                            log_start_offset,
                            records: Bytes::from(r),
                        },
                    )
                    .collect(),
            })
            .collect(),
    })
}

fn response() -> impl Strategy<Value = Response> {
    let versions = vec_of((any::<u16>(), any::<u16>(), any::<u16>())).prop_map(|apis| ApiVersionsResponse {
        apis: apis
            .into_iter()
            .map(|(api_key, min_version, max_version)| ApiVersionRange {
                api_key,
                min_version,
                max_version,
            })
            .collect(),
    });
    let metadata = (
        vec_of((any::<i32>(), string(), any::<u16>())),
        any::<i32>(),
        vec_of((
            error_code(),
            string(),
            topic_id(),
            vec_of((
                any::<u32>(),
                error_code(),
                any::<i32>(),
                any::<i32>(),
                vec_of(any::<i32>()),
            )),
        )),
    )
        .prop_map(|(brokers, controller_id, topics)| MetadataResponse {
            brokers: brokers
                .into_iter()
                .map(|(node_id, host, port)| BrokerMeta { node_id, host, port })
                .collect(),
            controller_id,
            topics: topics
                .into_iter()
                .map(|(error, name, id, parts)| TopicMeta {
                    error,
                    name,
                    id,
                    partitions: parts
                        .into_iter()
                        .map(
                            |(partition, error, leader, leader_epoch, replicas)| PartitionMeta {
                                partition,
                                error,
                                leader,
                                leader_epoch,
                                isr: replicas.clone(),
                                replicas,
                            },
                        )
                        .collect(),
                })
                .collect(),
        });
    let create =
        vec_of((string(), topic_id(), error_code(), opt_string())).prop_map(|topics| CreateTopicsResponse {
            topics: topics
                .into_iter()
                .map(|(name, id, error, message)| CreateTopicResult {
                    name,
                    id,
                    error,
                    message,
                })
                .collect(),
        });
    let delete = vec_of(topic_result()).prop_map(|topics| DeleteTopicsResponse { topics });
    let produce = vec_of((
        topic_id(),
        vec_of((
            any::<u32>(),
            error_code(),
            any::<i64>(),
            any::<i64>(),
            opt_string(),
        )),
    ))
    .prop_map(|topics| ProduceResponse {
        topics: topics
            .into_iter()
            .map(|(topic_id, parts)| ProduceTopicResponse {
                topic_id,
                partitions: parts
                    .into_iter()
                    .map(|(partition, error, base_offset, log_start_offset, message)| {
                        ProducePartitionResponse {
                            partition,
                            error,
                            base_offset,
                            log_start_offset,
                            message,
                        }
                    })
                    .collect(),
            })
            .collect(),
    });
    let list = vec_of((
        topic_id(),
        vec_of((any::<u32>(), error_code(), any::<i64>(), any::<i64>())),
    ))
    .prop_map(|topics| ListOffsetsResponse {
        topics: topics
            .into_iter()
            .map(|(topic_id, parts)| ListOffsetsTopicResponse {
                topic_id,
                partitions: parts
                    .into_iter()
                    .map(
                        |(partition, error, timestamp, offset)| ListOffsetsPartitionResponse {
                            partition,
                            error,
                            timestamp,
                            offset,
                        },
                    )
                    .collect(),
            })
            .collect(),
    });
    let describe = vec_of((
        string(),
        error_code(),
        opt_string(),
        vec_of((string(), opt_string(), any::<bool>())),
    ))
    .prop_map(|topics| DescribeConfigsResponse {
        topics: topics
            .into_iter()
            .map(|(name, error, message, configs)| DescribeConfigsResult {
                name,
                error,
                message,
                configs: configs
                    .into_iter()
                    .map(|(key, value, is_default)| ConfigEntry {
                        key,
                        value,
                        is_default,
                    })
                    .collect(),
            })
            .collect(),
    });
    let alter = vec_of(topic_result()).prop_map(|topics| AlterConfigsResponse { topics });
    prop_oneof![
        Just(Response::ApiVersions(ApiVersionsResponse::supported())),
        versions.prop_map(Response::ApiVersions),
        metadata.prop_map(Response::Metadata),
        create.prop_map(Response::CreateTopics),
        delete.prop_map(Response::DeleteTopics),
        produce.prop_map(Response::Produce),
        fetch_response().prop_map(Response::Fetch),
        list.prop_map(Response::ListOffsets),
        describe.prop_map(Response::DescribeConfigs),
        alter.prop_map(Response::AlterConfigs),
    ]
}

fn header_for(req: &Request, correlation_id: u32, client_id: String) -> RequestHeader {
    RequestHeader {
        api_key: req.api_key(),
        api_version: 0,
        correlation_id,
        client_id,
    }
}

// --------------------------------------------------------------------- helpers

/// Checks the frame with `frame_length` and returns its payload.
fn payload_of(frame: &[u8]) -> BytesMut {
    assert_eq!(frame_length(frame, &Limits::default()), Ok(Some(frame.len())));
    BytesMut::from(&frame[FRAME_PREFIX_LEN..])
}

fn encode_req(req: &Request, correlation_id: u32, client_id: String) -> (RequestHeader, BytesMut) {
    let header = header_for(req, correlation_id, client_id);
    let mut out = BytesMut::new();
    encode_request(&header, req, &mut out);
    (header, out)
}

fn api_key() -> impl Strategy<Value = ApiKey> {
    prop::sample::select(ApiKey::ALL.to_vec())
}

// ---------------------------------------------------------------------- tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trip(req in request(), correlation_id in any::<u32>(), client_id in string()) {
        let (header, frame) = encode_req(&req, correlation_id, client_id);
        let decoded = decode_request(payload_of(&frame), &Limits::default());
        prop_assert_eq!(decoded, Ok((header, req)));
    }

    #[test]
    fn response_round_trip(resp in response(), correlation_id in any::<u32>()) {
        let mut frame = BytesMut::new();
        encode_response(correlation_id, &resp, &mut frame);
        prop_assert_eq!(peek_correlation_id(&frame[FRAME_PREFIX_LEN..]), Some(correlation_id));
        let payload = payload_of(&frame).freeze();
        let decoded = decode_response(resp.api_key(), payload, &Limits::default());
        prop_assert_eq!(decoded, Ok((correlation_id, Ok(resp))));
    }

    #[test]
    fn error_response_round_trip(
        key in api_key(),
        code in failure_code(),
        message in string(),
        correlation_id in any::<u32>(),
    ) {
        let mut frame = BytesMut::new();
        encode_error_response(correlation_id, code, &message, &mut frame);
        let payload = payload_of(&frame).freeze();
        prop_assert_eq!(peek_correlation_id(&payload), Some(correlation_id));
        let decoded = decode_response(key, payload, &Limits::default());
        prop_assert_eq!(decoded, Ok((correlation_id, Err((code, message)))));
    }

    /// Several frames back to back: each prefix short of a whole frame asks
    /// for more bytes; a whole frame is found exactly.
    #[test]
    fn frame_length_on_partial_buffers(req in request(), resp in response(), cut in any::<prop::sample::Index>()) {
        let (_, mut buf) = encode_req(&req, 1, String::new());
        let first = buf.len();
        encode_response(2, &resp, &mut buf);
        let limits = Limits::default();
        for k in 0..first {
            prop_assert_eq!(frame_length(&buf[..k], &limits), Ok(None));
        }
        let k = first + cut.index(buf.len() - first + 1);
        prop_assert_eq!(frame_length(&buf[..k], &limits), Ok(Some(first)));
        let rest = &buf[first..];
        let want = if rest.len() == k - first { Some(rest.len()) } else { None };
        prop_assert_eq!(frame_length(&rest[..k - first], &limits), Ok(want));
    }

    #[test]
    fn fetch_frame_with_holes_matches_inline(
        resp in fetch_response(),
        correlation_id in any::<u32>(),
        prefix in prop::collection::vec(any::<u8>(), 0..10),
    ) {
        let mut inline = BytesMut::new();
        encode_response(correlation_id, &Response::Fetch(resp.clone()), &mut inline);

        let heads: Vec<(TopicId, Vec<FetchPartitionHead>)> = resp
            .topics
            .iter()
            .map(|t| (t.topic_id, t.partitions.iter().map(FetchPartitionHead::of).collect()))
            .collect();
        let mut out = BytesMut::from(&prefix[..]);
        let holes = encode_fetch_response_frame(correlation_id, &heads, &mut out);
        let records: Vec<&Bytes> = resp.topics.iter().flat_map(|t| t.partitions.iter().map(|p| &p.records)).collect();
        prop_assert_eq!(holes.len(), records.len());

        let mut sent = Vec::new();
        let mut pos = prefix.len();
        for (hole, r) in holes.iter().zip(&records) {
            prop_assert!(*hole >= pos && *hole <= out.len());
            sent.extend_from_slice(&out[pos..*hole]);
            sent.extend_from_slice(r);
            pos = *hole;
        }
        sent.extend_from_slice(&out[pos..]);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&sent[..], &inline[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let limits = Limits::default();
        let _ = frame_length(&data, &limits);
        let _ = decode_request(BytesMut::from(&data[..]), &limits);
        for key in ApiKey::ALL {
            let _ = decode_response(key, Bytes::from(data.clone()), &limits);
        }
        let _ = peek_correlation_id(&data);
    }

    /// Arbitrary bodies behind a valid header, so the body decoders see them.
    #[test]
    fn arbitrary_bodies_never_panic(key in api_key(), body in prop::collection::vec(any::<u8>(), 0..200)) {
        let limits = Limits::default();
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&key.key().to_be_bytes());
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 9, 0]);
        payload.extend_from_slice(&body);
        let _ = decode_request(payload, &limits);
        let mut resp = BytesMut::new();
        resp.extend_from_slice(&[0, 0, 0, 9, 0, 0]);
        resp.extend_from_slice(&body);
        let _ = decode_response(key, resp.freeze(), &limits);
    }

    /// A strict prefix of a valid payload never decodes: every message is
    /// self-delimiting.
    #[test]
    fn truncations_fail_cleanly(req in request(), resp in response(), cut in any::<prop::sample::Index>()) {
        let limits = Limits::default();
        let (_, frame) = encode_req(&req, 5, "c".into());
        let payload = &frame[FRAME_PREFIX_LEN..];
        let k = cut.index(payload.len());
        prop_assert!(decode_request(BytesMut::from(&payload[..k]), &limits).is_err());

        let mut frame = BytesMut::new();
        encode_response(5, &resp, &mut frame);
        let payload = &frame[FRAME_PREFIX_LEN..];
        let k = cut.index(payload.len());
        prop_assert!(decode_response(resp.api_key(), Bytes::copy_from_slice(&payload[..k]), &limits).is_err());
    }

    /// One byte changed: no panic, and whatever decodes re-encodes to a
    /// payload that decodes to the same value.
    #[test]
    fn mutations_never_panic(
        req in request(),
        resp in response(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let limits = Limits::default();
        let (_, frame) = encode_req(&req, 5, "c".into());
        let mut payload = BytesMut::from(&frame[FRAME_PREFIX_LEN..]);
        let i = at.index(payload.len());
        payload[i] = byte;
        if let Ok((header, decoded)) = decode_request(payload, &limits) {
            let mut again = BytesMut::new();
            encode_request(&header, &decoded, &mut again);
            prop_assert_eq!(decode_request(payload_of(&again), &limits), Ok((header, decoded)));
        }

        let mut frame = BytesMut::new();
        encode_response(5, &resp, &mut frame);
        let mut payload = BytesMut::from(&frame[FRAME_PREFIX_LEN..]);
        let i = at.index(payload.len());
        payload[i] = byte;
        for key in ApiKey::ALL {
            if let Ok((cid, Ok(decoded))) = decode_response(key, payload.clone().freeze(), &limits) {
                let mut again = BytesMut::new();
                encode_response(cid, &decoded, &mut again);
                let redecoded = decode_response(key, payload_of(&again).freeze(), &limits);
                prop_assert_eq!(redecoded, Ok((cid, Ok(decoded))));
            }
        }
    }
}
