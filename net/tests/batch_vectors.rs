//! Fixed byte vectors, negative cases and `BatchIter`, for the RecordBatch v2 codec.
//!
//! The vectors are literal bytes, not produced by the builder: one built by
//! hand field by field (its CRC-32C computed independently with a bitwise
//! reference implementation), and batches written by Apache Kafka itself
//! (from a broker's log segments), so the codec is checked against the
//! real format and not only against itself.

use bytes::Bytes;

use borges_net::batch::{
    decode_records, set_base_offset, set_partition_leader_epoch, update_crc, validate_batch,
    validate_batch_deep, BatchError, BatchHeader, BatchIter, Compression, Record, RecordBatchBuilder,
    RecordHeader, TimestampType, BATCH_HEADER_LEN, MAX_BATCH_LEN,
};

/// Decodes the hex strings the vectors are written in; whitespace ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const TS: i64 = 1_700_000_000_000; // 0x0000018bcfe56800

/// Two records: (TS, key "k", value "hello", no headers) and
/// (TS+5, null key, value "v2", header "h" = "x"). Producer fields -1, leader epoch -1.
fn hand_built() -> Vec<u8> {
    let annotated = "
        0000000000000000  baseOffset 0
        0000004b          batchLength 75 = 49 + 26 bytes of records
        ffffffff          partitionLeaderEpoch -1
        02                magic
        77321f99          crc
        0000              attributes: no compression, CreateTime
        00000001          lastOffsetDelta 1
        0000018bcfe56800  baseTimestamp
        0000018bcfe56805  maxTimestamp
        ffffffffffffffff  producerId -1
        ffff              producerEpoch -1
        ffffffff          baseSequence -1
        00000002          recordsCount 2
        18 00 00 00 02 6b 0a 68656c6c6f 00
        18 00 0a 02 01 04 7632 02 02 68 02 78
    ";
    // Each line is hex, then two spaces and a comment.
    let digits: String = annotated
        .lines()
        .map(|l| l.trim().split("  ").next().unwrap_or(""))
        .collect();
    hex(&digits)
}

/// The CRC of `hand_built`, from a bitwise CRC-32C (poly 0x82F63B78) run
/// over bytes 21.. outside this crate.
const HAND_BUILT_CRC: u32 = 0x7732_1f99;

/// A batch written by Apache Kafka: one record, null key, value
/// "Hello Kafka!", idempotent producer id 0 epoch 0 sequence 0.
const KAFKA_HELLO: &str = "0000000000000000000000440000000002abfd049100000000000000000191e05b6d8b\
00000191e05b6d8b00000000000000000000000000000000000124000000011848656c6c6f204b61666b612100";

/// Two concatenated batches from a Kafka KRaft metadata log (base offsets 1
/// and 2; one and two records; leader epoch 1).
const KAFKA_METADATA: &str = "00000000000000010000004f0000000102b069457c00000000000000000191e05af818\
00000191e05af818ffffffffffffffffffffffffffff000000013a000000012e010c00116d657461646174612e7665\
7273696f6e0014000000000000000000020000009a000000010286832f7300000000000100000191e05b2d1500000191\
e05b2d15ffffffffffffffffffffffffffff000000023c000000013001020004666f6f000000000000400080000000\
00000085000090010000020182010103010000000000000000000040008000000000000085020000000102000000010101\
00000001000000000000000002100000000000400080000000000000010000";

#[test]
fn crc32c_sanity_anchor() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn hand_built_vector_has_the_expected_crc() {
    let b = hand_built();
    assert_eq!(b.len(), 87);
    assert_eq!(crc32c::crc32c(&b[21..]), HAND_BUILT_CRC);
}

#[test]
fn builder_reproduces_hand_built_vector() {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.push(TS, Some(b"k"), Some(b"hello"), &[]);
    builder.push(TS + 5, None, Some(b"v2"), &[("h", Some(b"x"))]);
    assert_eq!(builder.len(), 2);
    assert_eq!(builder.estimated_size(), 87);
    let built = builder.build().unwrap();
    assert_eq!(&built[..], &hand_built()[..]);
}

