//! Topic-level `compression.type`: batches that arrive in another codec
//! are rewritten in the topic's, as Kafka does. Offsets, timestamps and the
//! producer's id, epoch and sequence are kept; control and transactional
//! batches are stored as they came.

use borges_net::batch::{decode_records, BatchHeader, Compression, RecordBatchBuilder};
use borges_net::protocol::ErrorCode;
use bytes::BytesMut;

use crate::shard::PartError;

/// Rewrites every batch of `records` not already in `codec`.
pub fn to_codec(records: BytesMut, codec: Compression) -> Result<BytesMut, PartError> {
    let invalid = |e: borges_net::batch::BatchError| (ErrorCode::InvalidRecord, e.to_string());
    let mut pos = 0;
    let mut needs = false;
    while pos < records.len() {
        let h = BatchHeader::parse(&records[pos..]).map_err(invalid)?;
        if h.compression().map_err(invalid)? != codec && !h.is_control() && !h.is_transactional() {
            needs = true;
        }
        pos += h.total_len().min(records.len() - pos).max(1);
    }
    if !needs {
        return Ok(records);
    }
    let mut out = BytesMut::with_capacity(records.len());
    let mut pos = 0;
    while pos < records.len() {
        let h = BatchHeader::parse(&records[pos..]).map_err(invalid)?;
        let end = pos + h.total_len();
        if end > records.len() {
            return Err((ErrorCode::InvalidRecord, "truncated record batch".into()));
        }
        let batch = &records[pos..end];
        if h.compression().map_err(invalid)? == codec || h.is_control() || h.is_transactional() {
            out.extend_from_slice(batch);
        } else {
            let mut b =
                RecordBatchBuilder::new(codec).producer(h.producer_id, h.producer_epoch, h.base_sequence);
            for r in decode_records(batch).map_err(invalid)? {
                let headers: Vec<(&str, Option<&[u8]>)> = r
                    .headers
                    .iter()
                    .map(|x| (x.key.as_str(), x.value.as_deref()))
                    .collect();
                b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
            }
            out.extend_from_slice(&b.build().map_err(invalid)?);
        }
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_other_codecs() {
        let mut b = RecordBatchBuilder::new(Compression::None);
        for i in 0..20u8 {
            b.push(1000 + i as i64, Some(&[i]), Some(&[i; 50]), &[("h", Some(b"v"))]);
        }
        let plain = b.build().unwrap();
        let lz4 = to_codec(plain.clone(), Compression::Lz4).unwrap();
        let h = BatchHeader::parse(&lz4).unwrap();
        assert_eq!(h.compression().unwrap(), Compression::Lz4);
        assert_eq!(decode_records(&lz4).unwrap(), decode_records(&plain).unwrap());
        let again = to_codec(lz4.clone(), Compression::Lz4).unwrap();
        assert_eq!(again, lz4);
        assert!(to_codec(
            BytesMut::from(&b"garbage that is not a batch at all, long enough to parse"[..]),
            Compression::Lz4
        )
        .is_err());
    }
}
