//! Per-table statistics (`Table::stats`) against real redis-servers: key counts, bytes,
//! errors and retries that could be wrong, and latency percentiles against a known delay.

mod support;

use std::time::Instant;

use redis_embedding::{KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, i64_keys, Server};

const DIM: usize = 2;
const ROW: usize = DIM * 4;

fn stat(t: &Table, name: &str) -> f64 {
    t.stats()
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no figure {name}"))
        .1
}

fn open(s: &Server, name: &str, extra: &str) -> Table {
    Table::open(
        s.config(extra),
        TableSpec::new(name, KeyType::I64, ValueType::F32, DIM),
    )
    .unwrap()
}

fn insert(t: &Table, keys: &[i64]) {
    let kb = i64_keys(keys);
    let vals = f32_bytes(&vec![1.0; keys.len() * DIM]);
    let rows = Rows::Fixed {
        data: &vals,
        row: ROW,
    };
    t.insert(&t.keys(&kb, &[]).unwrap(), &rows).unwrap();
}

fn find(t: &Table, keys: &[i64]) -> redis_embedding::Result<()> {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * ROW];
    t.find(&t.keys(&kb, &[]).unwrap(), &[0u8; ROW], &mut out, None)
}

/// 3 lookups of 10 keys with 4 present: 30 lookups (key positions), 12 hits, 18 misses; a
/// duplicated key counts at each position. Bytes: the 4 rows inserted out, 4 rows per lookup in.
#[test]
fn lookups_hits_rows_and_bytes_add_up() {
    let s = Server::start();
    let t = open(&s, "st", "");
    insert(&t, &[1, 2, 3, 4, 4]); // key 4 twice: one row written
    let keys: Vec<i64> = (1..=10).collect();
    for _ in 0..3 {
        find(&t, &keys).unwrap();
    }
    for (name, want) in [
        ("lookups", 30.0),
        ("hits", 12.0),
        ("misses", 18.0),
        ("hit_rate", 0.4),
        ("rows_written", 4.0),
        ("bytes_out", 4.0 * ROW as f64),
        ("bytes_in", 12.0 * ROW as f64),
        ("find_calls", 3.0),
        ("insert_calls", 1.0),
        ("errors", 0.0),
        ("retries", 0.0),
    ] {
        assert_eq!(stat(&t, name), want, "{name}");
    }
    // Duplicates in a lookup: each position is a lookup, and a hit if its key is stored.
    find(&t, &[1, 1, 99]).unwrap();
    assert_eq!((stat(&t, "lookups"), stat(&t, "hits")), (33.0, 14.0));
    // Another table on the same server keeps its own figures.
    let other = open(&s, "other", "");
    assert_eq!(stat(&other, "lookups"), 0.0);
}

/// A lookup held up by `CLIENT PAUSE` is the slowest call: p95, p99 and max are at least
/// the time the pause held it (the histogram is within 1%), p50 is one of the fast calls.
#[test]
fn percentiles_show_a_known_delay() {
    let s = Server::start();
    let t = open(&s, "lat", r#""expire_model_tag_in_seconds": -1"#);
    insert(&t, &[1, 2]);
    let mut fast_us = 0f64;
    for _ in 0..9 {
        let t0 = Instant::now();
        find(&t, &[1, 2, 3]).unwrap();
        fast_us = fast_us.max(t0.elapsed().as_micros() as f64);
    }
    // The server starts the pause after `asked`, so it holds a lookup started at `started`
    // until at least `asked + pause`: the lookup takes at least `held` however late it
    // starts, with no assumption on how fast this machine is. A lookup that starts so late
    // that the pause held it no longer than the fast ones took shows nothing, and is tried
    // again with a pause twice as long (bounded).
    let (mut slow_us, mut held_us, mut calls) = (0f64, 0f64, 9.0);
    for pause_ms in [300u64, 600, 1200, 2400, 4800] {
        let asked = Instant::now();
        let ms = pause_ms.to_string();
        assert_eq!(
            s.cli(&[b"CLIENT", b"PAUSE", ms.as_bytes(), b"ALL"]),
            b"+OK\r\n"
        );
        let started = Instant::now();
        find(&t, &[1, 2, 3]).unwrap();
        calls += 1.0;
        let took = started.elapsed().as_micros() as f64;
        slow_us = slow_us.max(took);
        held_us = pause_ms as f64 * 1000.0 - (started - asked).as_micros() as f64;
        assert!(
            took >= held_us,
            "the pause did not hold the lookup: {took} us, held at least {held_us} us"
        );
        if held_us > 2.0 * fast_us {
            break;
        }
    }
    assert!(
        held_us > 2.0 * fast_us,
        "no lookup started early enough in a pause: held {held_us} us, fast calls {fast_us} us"
    );
    assert_eq!(stat(&t, "find_calls"), calls);
    assert!(
        stat(&t, "find_p50_us") < held_us,
        "p50 {}",
        stat(&t, "find_p50_us")
    );
    for q in ["find_p95_us", "find_p99_us", "find_max_us"] {
        let v = stat(&t, q);
        assert!(
            v >= held_us * 0.99 && v <= slow_us * 1.01,
            "{q} = {v}, slow call {slow_us}, held at least {held_us}"
        );
    }
    assert!(stat(&t, "insert_p50_us") > 0.0);
    assert_eq!(stat(&t, "remove_calls"), 0.0);
}

/// With the server gone, a lookup is resent `rde_max_retries` times and fails: the table
/// counts those retries and one error.
#[test]
fn errors_and_retries_are_counted_per_table() {
    let s = Server::start();
    let t = open(
        &s,
        "err",
        r#""rde_max_retries": 2, "rde_retry_backoff_ms": 1, "expire_model_tag_in_seconds": -1"#,
    );
    // A bad argument is an error too (the output buffer is one row short).
    let kb = i64_keys(&[1, 2]);
    let mut short = vec![0u8; ROW];
    assert!(t
        .find(&t.keys(&kb, &[]).unwrap(), &[0u8; ROW], &mut short, None)
        .is_err());
    assert_eq!(stat(&t, "errors"), 1.0);
    s.stop();
    assert!(find(&t, &[1]).is_err());
    assert_eq!(stat(&t, "errors"), 2.0);
    assert_eq!(stat(&t, "retries"), 2.0);
    assert_eq!(stat(&t, "find_calls"), 2.0);
    assert_eq!(stat(&t, "lookups"), 0.0, "failed lookups count no keys");
}