#[test]
fn hand_built_vector_parses_validates_and_decodes() {
    let b = hand_built();
    let h = BatchHeader::parse(&b).unwrap();
    assert_eq!(
        h,
        BatchHeader {
            base_offset: 0,
            batch_length: 75,
            partition_leader_epoch: -1,
            magic: 2,
            crc: HAND_BUILT_CRC,
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: TS,
            max_timestamp: TS + 5,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 2,
        }
    );
    assert_eq!(h.to_bytes()[..], b[..BATCH_HEADER_LEN]);
    assert_eq!(h.total_len(), 87);
    assert_eq!(h.last_offset(), 1);
    assert_eq!(h.compression(), Ok(Compression::None));
    assert!(!h.is_control() && !h.is_transactional());
    assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
    assert_eq!(validate_batch(&b), Ok(h));
    assert_eq!(validate_batch_deep(&b), Ok(h));
    assert_eq!(
        decode_records(&b).unwrap(),
        vec![
            Record {
                offset: 0,
                timestamp: TS,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![],
            },
            Record {
                offset: 1,
                timestamp: TS + 5,
                key: None,
                value: Some(Bytes::from_static(b"v2")),
                headers: vec![RecordHeader {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"x")),
                }],
            },
        ]
    );
}

#[test]
fn kafka_written_batch_decodes_and_builder_matches_it() {
    let b = hex(KAFKA_HELLO);
    let h = validate_batch_deep(&b).unwrap();
    assert_eq!(h.crc, 0xabfd_0491);
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (0, 0, 0));
    let recs = decode_records(&b).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"Hello Kafka!"[..]));
    assert_eq!(recs[0].key, None);
    assert_eq!(recs[0].timestamp, 0x0191_e05b_6d8b);

    // Byte compatibility: the builder, given the same inputs, writes the
    // very bytes Kafka wrote.
    let mut builder = RecordBatchBuilder::new(Compression::None).producer(0, 0, 0);
    builder.push(0x0191_e05b_6d8b, None, Some(b"Hello Kafka!"), &[]);
    let mut built = builder.build().unwrap();
    set_partition_leader_epoch(&mut built, 0);
    assert_eq!(&built[..], &b[..]);
}

#[test]
fn kafka_written_segment_iterates() {
    let seg = hex(KAFKA_METADATA);
    let batches: Vec<_> = BatchIter::new(&seg).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].0.base_offset, 1);
    assert_eq!(batches[0].1, 0..91);
    assert_eq!(batches[1].0.base_offset, 2);
    assert_eq!(batches[1].0.records_count, 2);
    assert_eq!(batches[1].1, 91..257);
    for (h, range) in &batches {
        assert_eq!(validate_batch_deep(&seg[range.clone()]), Ok(*h));
        let recs = decode_records(&seg[range.clone()]).unwrap();
        assert_eq!(recs.len(), h.records_count as usize);
        assert_eq!(recs.last().unwrap().offset, h.last_offset());
    }
}

// ---------- negative cases ----------

fn sample(compression: Compression) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(compression);
    for i in 0..20u8 {
        let v = vec![i; 50];
        b.push(TS + i as i64, Some(&[i]), Some(&v), &[("hk", Some(b"hv"))]);
    }
    b.build().unwrap().to_vec()
}

#[test]
fn flipped_byte_in_crc_area_is_crc_mismatch() {
    let good = hand_built();
    for i in 21..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x01;
        match validate_batch(&b) {
            Err(BatchError::CrcMismatch { stored, computed }) => {
                assert_eq!(stored, HAND_BUILT_CRC);
                assert_ne!(computed, stored);
            }
            // A flip in lastOffsetDelta / recordsCount sign or codec bits may
            // be caught by the header checks first; both are rejections.
            Err(_) => assert!(i < BATCH_HEADER_LEN, "byte {i}"),
            Ok(_) => panic!("flip at {i} accepted"),
        }
        assert!(validate_batch_deep(&b).is_err());
        assert!(decode_records(&b).is_err());
    }
    // Flipping the CRC itself is also a mismatch.
    let mut b = good.clone();
    b[20] ^= 0x80;
    assert!(matches!(validate_batch(&b), Err(BatchError::CrcMismatch { .. })));
}

