//! Process-wide fault and traffic counters: how often requests were retried, redirected or
//! refused, how often connections failed or timed out, and how many errors reached a caller.
//! Python reads them with `redis_embedding.stats()`.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Connections opened (first connects and reconnects).
    ConnectionsOpened,
    /// Connects that failed, and connections that broke while a pipeline was in flight.
    ConnectionFailures,
    /// Connects, socket reads/writes or pool checkouts that ran past their timeout.
    Timeouts,
    /// Idle pooled connections found closed by the server and replaced before use.
    StaleConnections,
    /// Checkouts that waited out `redis_wait_timeout` with every pooled connection busy.
    PoolWaitTimeouts,
    /// Pipelines sent.
    Pipelines,
    /// Commands sent (each pipelined command counts once, resends included).
    Commands,
    /// Rounds of resending after a redirect, refusal or failed connection.
    Retries,
    /// MOVED or ASK replies.
    Redirects,
    /// TRYAGAIN, CLUSTERDOWN, READONLY, LOADING or MASTERDOWN replies.
    Refusals,
    /// Topology refreshes (CLUSTER SLOTS, sentinel master lookups) after a fault.
    TopologyRefreshes,
    /// Write pipelines that fewer than `rde_wait_replicas` replicas acknowledged in time.
    ReplicaAckShortfalls,
    /// Requests that failed after their retries were used up, or could not be retried.
    RequestsFailed,
    /// Errors returned to TensorFlow by an op.
    #[cfg_attr(not(feature = "bridge"), allow(dead_code))]
    OpErrors,
    /// Data-path calls: lookups, upserts, accums and removes.
    Calls,
    /// Wall time spent inside those calls, in nanoseconds: with the wall time of a loop of
    /// ops, it splits the time per call into ours and TensorFlow's (bench/loop.py).
    CallNanoseconds,
    /// Table opens refused because a server's `maxmemory-policy` can evict the table's keys.
    EvictingOpensRefused,
    /// Servers with such a policy that a table opened on anyway (`rde_allow_eviction`).
    EvictingOpensAllowed,
}

const NAMES: [&str; 18] = [
    "connections_opened",
    "connection_failures",
    "timeouts",
    "stale_connections",
    "pool_wait_timeouts",
    "pipelines",
    "commands",
    "retries",
    "redirects",
    "refusals",
    "topology_refreshes",
    "replica_ack_shortfalls",
    "requests_failed",
    "op_errors",
    "calls",
    "call_nanoseconds",
    "evicting_opens_refused",
    "evicting_opens_allowed",
];

static COUNTERS: [AtomicU64; NAMES.len()] = [const { AtomicU64::new(0) }; NAMES.len()];

/// Adds `n` to counter `c`.
#[inline]
pub fn add(c: Counter, n: u64) {
    COUNTERS[c as usize].fetch_add(n, Ordering::Relaxed);
}

thread_local! {
    /// Rounds of resending run on this thread, for the tables' own retry counts.
    static RETRIES_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one round of resending (`retries`), also on this thread's own count.
pub(crate) fn add_retry() {
    add(Counter::Retries, 1);
    RETRIES_HERE.with(|c| c.set(c.get() + 1));
}

/// Rounds of resending run on this thread so far: the executor resends on the thread that
/// called it, so the difference around a request is that request's retries.
pub(crate) fn retries_here() -> u64 {
    RETRIES_HERE.with(std::cell::Cell::get)
}

/// Counts one failed connection attempt or broken connection by its error kind.
pub(crate) fn count_fault(e: &crate::Error) {
    match e.kind() {
        crate::ErrorKind::Timeout => add(Counter::Timeouts, 1),
        crate::ErrorKind::Connection => add(Counter::ConnectionFailures, 1),
        _ => {}
    }
}

/// Counts one data-path call and, when dropped, the time it took.
pub(crate) struct CallTimer(std::time::Instant);

impl CallTimer {
    pub(crate) fn start() -> CallTimer {
        CallTimer(std::time::Instant::now())
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        add(Counter::Calls, 1);
        add(Counter::CallNanoseconds, self.0.elapsed().as_nanos() as u64);
    }
}

/// Every counter with its name, in a fixed order. Counters only grow; compare two snapshots
/// to see what one piece of work caused.
pub fn stats() -> Vec<(&'static str, u64)> {
    NAMES
        .iter()
        .zip(COUNTERS.iter())
        .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter, in declaration order (`as usize` is the index into `NAMES`).
    const ALL: [Counter; NAMES.len()] = [
        Counter::ConnectionsOpened,
        Counter::ConnectionFailures,
        Counter::Timeouts,
        Counter::StaleConnections,
        Counter::PoolWaitTimeouts,
        Counter::Pipelines,
        Counter::Commands,
        Counter::Retries,
        Counter::Redirects,
        Counter::Refusals,
        Counter::TopologyRefreshes,
        Counter::ReplicaAckShortfalls,
        Counter::RequestsFailed,
        Counter::OpErrors,
        Counter::Calls,
        Counter::CallNanoseconds,
        Counter::EvictingOpensRefused,
        Counter::EvictingOpensAllowed,
    ];

    /// `ConnectionsOpened` → `connections_opened`.
    fn snake(c: Counter) -> String {
        let mut out = String::new();
        for ch in format!("{c:?}").chars() {
            if ch.is_ascii_uppercase() && !out.is_empty() {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    }

    /// Each counter is reported under its own name: the name at its index is its variant's
    /// name in snake case, and `stats()` lists the names in that order. (A name list out of
    /// step with the enum would report one counter's count under another's name.)
    #[test]
    fn names_follow_the_enum_order() {
        for (i, &c) in ALL.iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?} is not at index {i}");
            assert_eq!(NAMES[c as usize], snake(c), "name of {c:?}");
        }
        let names: Vec<&str> = stats().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, NAMES);
    }

    /// `add` moves its own counter, and `stats()` reports it under that counter's name.
    #[test]
    fn add_counts_under_the_counters_name() {
        let before = stats();
        add(Counter::OpErrors, 2);
        let after = stats();
        let get = |s: &[(&str, u64)], name: &str| s.iter().find(|(n, _)| *n == name).unwrap().1;
        // Other tests may count errors too, never fewer.
        assert!(get(&after, "op_errors") >= get(&before, "op_errors") + 2);
    }
}
