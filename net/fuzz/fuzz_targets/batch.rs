//! Fuzzes every RecordBatch decoder on arbitrary bytes.
//!
//! Random bytes almost never carry a matching CRC-32C, which would stop the
//! fuzzer at the checksum; so each input is also run a second time with its
//! CRC recomputed, letting the record and decompression code see it.

#![no_main]

use borges_net::batch::{
    decode_records, update_crc, validate_batch_deep, BatchHeader, BatchIter, BATCH_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fn run(buf: &[u8]) {
    let _ = BatchHeader::parse(buf);
    let deep = validate_batch_deep(buf);
    let decoded = decode_records(buf);
    // A batch that passes the deep check must decode, and vice versa.
    assert_eq!(deep.is_ok(), decoded.is_ok());
    if let (Ok(h), Ok(records)) = (deep, decoded) {
        assert_eq!(records.len(), h.records_count as usize);
    }
    let mut it = BatchIter::new(buf);
    for (_, range) in it.by_ref().flatten() {
        let _ = validate_batch_deep(&buf[range]);
    }
    assert!(it.position() <= buf.len());
}

fuzz_target!(|data: &[u8]| {
    run(data);
    if data.len() >= BATCH_HEADER_LEN {
        let mut fixed = data.to_vec();
        update_crc(&mut fixed);
        run(&fixed);
    }
});
