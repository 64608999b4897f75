//! Per-table statistics (`RedisTable.stats()` in Python): keys looked up and found, rows and
//! value bytes moved, errors and retries, and a latency histogram per op.
//!
//! Definitions. `lookups` counts key positions, not calls: a lookup of 10 keys is 10 lookups
//! (duplicates included), `hits` those found, `misses` the rest; an op's calls are its
//! `<op>_calls`. `rows_written` counts distinct keys written (insert, accum, train_apply).
//! `bytes_in` / `bytes_out` are stored value bytes read from / written to Redis (keys and
//! protocol framing not included). `errors` are failed calls of the tracked ops; `retries`
//! are the executor's rounds of resending for this table's requests. Internal reads and
//! writes of the training ops are counted once, as `train_lookup` / `train_apply`.
//!
//! Latencies are wall times of whole calls in microseconds, kept in an HDR histogram with 2
//! significant digits: a reported percentile is within 1% of the true value (values above
//! one hour are recorded as one hour).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::Result;
use crate::sync;

/// A tracked op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Op {
    Find,
    Insert,
    Accum,
    Remove,
    Export,
    TrainLookup,
    TrainApply,
}

/// Op names, indexed by `Op as usize`.
const OP_NAMES: [&str; 7] = [
    "find",
    "insert",
    "accum",
    "remove",
    "export",
    "train_lookup",
    "train_apply",
];

/// Ops reported only once called (the training ops); the others always are.
const REPORTED_WHEN_USED: usize = Op::TrainLookup as usize;

/// Largest latency recorded, in microseconds (one hour); longer calls count as this.
const MAX_US: u64 = 3_600_000_000;

/// One table's counters and histograms. Cheap to update: atomics, and one short lock of the
/// op's histogram per call.
#[derive(Default)]
pub struct TableStats {
    lookups: AtomicU64,
    hits: AtomicU64,
    rows_written: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    /// TTL refreshes (`expire_model_tag_in_seconds`) that failed: the rows keep their old TTL.
    ttl_refresh_failures: AtomicU64,
    /// Exact training updates: rows whose compare-and-set lost to another writer and were
    /// recomputed from the row as it then stood.
    update_conflicts: AtomicU64,
    /// Exact training updates: compare-and-set rounds after a step's first.
    update_retry_rounds: AtomicU64,
    /// Per op, created on its first call (a histogram is ~26 kB).
    latency: [Mutex<Option<Histogram<u64>>>; OP_NAMES.len()],
}

impl TableStats {
    /// Runs `body` as one call of `op`: its wall time goes to the op's histogram, a failure
    /// to `errors`.
    pub(crate) fn track<T>(&self, op: Op, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let r = body();
        self.record(op, start.elapsed(), r.is_ok());
        r
    }

