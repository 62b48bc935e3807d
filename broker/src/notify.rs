//! A single-threaded "something changed" signal for long polls: appends
//! bump a partition's version, and fetches waiting for data wake up.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Lives on the shard that owns the partition; never crosses cores.
#[derive(Default)]
pub struct Notify {
    version: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Resolves once any of `notifies` has moved past the version it had when
/// this was called.
pub async fn changed_any(notifies: &[&Notify]) {
    let start: Vec<u64> = notifies.iter().map(|n| n.version()).collect();
    poll_fn(|cx| {
        if notifies.iter().zip(&start).any(|(n, &v)| n.version() != v) {
            return Poll::Ready(());
        }
        for n in notifies {
            let mut w = n.wakers.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
        }
        Poll::Pending
    })
    .await
}
