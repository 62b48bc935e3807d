//! Property tests: build/decode round trips for every built-in codec, and
//! no decoder panics on arbitrary or mutated input.

use bytes::Bytes;
use proptest::prelude::*;

use borges_net::batch::{
    decode_records, decode_records_bytes, update_crc, validate_batch, validate_batch_deep, BatchHeader,
    BatchIter, Compression, Record, RecordBatchBuilder, RecordHeader, BATCH_HEADER_LEN,
};

#[derive(Debug, Clone)]
struct Input {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_opt(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..max))
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop_oneof![any::<i64>(), 1_600_000_000_000i64..1_800_000_000_000],
        bytes_opt(40),
        bytes_opt(300),
        prop::collection::vec((".{0,12}", bytes_opt(20)), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Input {
            timestamp,
            key,
            value,
            headers,
        })
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn build(c: Compression, inputs: &[Input], base_offset: i64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(c).base_offset(base_offset);
    for r in inputs {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    assert_eq!(b.len(), inputs.len());
    b.build().unwrap().to_vec()
}

fn expected(inputs: &[Input], base_offset: i64) -> Vec<Record> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: base_offset + i as i64,
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| RecordHeader {
                    key: k.clone(),
                    value: v.clone().map(Bytes::from),
                })
                .collect(),
        })
        .collect()
}

/// Runs every decoder on `buf`; the only requirement is that none panics
/// and that the deep check and full decode agree.
fn exercise(buf: &[u8]) {
    let _ = BatchHeader::parse(buf);
    let _ = validate_batch(buf);
    let deep = validate_batch_deep(buf);
    let decoded = decode_records(buf);
    assert_eq!(deep.is_ok(), decoded.is_ok(), "{deep:?} vs {decoded:?}");
    if let Ok(h) = deep {
        assert_eq!(decoded.unwrap().len(), h.records_count as usize);
    }
    for (_, r) in BatchIter::new(buf).flatten() {
        let _ = validate_batch_deep(&buf[r]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(
        c in codec(),
        inputs in prop::collection::vec(input(), 1..30),
        base_offset in 0i64..1 << 40,
    ) {
        let built = build(c, &inputs, base_offset);
        let h = validate_batch_deep(&built).unwrap();
        prop_assert_eq!(h.compression(), Ok(c));
        prop_assert_eq!(h.records_count as usize, inputs.len());
        prop_assert_eq!(h.last_offset(), base_offset + inputs.len() as i64 - 1);
        prop_assert_eq!(h.base_timestamp, inputs[0].timestamp);
        prop_assert_eq!(h.max_timestamp, inputs.iter().map(|r| r.timestamp).max().unwrap());
        let want = expected(&inputs, base_offset);
        prop_assert_eq!(&decode_records(&built).unwrap(), &want);
        prop_assert_eq!(&decode_records_bytes(&Bytes::from(built.clone())).unwrap(), &want);
        if c == Compression::None {
            let est = {
                let mut b = RecordBatchBuilder::new(c);
                for r in &inputs {
                    b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &[]);
                }
                b.estimated_size()
            };
            prop_assert!(est <= built.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..400)) {
        exercise(&buf);
    }

    #[test]
    fn arbitrary_bytes_with_a_plausible_header_never_panic(
        mut buf in prop::collection::vec(any::<u8>(), BATCH_HEADER_LEN..400),
        codec_id in 0u8..8,
        count in 0i32..40,
    ) {
        // Make the header pass so the record decoders see the garbage.
        let len = (buf.len() - 12) as i32;
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        buf[16] = 2;
        buf[21] = 0;
        buf[22] = codec_id;
        buf[23..27].copy_from_slice(&count.to_be_bytes());
        buf[57..61].copy_from_slice(&count.to_be_bytes());
        update_crc(&mut buf);
        exercise(&buf);
    }

    #[test]
    fn mutated_batches_never_panic(
        c in codec(),
        inputs in prop::collection::vec(input(), 1..8),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        fix_crc in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut buf = build(c, &inputs, 0);
        for (at, x) in &mutations {
            let i = at.index(buf.len());
            buf[i] ^= *x;
        }
        if truncate {
            buf.truncate(cut.index(buf.len()));
        }
        if fix_crc && buf.len() >= BATCH_HEADER_LEN {
            update_crc(&mut buf);
        }
        exercise(&buf);
        // Also as a segment: a valid batch, the mutant, a valid batch.
        let good = build(c, &inputs, 0);
        let mut seg = good.clone();
        seg.extend_from_slice(&buf);
        seg.extend_from_slice(&good);
        let mut it = BatchIter::new(&seg);
        prop_assert!(matches!(it.next(), Some(Ok(_))));
        for _ in it.by_ref() {}
        prop_assert!(it.position() <= seg.len());
    }
}

#[test]
fn large_batch_round_trips() {
    // The storage benchmark's shape: 10,000 records of 100 bytes (~1 MiB).
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut b = RecordBatchBuilder::with_capacity(c, 1 << 20);
        let value = [7u8; 100];
        for i in 0..10_000i64 {
            b.push(1_700_000_000_000 + i, None, Some(&value), &[]);
        }
        assert!(b.estimated_size() > 1_000_000);
        let built = b.build().unwrap();
        let h = validate_batch_deep(&built).unwrap();
        assert_eq!(h.records_count, 10_000);
        assert_eq!(h.last_offset_delta, 9_999);
        let recs = decode_records(&built).unwrap();
        assert_eq!(recs.len(), 10_000);
        assert_eq!(recs[9_999].offset, 9_999);
        assert_eq!(recs[9_999].timestamp, 1_700_000_000_000 + 9_999);
        if c != Compression::None {
            assert!(built.len() < 200_000, "{c:?} {}", built.len());
        }
    }
}

#[test]
fn decompression_bomb_is_capped() {
    // 300 concatenated zstd frames of 1 MiB of zeros each are a few KiB;
    // decoding must stop at MAX_RECORDS_LEN instead of inflating them all.
    let frame = zstd::bulk::compress(&vec![0u8; 1 << 20], 1).unwrap();
    let payload = frame.repeat(300);
    let mut buf = RecordBatchBuilder::new(Compression::None);
    buf.push(0, None, None, &[]);
    let mut b = buf.build().unwrap().to_vec();
    b.truncate(BATCH_HEADER_LEN);
    b.extend_from_slice(&payload);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[22] = Compression::Zstd.id();
    update_crc(&mut b);
    assert!(matches!(
        validate_batch_deep(&b),
        Err(borges_net::batch::BatchError::TooLarge { .. })
    ));
}