#[test]
fn rewriting_fields_outside_the_crc_keeps_it_valid() {
    let mut b = hand_built();
    set_base_offset(&mut b, 1_000_000);
    set_partition_leader_epoch(&mut b, 7);
    let h = validate_batch_deep(&b).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (1_000_000, 7));
    assert_eq!(h.last_offset(), 1_000_001);
    let recs = decode_records(&b).unwrap();
    assert_eq!((recs[0].offset, recs[1].offset), (1_000_000, 1_000_001));
}

#[test]
#[should_panic]
fn set_base_offset_panics_on_short_buffer() {
    set_base_offset(&mut [0u8; BATCH_HEADER_LEN - 1], 1);
}

#[test]
fn wrong_magic() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut b = hand_built();
        b[16] = magic;
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::InvalidMagic(magic as i8)));
        assert_eq!(validate_batch(&b), Err(BatchError::InvalidMagic(magic as i8)));
    }
}

#[test]
fn truncated() {
    let b = hand_built();
    assert_eq!(
        BatchHeader::parse(&b[..60]),
        Err(BatchError::TooShort {
            needed: 61,
            available: 60
        })
    );
    assert_eq!(
        validate_batch(&b[..86]),
        Err(BatchError::TooShort {
            needed: 87,
            available: 86
        })
    );
    for n in 0..b.len() {
        assert!(validate_batch_deep(&b[..n]).is_err());
        assert!(decode_records(&b[..n]).is_err());
    }
    let mut longer = b.clone();
    longer.push(0);
    assert_eq!(
        validate_batch(&longer),
        Err(BatchError::LengthMismatch {
            expected: 87,
            actual: 88
        })
    );
}

fn with_batch_length(len: i32) -> Vec<u8> {
    let mut b = hand_built();
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn batch_length_out_of_range() {
    for len in [0, 48, -1, i32::MIN, MAX_BATCH_LEN as i32 + 1, i32::MAX] {
        let b = with_batch_length(len);
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::InvalidLength(len as i64)));
        assert_eq!(validate_batch(&b), Err(BatchError::InvalidLength(len as i64)));
    }
    // In range but inconsistent with the buffer.
    assert_eq!(
        validate_batch(&with_batch_length(74)),
        Err(BatchError::LengthMismatch {
            expected: 86,
            actual: 87
        })
    );
    assert_eq!(
        validate_batch(&with_batch_length(76)),
        Err(BatchError::TooShort {
            needed: 88,
            available: 87
        })
    );
    // Exactly a header with no records is a legal (compacted-away) batch.
    let mut empty = hand_built()[..BATCH_HEADER_LEN].to_vec();
    empty[8..12].copy_from_slice(&49i32.to_be_bytes());
    empty[57..61].copy_from_slice(&0i32.to_be_bytes());
    update_crc(&mut empty);
    assert!(validate_batch_deep(&empty).is_ok());
    assert_eq!(decode_records(&empty), Ok(vec![]));
}

#[test]
fn negative_header_counts() {
    let mut b = hand_built();
    b[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        BatchHeader::parse(&b),
        Err(BatchError::InvalidHeader(_))
    ));
    let mut b = hand_built();
    b[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        BatchHeader::parse(&b),
        Err(BatchError::InvalidHeader(_))
    ));
}

fn with_records_count(mut b: Vec<u8>, n: i32) -> Vec<u8> {
    b[57..61].copy_from_slice(&n.to_be_bytes());
    update_crc(&mut b);
    b
}

