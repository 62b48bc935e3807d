//! A single-threaded "something changed" signal for long polls: appends
//! bump a partition's version, and fetches waiting for data wake up.
//!
//! A waiter registers its waker under an id and takes it out again when it
//! is dropped, whether it was woken or timed out: a partition that many
//! polls waited on and that never changed keeps no wakers behind.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Lives on the shard that owns the partition; never crosses cores.
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    next_waiter: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Notify {
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        // Taken out first: a woken task may register again at once.
        let woken: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in woken {
            w.wake();
        }
    }

    /// Wakers registered now (for tests and probes).
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn register(&self, slot: &mut Option<u64>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        match slot {
            Some(id) => match waiters.get_mut(id) {
                Some(w) if w.will_wake(waker) => {}
                Some(w) => *w = waker.clone(),
                // Drained by a notify that this poll has not seen yet.
                None => {
                    waiters.insert(*id, waker.clone());
                }
            },
            None => {
                let id = self.next_waiter.get();
                self.next_waiter.set(id + 1);
                waiters.insert(id, waker.clone());
                *slot = Some(id);
            }
        }
    }

    fn deregister(&self, id: u64) {
        self.waiters.borrow_mut().remove(&id);
    }
}

/// Resolves once any of its notifies has moved past the version it had
/// when the future was made; deregisters from all of them when dropped.
pub struct ChangedAny<'a> {
    notifies: &'a [&'a Notify],
    start: Vec<u64>,
    ids: Vec<Option<u64>>,
}

/// Waits until any of `notifies` changes (see [`ChangedAny`]).
pub fn changed_any<'a>(notifies: &'a [&'a Notify]) -> ChangedAny<'a> {
    ChangedAny {
        notifies,
        start: notifies.iter().map(|n| n.version()).collect(),
        ids: vec![None; notifies.len()],
    }
}

impl Future for ChangedAny<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .notifies
            .iter()
            .zip(&this.start)
            .any(|(n, &v)| n.version() != v)
        {
            return Poll::Ready(());
        }
        for (n, slot) in this.notifies.iter().zip(this.ids.iter_mut()) {
            n.register(slot, cx.waker());
        }
        Poll::Pending
    }
}

impl Drop for ChangedAny<'_> {
    fn drop(&mut self) {
        for (n, id) in self.notifies.iter().zip(&self.ids) {
            if let Some(id) = id {
                n.deregister(*id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll_once(f: &mut Pin<Box<ChangedAny<'_>>>, waker: &Waker) -> Poll<()> {
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_behind() {
        let a = Notify::default();
        let b = Notify::default();
        let both = [&a, &b];
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        for _ in 0..1000 {
            let mut f = Box::pin(changed_any(&both));
            assert!(poll_once(&mut f, &waker).is_pending());
            assert!(poll_once(&mut f, &waker).is_pending());
            assert_eq!((a.waiters(), b.waiters()), (1, 1));
            // Times out: dropped without a notify.
        }
        assert_eq!((a.waiters(), b.waiters()), (0, 0));
    }

    #[test]
    fn notify_wakes_and_resolves() {
        let a = Notify::default();
        let only = [&a];
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut f = Box::pin(changed_any(&only));
        assert!(poll_once(&mut f, &waker).is_pending());
        a.notify();
        assert_eq!(flag.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(poll_once(&mut f, &waker).is_ready());
        drop(f);
        assert_eq!(a.waiters(), 0);
    }
}