    /// Records one call of `op` that took `took`.
    pub(crate) fn record(&self, op: Op, took: Duration, ok: bool) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = (took.as_micros() as u64).clamp(1, MAX_US);
        let mut h = sync::lock(&self.latency[op as usize]);
        h.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds")
        })
        .saturating_record(us);
    }

    /// Counts a lookup of `keys` positions of which `hits` were found, `bytes` read.
    pub(crate) fn looked_up(&self, keys: usize, hits: usize, bytes: usize) {
        self.lookups.fetch_add(keys as u64, Ordering::Relaxed);
        self.hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `rows` distinct rows written, `bytes` of values sent.
    pub(crate) fn wrote(&self, rows: usize, bytes: usize) {
        self.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `bytes` of values read outside lookups (export).
    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `n` rounds of resending.
    pub(crate) fn retried(&self, n: u64) {
        self.retries.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one failed TTL refresh.
    pub(crate) fn ttl_refresh_failed(&self) {
        self.ttl_refresh_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one more compare-and-set round of a training step, for `rows` rows that lost.
    pub(crate) fn update_conflict(&self, rows: usize) {
        self.update_conflicts
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.update_retry_rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// Every figure by name, in a fixed order: the counters, `hit_rate` (hits / lookups, 0
    /// before any lookup), then per op `<op>_calls` and `<op>_p50_us`, `_p95_us`, `_p99_us`,
    /// `_max_us` (0 before any call).
    pub fn snapshot(&self) -> Vec<(String, f64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (lookups, hits) = (get(&self.lookups), get(&self.hits));
        let mut out: Vec<(String, f64)> = [
            ("lookups", lookups),
            ("hits", hits),
            ("misses", lookups.saturating_sub(hits)),
            ("rows_written", get(&self.rows_written)),
            ("bytes_in", get(&self.bytes_in)),
            ("bytes_out", get(&self.bytes_out)),
            ("errors", get(&self.errors)),
            ("retries", get(&self.retries)),
            ("ttl_refresh_failures", get(&self.ttl_refresh_failures)),
            ("update_conflicts", get(&self.update_conflicts)),
            ("update_retry_rounds", get(&self.update_retry_rounds)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v as f64))
        .collect();
        let rate = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };
        out.push(("hit_rate".to_owned(), rate));
        for (i, name) in OP_NAMES.iter().enumerate() {
            let h = sync::lock(&self.latency[i]);
            if h.is_none() && i >= REPORTED_WHEN_USED {
                continue;
            }
            let q = |p: f64| h.as_ref().map_or(0, |h| h.value_at_quantile(p));
            let figures = [
                ("calls", h.as_ref().map_or(0, |h| h.len())),
                ("p50_us", q(0.50)),
                ("p95_us", q(0.95)),
                ("p99_us", q(0.99)),
                ("max_us", h.as_ref().map_or(0, |h| h.max())),
            ];
            for (what, v) in figures {
                out.push((format!("{name}_{what}"), v as f64));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &[(String, f64)], name: &str) -> f64 {
        s.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn percentiles_are_within_one_percent() {
        let s = TableStats::default();
        // 1..=1000 ms: p50 = 500 ms, p95 = 950 ms, p99 = 990 ms, max = 1000 ms.
        for ms in 1..=1000u64 {
            s.record(Op::Find, Duration::from_millis(ms), true);
        }
        let snap = s.snapshot();
        assert_eq!(get(&snap, "find_calls"), 1000.0);
        for (name, want) in [
            ("find_p50_us", 500_000.0),
            ("find_p95_us", 950_000.0),
            ("find_p99_us", 990_000.0),
            ("find_max_us", 1_000_000.0),
        ] {
            let got = get(&snap, name);
            assert!((got - want).abs() <= want * 0.01, "{name}: {got} vs {want}");
        }
        assert_eq!(get(&snap, "insert_calls"), 0.0);
        assert_eq!(get(&snap, "insert_p99_us"), 0.0);
    }

    #[test]
    fn counters_and_rates_add_up() {
        let s = TableStats::default();
        assert_eq!(get(&s.snapshot(), "hit_rate"), 0.0);
        for _ in 0..3 {
            s.looked_up(10, 4, 32);
        }
        s.wrote(4, 32);
        s.track(Op::Remove, || Err::<(), _>(crate::Error::invalid("x")))
            .unwrap_err();
        let snap = s.snapshot();
        for (name, want) in [
            ("lookups", 30.0),
            ("hits", 12.0),
            ("misses", 18.0),
            ("hit_rate", 0.4),
            ("rows_written", 4.0),
            ("bytes_in", 96.0),
            ("bytes_out", 32.0),
            ("errors", 1.0),
            ("remove_calls", 1.0),
        ] {
            assert_eq!(get(&snap, name), want, "{name}");
        }
        // The training ops appear once used.
        assert!(!snap.iter().any(|(n, _)| n.starts_with("train_")));
        s.record(Op::TrainApply, Duration::from_micros(5), true);
        assert_eq!(get(&s.snapshot(), "train_apply_calls"), 1.0);
        assert!(!s.snapshot().iter().any(|(n, _)| n == "train_lookup_calls"));
    }
}