#[test]
fn records_count_lying() {
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let good = sample(c);
        assert!(validate_batch_deep(&good).is_ok());
        let more = with_records_count(good.clone(), 21);
        // The cheap check does not look at records.
        assert!(validate_batch(&more).is_ok());
        assert_eq!(
            validate_batch_deep(&more),
            Err(BatchError::RecordCountMismatch {
                header: 21,
                actual: 20
            })
        );
        assert!(decode_records(&more).is_err());
        let fewer = with_records_count(good.clone(), 5);
        assert_eq!(
            validate_batch_deep(&fewer),
            Err(BatchError::RecordCountMismatch {
                header: 5,
                actual: 20
            })
        );
        let huge = with_records_count(good, i32::MAX);
        assert!(matches!(
            validate_batch_deep(&huge),
            Err(BatchError::RecordCountMismatch {
                header: i32::MAX,
                actual: 20
            })
        ));
        assert!(decode_records(&huge).is_err());
    }
}

#[test]
fn offset_delta_beyond_last_offset_delta() {
    let mut b = hand_built();
    b[23..27].copy_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta 0, but record 1 has delta 1
    update_crc(&mut b);
    assert!(validate_batch(&b).is_ok());
    assert!(matches!(
        validate_batch_deep(&b),
        Err(BatchError::InvalidRecord(_))
    ));
}

#[test]
fn offset_deltas_must_increase() {
    let mut b = hand_built();
    b[61 + 13 + 3] = 0x00; // second record's offsetDelta 1 -> 0
    update_crc(&mut b);
    assert!(matches!(
        validate_batch_deep(&b),
        Err(BatchError::InvalidRecord(_))
    ));
}

#[test]
fn record_length_lies() {
    let mut b = hand_built();
    b[61] = 0x16; // first record claims 11 bytes instead of 12
    update_crc(&mut b);
    assert!(matches!(
        validate_batch_deep(&b),
        Err(BatchError::InvalidRecord(_))
    ));
    // A key length of 2^30 must be an error, not an allocation.
    let mut b = hand_built();
    b[65] = 0x80; // keyLength varint becomes 0x80 0x6b ... (a large length)
    update_crc(&mut b);
    assert!(matches!(
        validate_batch_deep(&b),
        Err(BatchError::InvalidRecord(_))
    ));
}

#[test]
fn invalid_header_key_utf8() {
    let mut b = hand_built();
    let at = b.len() - 3; // header key "h", before its value length and "x"
    assert_eq!(b[at], b'h');
    b[at] = 0xff;
    update_crc(&mut b);
    assert_eq!(
        validate_batch_deep(&b),
        Err(BatchError::InvalidRecord("header key is not UTF-8"))
    );
}

#[test]
fn undefined_codec_ids() {
    for codec in 5u8..=7 {
        let mut b = hand_built();
        b[22] = codec;
        update_crc(&mut b);
        assert_eq!(validate_batch(&b), Err(BatchError::UnsupportedCompression(codec)));
        assert_eq!(
            BatchHeader::parse(&b).unwrap().compression(),
            Err(BatchError::UnsupportedCompression(codec))
        );
    }
    // gzip and snappy are defined codecs but not built in.
    for codec in [1u8, 2] {
        let mut b = hand_built();
        b[22] = codec;
        update_crc(&mut b);
        assert!(validate_batch(&b).is_ok());
        assert_eq!(
            validate_batch_deep(&b),
            Err(BatchError::UnsupportedCompression(codec))
        );
    }
    assert_eq!(
        RecordBatchBuilder::new(Compression::Gzip).tap_push().build(),
        Err(BatchError::UnsupportedCompression(1))
    );
}

trait TapPush {
    fn tap_push(self) -> Self;
}

impl TapPush for RecordBatchBuilder {
    fn tap_push(mut self) -> Self {
        self.push(0, None, Some(b"x"), &[]);
        self
    }
}

