//! Keyed async locks, runtime-agnostic: one async mutex per key, created on demand.
//!
//! A store's caller holds a key's lock across a read-modify-write, so the operations on one key
//! run one at a time while operations on different keys proceed concurrently (and can still
//! share a commit in the store). Waiters are served first come, first served.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_channel::oneshot;

/// Async mutexes keyed by `K`. A key takes no memory while nobody holds or awaits it.
pub struct KeyLocks<K> {
    /// Held keys, each with the queue of tasks waiting for it.
    held: Mutex<HashMap<K, VecDeque<oneshot::Sender<()>>>>,
}

impl<K> Default for KeyLocks<K> {
    fn default() -> Self {
        KeyLocks {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> std::fmt::Debug for KeyLocks<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("KeyLocks").field("held", &held).finish()
    }
}

/// Locks held until dropped.
#[must_use = "the locks are released when the guard is dropped"]
pub struct KeyGuard<'a, K: Eq + Hash + Clone + Ord> {
    locks: &'a KeyLocks<K>,
    keys: Vec<K>,
}

impl<K: Eq + Hash + Clone + Ord> KeyLocks<K> {
    fn map(&self) -> MutexGuard<'_, HashMap<K, VecDeque<oneshot::Sender<()>>>> {
        // The map is consistent after every statement that changes it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks one key.
    pub async fn lock(&self, key: &K) -> KeyGuard<'_, K> {
        self.lock_all(vec![key.clone()]).await
    }

    /// Locks several keys (duplicates count once), in sorted order so that two callers cannot
    /// deadlock.
    pub async fn lock_all(&self, mut keys: Vec<K>) -> KeyGuard<'_, K> {
        keys.sort();
        keys.dedup();
        let mut guard = KeyGuard {
            locks: self,
            keys: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            self.acquire(&key).await;
            guard.keys.push(key);
        }
        guard
    }

    async fn acquire(&self, key: &K) {
        loop {
            let rx = {
                let mut map = self.map();
                match map.get_mut(key) {
                    None => {
                        map.insert(key.clone(), VecDeque::new());
                        return;
                    }
                    Some(queue) => {
                        let (tx, rx) = oneshot::channel();
                        queue.push_back(tx);
                        rx
                    }
                }
            };
            let mut waiter = Waiter {
                locks: self,
                key,
                rx: Some(rx),
            };
            let handed_over = match waiter.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            // Handed over: the lock is ours and the waiter must not pass it on. Not handed over
            // (a sender dropped without sending, which releasers do not do): queue again.
            waiter.rx = None;
            if handed_over {
                return;
            }
        }
    }

    /// Hands the key to the next live waiter, or frees it.
    fn release(&self, key: &K) {
        let mut map = self.map();
        let Some(queue) = map.get_mut(key) else {
            return;
        };
        while let Some(next) = queue.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        map.remove(key);
    }
}

impl<K: Eq + Hash + Clone + Ord> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        for key in self.keys.drain(..).rev() {
            self.locks.release(&key);
        }
    }
}

/// A queued wait. If the waiting future is dropped after the lock was handed to it, the lock is
/// passed on rather than lost.
struct Waiter<'a, K: Eq + Hash + Clone + Ord> {
    locks: &'a KeyLocks<K>,
    key: &'a K,
    rx: Option<oneshot::Receiver<()>>,
}

