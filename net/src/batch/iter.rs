//! Splitting a buffer of concatenated batches, as a log segment stores them.

use std::iter::FusedIterator;
use std::ops::Range;

use super::{BatchError, BatchHeader, BATCH_HEADER_LEN};

/// Iterates over the complete batches at the start of `buf`. Yields
/// `Ok((header, range))` per complete batch, where `range` is its bytes in
/// `buf`; stops (`None`) at an incomplete trailing batch, which is what a
/// torn write at the end of a segment looks like; yields `Err` once, then
/// `None`, on a malformed header. Does not check CRCs: callers run
/// `validate_batch` on `&buf[range]`.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Bytes consumed so far: the end of the last complete batch yielded.
    /// After the iterator ends this is where valid data stops (the length to
    /// truncate a segment to during recovery, if nothing failed).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.pos..];
        // Fewer bytes than a header: an incomplete tail, not corruption.
        if rest.len() < BATCH_HEADER_LEN {
            return None;
        }
        match BatchHeader::parse(rest) {
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
            Ok(h) => {
                let total = h.total_len();
                if rest.len() < total {
                    return None;
                }
                let range = self.pos..self.pos + total;
                self.pos += total;
                Some(Ok((h, range)))
            }
        }
    }
}

impl FusedIterator for BatchIter<'_> {}
