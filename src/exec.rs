//! The dedicated I/O thread pool that runs pipelines in parallel. Never rayon's global pool:
//! it is created lazily, and again in a forked child (whose copy of the parent's pool has no
//! threads).

use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, ErrorKind, Result};
use crate::sync;

/// Threads in the I/O pool unless `RDE_IO_THREADS` says otherwise.
const DEFAULT_IO_THREADS: usize = 4;

fn io_pool() -> Result<Arc<ThreadPool>> {
    static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, pool)) = slot.as_ref() {
        if *owner == pid {
            return Ok(pool.clone());
        }
    }
    if let Some((_, stale)) = slot.take() {
        // Inherited across fork: its threads do not exist here, so it must not be dropped
        // (dropping would wait on them).
        std::mem::forget(stale);
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(parallelism())
        .thread_name(|i| format!("rde-io-{i}"))
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Connection,
                format!("cannot start the I/O thread pool: {e}"),
            )
        })?;
    let pool = Arc::new(pool);
    *slot = Some((pid, pool.clone()));
    Ok(pool)
}

/// Width of the parallel fan-out: how many pipelines a request is split into at most.
pub fn parallelism() -> usize {
    std::env::var("RDE_IO_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_IO_THREADS)
}

/// Runs `task(i)` for every `i < n`, in parallel on the I/O pool when `n > 1`, and returns
/// the first error.
pub fn run_all<F>(n: usize, task: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    if n <= 1 {
        return (0..n).try_for_each(&task);
    }
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    io_pool()?.scope(|s| {
        for i in 0..n {
            let (task, first_err) = (&task, &first_err);
            s.spawn(move |_| {
                if let Err(e) = task(i) {
                    sync::lock(first_err).get_or_insert(e);
                }
            });
        }
    });
    match sync::into_inner(first_err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Gives the heap pages freed by a long operation back to the system. Its page-sized buffers
/// are allocated and freed on different threads, and glibc keeps such memory in per-thread
/// arenas (its mmap threshold having risen past the buffer size), so without this a process
/// that saves and loads repeatedly grows by tens of MB per round.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free.
    unsafe {
        libc::malloc_trim(0);
    }
}
