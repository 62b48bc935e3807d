//! Direct-I/O appends to the active segment.
//!
//! O_DIRECT writes must start and end on 4 KiB boundaries, but batches are
//! any length. The writer keeps the tail of the file in an aligned DMA
//! buffer whose first byte sits on a block boundary: appends are copied into
//! it; a full buffer is sealed and written in the background (up to
//! `writes_in_flight_max` at once); a flush writes the partial buffer padded
//! with zeros to the next block, then starts a new buffer with a copy of the
//! last partial block, which the next write rewrites with more data after
//! it. The padding is never part of the log: the logical size is tracked
//! here, the file is truncated to it when the segment is sealed, and
//! recovery stops at the zeros.
//!
//! Ordering: full-buffer writes never overlap, so they may complete in any
//! order; a padded partial write overlaps the next write of the same block,
//! so a flush waits for it before anything else is issued. The caller
//! (`Log`) serialises flushes and submissions with its I/O lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::io::{DmaBuffer, DmaFile};

use crate::config::ALIGN;
use crate::fsutil::align_down;
use crate::seam::{self, Op};

/// Completion of one background write.
#[derive(Default)]
pub(crate) struct Slot {
    done: Cell<bool>,
    err: RefCell<Option<io::Error>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Slot {
    fn complete(&self, err: Option<io::Error>) {
        *self.err.borrow_mut() = err;
        self.done.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_done(&self) -> bool {
        self.done.get()
    }

    pub fn take_error(&self) -> Option<io::Error> {
        self.err.borrow_mut().take()
    }

    pub async fn wait(self: &Rc<Self>) {
        poll_fn(|cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

pub(crate) struct Inflight {
    pub slot: Rc<Slot>,
    /// Logical end of the data this write carries.
    pub end: u64,
}

/// What the caller must do next to move sealed buffers to the disk.
pub(crate) enum Submit {
    /// Nothing is waiting.
    Idle,
    /// Too many writes in flight: wait for this one.
    Wait(Rc<Slot>),
    /// Grow the file's allocation to this size before writing past it.
    Preallocate(Rc<DmaFile>, u64),
    /// A write was issued; call again.
    Issued,
}

/// The write side of the active segment. Lives inside the log's state on
/// the shard that owns the log; only ever touched synchronously.
pub(crate) struct Writer {
    pub file: Rc<DmaFile>,
    /// The file's path.
    pub path: Rc<PathBuf>,
    cap: usize,
    /// The aligned buffer, allocated when appends arrive: an idle partition
    /// holds only `carry`, so thousands of quiet partitions cost little.
    buf: Option<DmaBuffer>,
    /// While `buf` is `None`: the bytes from `buf_start` to the end (the
    /// partial last block, already on disk), to be copied into the next buffer.
    carry: Vec<u8>,
    /// File position of `buf[0]`, block aligned.
    buf_start: u64,
    buf_len: usize,
    /// Bytes at the start of `buf` that are already on disk (the copied
    /// partial block after a flush).
    buf_on_disk: usize,
    sealed: VecDeque<(DmaBuffer, u64)>,
    pub inflight: VecDeque<Inflight>,
    /// Every byte below this is written to the file.
    pub written_end: u64,
    /// Logical size: every byte appended.
    pub end: u64,
    prealloc_end: u64,
    prealloc_step: u64,
    /// The first write error, kept: once a write failed, what the file
    /// holds from there on is unknown, so every later reap reports it and
    /// `written_end` never moves past the failed write.
    failed: Option<(io::ErrorKind, String)>,
}

impl Writer {
    /// A writer appending at `size`. `tail` must hold the file's bytes from
    /// `align_down(size)` to `size` (the partial last block).
    pub fn new(
        file: Rc<DmaFile>,
        path: PathBuf,
        size: u64,
        tail: &[u8],
        cap: usize,
        prealloc_step: u64,
    ) -> Writer {
        let buf_start = align_down(size);
        // Callers read the tail from the file; a mismatch is a bug in the
        // engine, not something on disk.
        assert_eq!(
            tail.len() as u64,
            size - buf_start,
            "tail must be the partial block"
        );
        Writer {
            file,
            path: Rc::new(path),
            cap,
            buf: None,
            carry: tail.to_vec(),
            buf_start,
            buf_len: tail.len(),
            buf_on_disk: tail.len(),
            sealed: VecDeque::new(),
            inflight: VecDeque::new(),
            written_end: size,
            end: size,
            prealloc_end: size,
            prealloc_step,
            failed: None,
        }
    }

    /// The buffer, allocated (with the carried partial block) if needed.
    fn buf_mut(&mut self) -> &mut DmaBuffer {
        if self.buf.is_none() {
            let mut buf = self.file.alloc_dma_buffer(self.cap);
            buf.as_bytes_mut()[..self.carry.len()].copy_from_slice(&self.carry);
            self.carry.clear();
            self.buf = Some(buf);
        }
        self.buf.as_mut().expect("allocated above")
    }

    /// Copies appended bytes into the buffer, sealing each buffer that fills.
    pub fn copy_in(&mut self, mut data: &[u8]) {
        self.end += data.len() as u64;
        while !data.is_empty() {
            let n = (self.cap - self.buf_len).min(data.len());
            let at = self.buf_len;
            self.buf_mut().as_bytes_mut()[at..at + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len == self.cap {
                let full = self.buf.take().expect("a full buffer exists");
                self.sealed.push_back((full, self.buf_start));
                self.buf_start += self.cap as u64;
                self.buf_len = 0;
                self.buf_on_disk = 0;
            }
        }
        debug_assert_eq!(self.buf_start + self.buf_len as u64, self.end);
    }

    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Moves completed writes out of the in-flight queue, advancing
    /// `written_end` over the completed prefix. Returns the first error, on
    /// this call and on every later one: a failed write poisons the writer
    /// and `written_end` stays below it.
    pub fn reap(&mut self) -> Result<(), io::Error> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        while let Some(front) = self.inflight.front() {
            if !front.slot.is_done() {
                break;
            }
            if let Some(e) = front.slot.take_error() {
                self.failed = Some((e.kind(), e.to_string()));
                return Err(e);
            }
            debug_assert!(front.end <= self.end, "a write never ends past the appended data");
            self.written_end = self.written_end.max(front.end);
            self.inflight.pop_front();
        }
        Ok(())
    }

    /// Issues the next sealed buffer if the in-flight bound allows.
    pub fn submit_one(&mut self, in_flight_max: usize) -> Submit {
        let Some((_, pos)) = self.sealed.front() else {
            return Submit::Idle;
        };
        if self.inflight.len() >= in_flight_max {
            return Submit::Wait(self.inflight.front().expect("in flight").slot.clone());
        }
        let end = pos + self.cap as u64;
        if let Some(p) = self.needs_prealloc(end) {
            return p;
        }
        let (buf, pos) = self.sealed.pop_front().expect("sealed buffer");
        self.issue(buf, pos, end);
        Submit::Issued
    }

    /// Issues the partial buffer, padded to the block, if it holds bytes not
    /// yet on disk. The caller must have submitted every sealed buffer.
    pub fn submit_partial(&mut self) -> Submit {
        assert!(self.sealed.is_empty(), "sealed buffers go first");
        if self.buf_len == self.buf_on_disk {
            return Submit::Idle;
        }
        let len = self.buf_len;
        let padded = (len as u64).div_ceil(ALIGN) as usize * ALIGN as usize;
        if let Some(p) = self.needs_prealloc(self.buf_start + padded as u64) {
            return p;
        }
        let keep = align_down(len as u64) as usize;
        let mut out = self.buf.take().expect("bytes not on disk are in the buffer");
        self.carry.clear();
        self.carry.extend_from_slice(&out.as_bytes()[keep..len]);
        out.as_bytes_mut()[len..padded].fill(0);
        out.trim_to_size(padded);
        let pos = self.buf_start;
        self.buf_start += keep as u64;
        self.buf_len = len - keep;
        self.buf_on_disk = self.buf_len;
        self.issue(out, pos, pos + len as u64);
        Submit::Issued
    }

    fn needs_prealloc(&mut self, write_end: u64) -> Option<Submit> {
        if self.prealloc_step == 0 || write_end <= self.prealloc_end {
            return None;
        }
        let target = (write_end + self.prealloc_step).div_ceil(self.prealloc_step) * self.prealloc_step;
        self.prealloc_end = target;
        Some(Submit::Preallocate(self.file.clone(), target))
    }

    fn issue(&mut self, buf: DmaBuffer, pos: u64, end: u64) {
        let slot = Rc::new(Slot::default());
        let done = slot.clone();
        let file = self.file.clone();
        let path = self.path.clone();
        let len = buf.len();
        glommio::spawn_local(async move {
            seam::gate(Op::Write).await;
            // Recorded once it completes, so that a recording never holds
            // a write that had not reached the file.
            let (written, record) = match seam::write(&path, pos, buf.as_bytes()) {
                Ok(record) => (
                    file.write_at(buf, pos).await.map_err(io::Error::from),
                    Some(record),
                ),
                Err(e) => (Err(e), None),
            };
            let err = match written {
                Ok(n) if n == len => {
                    if let Some(record) = record {
                        record.done();
                    }
                    None
                }
                Ok(n) => Some(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short direct write: {n} of {len} bytes at {pos}"),
                )),
                Err(e) => Some(e),
            };
            done.complete(err);
        })
        .detach();
        self.inflight.push_back(Inflight { slot, end });
    }
}