#[test]
fn garbage_in_compressed_payload() {
    for c in [Compression::Lz4, Compression::Zstd] {
        let good = sample(c);
        assert!(validate_batch_deep(&good).is_ok());
        // Corrupt a byte in the middle of the compressed stream, fix the CRC so
        // the decompressor (not the checksum) has to reject it.
        for at in [
            BATCH_HEADER_LEN,
            BATCH_HEADER_LEN + 4,
            good.len() / 2,
            good.len() - 1,
        ] {
            let mut b = good.clone();
            b[at] ^= 0x5a;
            update_crc(&mut b);
            let deep = validate_batch_deep(&b);
            assert!(deep.is_err(), "{c:?} corruption at {at} accepted");
            assert_eq!(deep.is_err(), decode_records(&b).is_err());
        }
        // Replace the whole payload with noise.
        let mut b = good.clone();
        for (i, x) in b[BATCH_HEADER_LEN..].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(31).wrapping_add(7);
        }
        update_crc(&mut b);
        assert!(matches!(validate_batch_deep(&b), Err(BatchError::Compression(_))));
    }
}

#[test]
fn builder_empty_is_an_error() {
    assert_eq!(
        RecordBatchBuilder::new(Compression::None).build(),
        Err(BatchError::Empty)
    );
    assert!(RecordBatchBuilder::new(Compression::Zstd).is_empty());
}

#[test]
fn builder_options() {
    let mut b = RecordBatchBuilder::new(Compression::Lz4)
        .producer(42, 3, 100)
        .base_offset(500)
        .partition_leader_epoch(9)
        .transactional(true);
    b.push(10, None, None, &[("a", None)]);
    b.push(5, Some(b""), Some(b""), &[]);
    let built = b.build().unwrap();
    let h = validate_batch_deep(&built).unwrap();
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, 100));
    assert_eq!((h.base_offset, h.partition_leader_epoch), (500, 9));
    assert!(h.is_transactional());
    assert_eq!(h.compression(), Ok(Compression::Lz4));
    // baseTimestamp is the first record's, maxTimestamp the largest.
    assert_eq!((h.base_timestamp, h.max_timestamp), (10, 10));
    let recs = decode_records(&built).unwrap();
    assert_eq!(recs[1].timestamp, 5);
    assert_eq!(recs[1].key.as_deref(), Some(&b""[..]));
    assert_eq!(recs[0].headers[0].value, None);
}

#[test]
fn log_append_time_stamps_every_record_with_max_timestamp() {
    let mut b = hand_built();
    b[22] |= 0x08;
    b[35..43].copy_from_slice(&777i64.to_be_bytes());
    update_crc(&mut b);
    let h = validate_batch_deep(&b).unwrap();
    assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    let recs = decode_records(&b).unwrap();
    assert!(recs.iter().all(|r| r.timestamp == 777));
}

// ---------- BatchIter ----------

#[test]
fn batch_iter_over_concatenated_batches_with_truncated_tail() {
    let a = hand_built();
    let b = sample(Compression::Zstd);
    let c = sample(Compression::None);
    let mut seg = Vec::new();
    seg.extend_from_slice(&a);
    seg.extend_from_slice(&b);
    seg.extend_from_slice(&c);
    let complete = seg.len();
    for tail in [0, 1, 30, 61, c.len() - 1] {
        let mut s = seg.clone();
        s.extend_from_slice(&c[..tail]);
        let mut it = BatchIter::new(&s);
        let mut ranges = Vec::new();
        for item in it.by_ref() {
            let (h, r) = item.unwrap();
            assert_eq!(validate_batch(&s[r.clone()]), Ok(h));
            ranges.push(r);
        }
        assert_eq!(
            ranges,
            vec![
                0..a.len(),
                a.len()..a.len() + b.len(),
                a.len() + b.len()..complete
            ]
        );
        assert_eq!(it.position(), complete);
        assert_eq!(it.remaining().len(), tail);
        assert!(it.next().is_none());
    }
}

#[test]
fn batch_iter_stops_after_one_error() {
    let a = hand_built();
    let mut s = a.clone();
    let mut bad = a.clone();
    bad[16] = 1;
    s.extend_from_slice(&bad);
    s.extend_from_slice(&a);
    let mut it = BatchIter::new(&s);
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.next(), Some(Err(BatchError::InvalidMagic(1))));
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(it.position(), a.len());
    assert_eq!(BatchIter::new(&[]).next(), None);
}
