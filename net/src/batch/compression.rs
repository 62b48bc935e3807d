//! Codecs for the records section. Kafka compresses everything after the
//! 61-byte header as one stream: LZ4 in the LZ4 *frame* format (64 KiB
//! independent blocks, no checksums, as Kafka's producer writes it) and zstd
//! as a standard zstd frame. Gzip and snappy are recognised but not built in.

use std::io::{Read, Write};

use bytes::{BufMut, BytesMut};
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{BatchError, Compression, MAX_RECORDS_LEN};

/// zstd's own default level, which Kafka also uses.
const ZSTD_LEVEL: i32 = 3;

fn codec_error(e: impl std::fmt::Display) -> BatchError {
    BatchError::Compression(e.to_string())
}

/// Appends `src` (a records section) compressed with `codec` to `out`, as
/// Kafka's producer writes it. Storage recompresses compacted batches with it.
pub fn compress(codec: Compression, src: &[u8], out: &mut BytesMut) -> Result<(), BatchError> {
    match codec {
        Compression::None => {
            out.extend_from_slice(src);
            Ok(())
        }
        Compression::Lz4 => {
            // Matches Kafka's KafkaLZ4BlockOutputStream, which older Kafka
            // decoders require: independent 64 KiB blocks, no content size.
            let info = FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_mode(BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let mut enc = FrameEncoder::with_frame_info(info, out.writer());
            enc.write_all(src).map_err(codec_error)?;
            enc.finish().map_err(codec_error)?;
            Ok(())
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out.writer(), ZSTD_LEVEL).map_err(codec_error)?;
            enc.write_all(src).map_err(codec_error)?;
            enc.finish().map_err(codec_error)?;
            Ok(())
        }
        Compression::Gzip | Compression::Snappy => Err(BatchError::UnsupportedCompression(codec.id())),
    }
}

/// Decompresses a records section, refusing to produce more than
/// `MAX_RECORDS_LEN` bytes however small the input.
pub fn decompress(codec: Compression, src: &[u8]) -> Result<Vec<u8>, BatchError> {
    decompress_capped(codec, src, MAX_RECORDS_LEN)
}

/// `decompress` with a smaller cap: stops with `TooLarge` as soon as the
/// output would pass `max` bytes (never more than `MAX_RECORDS_LEN`), so a
/// small input that expands enormously costs at most `max` bytes of work.
pub fn decompress_capped(codec: Compression, src: &[u8], max: usize) -> Result<Vec<u8>, BatchError> {
    let max = max.min(MAX_RECORDS_LEN);
    match codec {
        Compression::None if src.len() > max => Err(BatchError::TooLarge { size: src.len(), max }),
        Compression::None => Ok(src.to_vec()),
        Compression::Lz4 => read_capped(FrameDecoder::new(src), src.len(), max),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(src).map_err(codec_error)?;
            read_capped(dec, src.len(), max)
        }
        Compression::Gzip | Compression::Snappy => Err(BatchError::UnsupportedCompression(codec.id())),
    }
}

fn read_capped(r: impl Read, compressed_len: usize, max: usize) -> Result<Vec<u8>, BatchError> {
    // The initial guess comes from the (already bounded) input size, never
    // from a size field inside the compressed stream.
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(max));
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(codec_error)?;
    if out.len() > max {
        return Err(BatchError::TooLarge { size: out.len(), max });
    }
    Ok(out)
}
