//! Metadata records, batches and snapshots from arbitrary bytes: a typed
//! error or a value, never a panic; whatever decodes re-encodes to the
//! same value and applies or is refused without a panic.
#![no_main]

use borges_meta::image::MetadataImage;
use borges_meta::record::{decode_batch, decode_record, encode_batch, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = decode_record(data) {
        let mut out = Vec::new();
        encode_record(&rec, &mut out);
        assert_eq!(decode_record(&out).unwrap(), rec);
    }
    if let Ok(batch) = decode_batch(data) {
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
        let mut img = MetadataImage::default();
        let _ = img.apply_batch(1, &batch);
        let snap = img.encode_snapshot();
        let back = MetadataImage::decode_snapshot(&snap).unwrap();
        assert_eq!(back.to_records(), img.to_records());
    }
    let _ = MetadataImage::decode_snapshot(data);
});
