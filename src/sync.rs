//! Locks that outlive a panic. A panic inside an op is caught at the bridge (`ffi.rs`) and
//! the process keeps training, so a lock held at that moment must not fail every later op.
//! What these locks guard (pools, routes, caches, per-request scratch) is replaced whole or
//! updated in one step, so a poisoned lock is simply taken over.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, ignoring poisoning.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, ignoring poisoning.
pub(crate) fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, ignoring poisoning.
pub(crate) fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The value of a `Mutex` that is no longer shared, ignoring poisoning.
pub(crate) fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// Test-only failpoint (feature `failpoints`): with `RDE_FAILPOINT_PANIC_LOCKED=<site>`, the
/// code at `site` panics while it holds the lock the site names, to show that such a lock is
/// taken over by the next op (docs/operations.md). Sites: `memory_shard` (a memory table's
/// shard, write-locked by insert), `memory_registry` (the registry of memory tables, locked
/// by open), `redis_pools` (a Redis table's router's pools, locked by every op that sends).
#[cfg(feature = "failpoints")]
pub(crate) fn panic_point(site: &str) {
    if std::env::var("RDE_FAILPOINT_PANIC_LOCKED").is_ok_and(|v| v == site) {
        panic!("failpoint RDE_FAILPOINT_PANIC_LOCKED={site}");
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn panic_point(_site: &str) {}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, RwLock};

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_usable() {
        let m = Arc::new(Mutex::new(1));
        let l = Arc::new(RwLock::new(1));
        let (m2, l2) = (m.clone(), l.clone());
        let r = std::thread::spawn(move || {
            let _a = m2.lock().unwrap();
            let _b = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(r.is_err());
        assert!(m.is_poisoned() && l.is_poisoned());
        *super::lock(&m) += 1;
        *super::write(&l) += 1;
        assert_eq!((*super::lock(&m), *super::read(&l)), (2, 2));
    }
}