impl<K: Eq + Hash + Clone + Ord> Drop for Waiter<'_, K> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // After `close`, no send can succeed; a send that happened before is seen here.
            rx.close();
            if let Ok(Some(())) = rx.try_recv() {
                self.locks.release(self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::thread;

    use super::*;
    use crate::test_support::block_on;

    fn id(s: &str) -> String {
        s.to_owned()
    }

    fn poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn second_locker_waits_and_is_handed_the_lock() {
        let locks = KeyLocks::<String>::default();
        let a = id("a");
        let first = pin!(locks.lock(&a));
        let Poll::Ready(g1) = poll(first) else {
            panic!("free lock must be taken at once")
        };
        let mut second = pin!(locks.lock(&a));
        assert!(poll(second.as_mut()).is_pending());
        // Another key is independent.
        let other = pin!(locks.lock_all(vec![id("b")]));
        assert!(poll(other).is_ready());
        drop(g1);
        let Poll::Ready(g2) = poll(second.as_mut()) else {
            panic!("lock must be handed over")
        };
        drop(g2);
        assert!(locks.map().is_empty());
    }

    #[test]
    fn dropped_waiter_passes_the_lock_on() {
        let locks = KeyLocks::<String>::default();
        let a = id("a");
        let Poll::Ready(g1) = poll(pin!(locks.lock(&a))) else {
            panic!("free")
        };
        let mut w2 = Box::pin(locks.lock(&a));
        let mut w3 = pin!(locks.lock(&a));
        assert!(poll(w2.as_mut()).is_pending());
        assert!(poll(w3.as_mut()).is_pending());
        // The lock is handed to w2, which is dropped before it notices.
        drop(g1);
        drop(w2);
        let Poll::Ready(g3) = poll(w3.as_mut()) else {
            panic!("w3 must get the lock")
        };
        drop(g3);
        assert!(locks.map().is_empty());
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let locks = KeyLocks::<String>::default();
        let a = id("a");
        let Poll::Ready(g1) = poll(pin!(locks.lock(&a))) else {
            panic!("free")
        };
        let mut w2 = pin!(locks.lock(&a));
        let mut w3 = pin!(locks.lock(&a));
        let mut w4 = pin!(locks.lock(&a));
        assert!(poll(w2.as_mut()).is_pending());
        assert!(poll(w3.as_mut()).is_pending());
        assert!(poll(w4.as_mut()).is_pending());

        drop(g1);
        // Only the oldest waiter has it; polling the younger ones first changes nothing.
        assert!(poll(w4.as_mut()).is_pending());
        assert!(poll(w3.as_mut()).is_pending());
        let Poll::Ready(g2) = poll(w2.as_mut()) else {
            panic!("w2 came first")
        };
        drop(g2);
        assert!(poll(w4.as_mut()).is_pending());
        let Poll::Ready(g3) = poll(w3.as_mut()) else {
            panic!("w3 came second")
        };
        drop(g3);
        let Poll::Ready(g4) = poll(w4.as_mut()) else {
            panic!("w4 came last")
        };
        drop(g4);
        assert!(locks.map().is_empty());
    }

    #[test]
    fn lock_all_takes_keys_in_sorted_order() {
        let locks = KeyLocks::<String>::default();
        let Poll::Ready(holds_b) = poll(pin!(locks.lock(&id("b")))) else {
            panic!("free")
        };
        // Asked for (b, a), it takes a first and then waits for b, holding a.
        let mut both = pin!(locks.lock_all(vec![id("b"), id("a"), id("b")]));
        assert!(poll(both.as_mut()).is_pending());
        let mut only_a = pin!(locks.lock_all(vec![id("a")]));
        assert!(poll(only_a.as_mut()).is_pending());

        drop(holds_b);
        let Poll::Ready(g) = poll(both.as_mut()) else {
            panic!("a and b are both free for it now")
        };
        assert_eq!(g.keys, [id("a"), id("b")]);
        assert!(poll(only_a.as_mut()).is_pending());
        drop(g);
        assert!(poll(only_a.as_mut()).is_ready());
        assert!(locks.map().is_empty());
    }

    #[test]
    fn crossing_lock_all_calls_do_not_deadlock() {
        const ROUNDS: usize = 2000;
        let locks = Arc::new(KeyLocks::<String>::default());
        // Each key's count, changed only by a holder of the key (the std mutex is never
        // contended when the key locks work; `try_lock` proves it).
        let counts = Arc::new([Mutex::new(0usize), Mutex::new(0usize)]);
        let threads: Vec<_> = [vec![id("a"), id("b")], vec![id("b"), id("a")]]
            .into_iter()
            .map(|keys| {
                let (locks, counts) = (Arc::clone(&locks), Arc::clone(&counts));
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let _guard = block_on(locks.lock_all(keys.clone()));
                        for count in counts.iter() {
                            *count.try_lock().expect("the key lock is exclusive") += 1;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        for count in counts.iter() {
            assert_eq!(*count.lock().expect("not poisoned"), 2 * ROUNDS);
        }
        assert!(locks.map().is_empty());
    }
}
