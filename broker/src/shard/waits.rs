//! Long-poll fetch waits: a fetch with too few bytes asks each owning
//! shard to answer when one of its partitions has more (`WaitForData`),
//! and cancels the waits still running when it is answered or its
//! connection closes (`CancelWait`).
//!
//! A wait lives in [`Waits`] exactly as long as it runs, however it ends,
//! so that a cancel finds it and nothing is left behind.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::data::start_visibility_sync;
use super::{calls, PartKey, Partition, Shard};
use crate::notify::{changed_any, Notify};

/// The fetch waits running on a shard, by (asking shard, wait id), so that
/// a cancel finds its wait. An entry lives exactly as long as its wait.
#[derive(Default)]
pub struct Waits {
    map: RefCell<HashMap<(usize, u64), Rc<Notify>>>,
}

impl Waits {
    /// Registers a wait; it is removed when the entry is dropped.
    pub fn register(&self, key: (usize, u64)) -> WaitEntry<'_> {
        let cancel = Rc::new(Notify::default());
        let old = self.map.borrow_mut().insert(key, cancel.clone());
        debug_assert!(old.is_none(), "wait ids are never reused");
        WaitEntry {
            waits: self,
            key,
            cancel,
        }
    }

    /// Ends the wait `key` if it is still running.
    pub fn cancel(&self, key: (usize, u64)) {
        let w = self.map.borrow_mut().remove(&key);
        if let Some(w) = w {
            w.notify();
        }
    }

    /// Waits registered now.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered wait; its `cancel` is notified by [`Waits::cancel`].
pub struct WaitEntry<'a> {
    waits: &'a Waits,
    key: (usize, u64),
    pub cancel: Rc<Notify>,
}

impl Drop for WaitEntry<'_> {
    fn drop(&mut self) {
        self.waits.map.borrow_mut().remove(&self.key);
    }
}

impl Shard {
    /// A fresh id for a fetch wait this shard asks for.
    pub fn new_wait_id(&self) -> u64 {
        let id = self.next_wait.get();
        self.next_wait.set(id + 1);
        id
    }

    /// Cancels wait `id` that this shard asked of shard `owner`. Mesh
    /// messages between two shards arrive in order, and a wait registers
    /// before its first await, so the cancel never overtakes its wait.
    pub fn cancel_wait(self: &Rc<Self>, owner: usize, id: u64) {
        if owner == self.id {
            self.waits.cancel((owner, id));
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let from = shard.id;
            let _ = shard.call(owner, calls::CancelWait { from, id }).await;
        })
        .detach();
    }

    /// Waits until one partition's log end passes the offset given with it
    /// (the end the fetch last saw: data below it did not satisfy the
    /// fetch, so it is no reason to read again), `wait` passes, or the
    /// wait is cancelled. A partition closed meanwhile wakes it too.
    pub async fn wait_for_data(
        &self,
        from: usize,
        id: u64,
        parts: &[(PartKey, i64)],
        wait: Duration,
        replica: bool,
    ) {
        let ps: Vec<(Rc<Partition>, i64)> = parts
            .iter()
            .filter_map(|(k, o)| self.partition(*k).ok().map(|p| (p, *o)))
            .collect();
        // A follower waits for the log end, a consumer for what it may see.
        let end = |p: &Partition| {
            if replica {
                p.log.log_end_offset().0
            } else {
                self.visible_end(p)
            }
        };
        let ready = || ps.iter().any(|(p, o)| end(p) as i64 > *o);
        if ps.is_empty() || ready() {
            return;
        }
        // Records appended but not yet on disk are not visible: have them
        // synced now, which wakes this wait when it is done.
        if !replica {
            for (p, _) in &ps {
                if p.log.log_end_offset().0 > p.log.durable_offset().0 {
                    start_visibility_sync(p);
                }
            }
        }
        // Leaves the registry however this ends: woken, timed out,
        // cancelled, or dropped unfinished (a wait served in place, on the
        // asking shard, is dropped when the fetch stops waiting).
        let entry = self.waits.register((from, id));
        let mut notifies: Vec<&Notify> = ps
            .iter()
            .map(|(p, _)| if replica { &p.appended } else { &p.notify })
            .collect();
        notifies.push(&entry.cancel);
        futures_lite::future::or(changed_any(&notifies), glommio::timer::sleep(wait)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::changed_any;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_wait_leaves_the_registry_however_it_ends() {
        let waits = Waits::default();
        let cx = &mut Context::from_waker(Waker::noop());
        // Dropped unfinished (a wait served in place whose fetch stopped
        // waiting): nothing stays behind.
        for id in 0..100 {
            let entry = waits.register((0, id));
            let notifies = [&*entry.cancel];
            let mut f = Box::pin(changed_any(&notifies));
            assert!(f.as_mut().poll(cx).is_pending());
        }
        assert!(waits.is_empty(), "{} dropped waits left behind", waits.len());
        // Cancelled: the wait is woken and gone.
        let entry = waits.register((1, 7));
        let cancel = entry.cancel.clone();
        let notifies = [&*cancel];
        let mut f = Box::pin(changed_any(&notifies));
        assert!(f.as_mut().poll(cx).is_pending());
        waits.cancel((1, 7));
        assert_eq!(f.as_mut().poll(cx), Poll::Ready(()));
        assert!(waits.is_empty());
        drop(entry);
        assert!(waits.is_empty());
    }
}
