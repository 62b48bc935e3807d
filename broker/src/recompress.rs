//! Topic-level `compression.type`: batches that arrive in another codec
//! are rewritten in the topic's, as Kafka does. Offsets, timestamps and the
//! producer's id, epoch and sequence are kept; control and transactional
//! batches are stored as they came.

use borges_net::batch::{decode_records_capped, BatchError, BatchHeader, Compression, RecordBatchBuilder};
use borges_net::protocol::ErrorCode;
use bytes::BytesMut;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::shard::PartError;

fn invalid(e: BatchError) -> PartError {
    (ErrorCode::InvalidRecord, e.to_string())
}

/// Whether a batch of `records` is stored as it came in a `codec` topic.
fn keeps(h: &BatchHeader, codec: Compression) -> Result<bool, PartError> {
    Ok(h.compression().map_err(invalid)? == codec || h.is_control() || h.is_transactional())
}

/// Whether any batch of `records` is to be rewritten in `codec` (reads
/// only the batch headers).
pub fn needs_rewrite(records: &[u8], codec: Compression) -> Result<bool, PartError> {
    let mut pos = 0;
    while pos < records.len() {
        let h = BatchHeader::parse(&records[pos..]).map_err(invalid)?;
        if !keeps(&h, codec)? {
            return Ok(true);
        }
        pos += h.total_len().min(records.len() - pos).max(1);
    }
    Ok(false)
}

/// Rewrites every batch of `records` not already in `codec`. What it
/// decompresses is taken from `budget` (shared by every partition of one
/// produce; `limit` is its size, for the error): past it, `MessageTooLarge`
/// at once, and decompression stops there. It yields to the shard between
/// batches, so that a produce full of small, highly compressed batches
/// neither exhausts memory nor stalls the shard.
pub async fn to_codec(
    records: BytesMut,
    codec: Compression,
    budget: &AtomicUsize,
    limit: usize,
) -> Result<BytesMut, PartError> {
    if !needs_rewrite(&records, codec)? {
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
        if keeps(&h, codec)? {
            out.extend_from_slice(batch);
        } else {
            let left = budget.load(Ordering::Relaxed);
            let (decoded, section_len) = decode_records_capped(batch, left).map_err(|e| match e {
                BatchError::TooLarge { .. } => (
                    ErrorCode::MessageTooLarge,
                    format!(
                        "the records decompress to more than {limit} bytes, \
                         the most this broker recompresses in one produce"
                    ),
                ),
                e => invalid(e),
            })?;
            let mut b =
                RecordBatchBuilder::new(codec).producer(h.producer_id, h.producer_epoch, h.base_sequence);
            for r in decoded {
                let headers: Vec<(&str, Option<&[u8]>)> = r
                    .headers
                    .iter()
                    .map(|x| (x.key.as_str(), x.value.as_deref()))
                    .collect();
                b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
            }
            // What this batch decompressed to counts against the rest of
            // the produce (shards may overdraw it by a batch each).
            let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(section_len))
            });
            out.extend_from_slice(&b.build().map_err(invalid)?);
            glommio::yield_if_needed().await;
        }
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use borges_net::batch::decode_records;

    #[test]
    fn rewrites_only_other_codecs() {
        let mut b = RecordBatchBuilder::new(Compression::None);
        for i in 0..20u8 {
            b.push(1000 + i as i64, Some(&[i]), Some(&[i; 50]), &[("h", Some(b"v"))]);
        }
        let plain = b.build().unwrap();
        let lz4 = rewrite(plain.clone(), Compression::Lz4, 1 << 20).unwrap();
        let h = BatchHeader::parse(&lz4).unwrap();
        assert_eq!(h.compression().unwrap(), Compression::Lz4);
        assert_eq!(decode_records(&lz4).unwrap(), decode_records(&plain).unwrap());
        let again = rewrite(lz4.clone(), Compression::Lz4, 1 << 20).unwrap();
        assert_eq!(again, lz4);
        assert!(rewrite(
            BytesMut::from(&b"garbage that is not a batch at all, long enough to parse"[..]),
            Compression::Lz4,
            1 << 20
        )
        .is_err());
    }

    fn rewrite(records: BytesMut, codec: Compression, limit: usize) -> Result<BytesMut, PartError> {
        run(async move { to_codec(records, codec, &AtomicUsize::new(limit), limit).await })
    }

    fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("an executor")
            .run(f)
    }

    #[test]
    fn a_compression_bomb_is_refused_with_message_too_large() {
        // 64 batches of 1 MiB of zeros each, zstd: a few hundred bytes each.
        let mut all = BytesMut::new();
        for _ in 0..64 {
            let mut b = RecordBatchBuilder::new(Compression::Zstd);
            b.push(1, None, Some(&vec![0u8; 1 << 20]), &[]);
            all.extend_from_slice(&b.build().unwrap());
        }
        assert!(all.len() < 64 << 10, "the bomb is small: {} bytes", all.len());
        let err = rewrite(all.clone(), Compression::Lz4, 8 << 20).unwrap_err();
        assert_eq!(err.0, ErrorCode::MessageTooLarge, "{err:?}");
        // Within the budget it is recompressed.
        let ok = rewrite(all, Compression::Lz4, 128 << 20).unwrap();
        assert_eq!(
            BatchHeader::parse(&ok).unwrap().compression().unwrap(),
            Compression::Lz4
        );
    }
}
