//! A single-threaded "something changed" signal for long polls: appends
//! bump a partition's version, and fetches waiting for data wake up.
//!
//! A waiter registers under an id and takes itself out again when it is
//! dropped, whether it was woken or timed out: a partition that many polls
//! waited on and that never changed keeps no wakers behind. A waiter on
//! many notifies registers one shared slot with each, holding one clone of
//! its task's waker, whatever their number (glommio counts a task's wakers
//! in 16 bits, and a fetch may wait on many thousands of partitions).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Lives on the shard that owns the partition; never crosses cores.
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    next_waiter: Cell<u64>,
    waiters: RefCell<HashMap<u64, Slot>>,
}

/// The one waker of a waiting future, shared by every notify it waits on.
type Slot = Rc<RefCell<Option<Waker>>>;

impl Notify {
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        // Taken out first: a woken task may register again at once.
        let woken: Vec<Slot> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for slot in woken {
            // Taken: the other notifies of the same waiter find it woken.
            let w = slot.borrow_mut().take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Wakers registered now (for tests and probes).
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }

    fn register(&self, id: &mut Option<u64>, slot: &Slot) {
        let mut waiters = self.waiters.borrow_mut();
        match id {
            Some(id) => {
                // Drained by a notify that this poll has not seen yet.
                waiters.entry(*id).or_insert_with(|| slot.clone());
            }
            None => {
                let n = self.next_waiter.get();
                self.next_waiter.set(n + 1);
                waiters.insert(n, slot.clone());
                *id = Some(n);
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
    slot: Slot,
}

/// Waits until any of `notifies` changes (see [`ChangedAny`]).
pub fn changed_any<'a>(notifies: &'a [&'a Notify]) -> ChangedAny<'a> {
    ChangedAny {
        notifies,
        start: notifies.iter().map(|n| n.version()).collect(),
        ids: vec![None; notifies.len()],
        slot: Slot::default(),
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
        {
            let mut w = this.slot.borrow_mut();
            match &mut *w {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
        }
        for (n, id) in this.notifies.iter().zip(this.ids.iter_mut()) {
            n.register(id, &this.slot);
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

    /// Counts the clones of its waker alive at once.
    struct Counting(std::sync::atomic::AtomicUsize);
    fn counting_waker(c: &'static Counting) -> Waker {
        use std::sync::atomic::Ordering::SeqCst;
        use std::task::{RawWaker, RawWakerVTable};
        unsafe fn clone(p: *const ()) -> RawWaker {
            let c = unsafe { &*(p as *const Counting) };
            c.0.fetch_add(1, SeqCst);
            RawWaker::new(p, &VTABLE)
        }
        unsafe fn drop(p: *const ()) {
            let c = unsafe { &*(p as *const Counting) };
            c.0.fetch_sub(1, SeqCst);
        }
        unsafe fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, drop);
        c.0.fetch_add(1, SeqCst);
        unsafe { Waker::from_raw(RawWaker::new(c as *const Counting as *const (), &VTABLE)) }
    }

    #[test]
    fn a_wait_on_many_notifies_holds_one_waker() {
        static COUNT: Counting = Counting(std::sync::atomic::AtomicUsize::new(0));
        let waker = counting_waker(&COUNT);
        let many: Vec<Notify> = (0..40_000).map(|_| Notify::default()).collect();
        let refs: Vec<&Notify> = many.iter().collect();
        let mut f = Box::pin(changed_any(&refs));
        assert!(poll_once(&mut f, &waker).is_pending());
        assert!(poll_once(&mut f, &waker).is_pending());
        // The caller's waker and the one clone in the shared slot.
        assert_eq!(COUNT.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        many[39_999].notify();
        assert!(poll_once(&mut f, &waker).is_ready());
        drop(f);
        assert!(many.iter().all(|n| n.waiters() == 0));
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
