//! The counters of docs/operations.md ("Counters"): every name it lists is reported, and the
//! traffic counters no other test checks count what the doc says, against a real
//! redis-server's own command statistics: `connections_opened`, `pipelines`, `commands`,
//! `calls` / `call_nanoseconds`, and `pool_wait_timeouts` (a pool-wait timeout is a retried
//! `DeadlineExceededError`). Every test reads the process-wide counters, so each holds
//! `support::serial()`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis_embedding::{stats, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, i64_keys, serial, Server};

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn table(s: &Server, extra: &str) -> Table {
    Table::open(
        s.config(extra),
        TableSpec::new("ctr", KeyType::I64, ValueType::F32, 2),
    )
    .unwrap()
}

fn insert(t: &Table, keys: &[i64]) -> redis_embedding::Result<()> {
    t.insert(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &Rows::Fixed {
            data: &f32_bytes(&vec![1.0; keys.len() * 2]),
            row: 8,
        },
    )
}

fn find(t: &Table, keys: &[i64]) -> redis_embedding::Result<Vec<u8>> {
    let mut out = vec![0u8; keys.len() * 8];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &f32_bytes(&[0.0, 0.0]),
        &mut out,
        Some(&mut ex),
    )?;
    Ok(ex)
}

/// The counter names in the "Counters" section of docs/operations.md: the backquoted
/// snake_case words of its first paragraph.
fn documented_counters() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = doc
        .split("\n## Counters\n")
        .nth(1)
        .expect("a Counters section")
        .split("\n\n")
        .find(|p| !p.trim().is_empty())
        .unwrap();
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// Every counter the doc lists is reported, and every reported counter is in the doc.
#[test]
fn every_counter_the_doc_lists_is_reported_and_no_other() {
    let _one = serial();
    let reported: BTreeSet<String> = stats().into_iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(documented_counters(), reported);
}

/// One insert and one lookup on a fresh table, with its pooled connection killed first:
/// `connections_opened` grows by the connections the server accepted, `pipelines` by one
/// per request (one server), `commands` by the HSETs and HMGETs the server ran, `calls` by
/// two, and `call_nanoseconds` by at least the time the lookup was held up by a pause and at most the wall time of the two calls. No counter ever goes down.
#[test]
fn traffic_counters_match_the_servers_own_statistics() {
    let _one = serial();
    let s = Server::start();
    // 4 commands per request: 40 keys in commands of 10. No TTLs, so the insert is all the
    // write traffic (no EXPIRE pipeline after it).
    let t = table(
        &s,
        r#""keys_sending_size": 10, "expire_model_tag_in_seconds": -1"#,
    );
    let keys: Vec<i64> = (0..40).collect();
    // Close the connection the open made, so the requests below need a new one.
    s.cli(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"]);
    let accepted = || {
        String::from_utf8_lossy(&s.cli(&[b"INFO", b"stats"]))
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let (hset0, hmget0) = (s.calls("hset"), s.calls("hmget"));
    let accepted0 = accepted();
    let before = stats();
    let started = Instant::now();
    insert(&t, &keys).unwrap();
    // The lookup waits out (most of) a 300 ms pause of every command.
    assert_eq!(s.cli(&[b"CLIENT", b"PAUSE", b"300", b"ALL"]), b"+OK\r\n");
    assert!(find(&t, &keys).unwrap().iter().all(|&e| e == 1));
    let wall = started.elapsed();
    let after = stats();
    // The harness' own connections: the INFO above (one is counted by the server before it
    // answers), and the CLIENT PAUSE.
    let ours = accepted() - accepted0 - 2;
    let delta = |name: &str| {
        let get = |s: &[(&str, u64)]| s.iter().find(|(n, _)| *n == name).unwrap().1;
        get(&after) - get(&before)
    };
    for ((name, a), (_, b)) in after.iter().zip(&before) {
        assert!(a >= b, "{name} went down: {b} -> {a}");
    }
    assert_eq!(delta("connections_opened"), ours);
    assert!(ours >= 1, "the requests opened no connection");
    assert_eq!(delta("pipelines"), 2, "one pipeline per request");
    let ran = (s.calls("hset") - hset0) + (s.calls("hmget") - hmget0);
    assert_eq!(ran, 8);
    assert_eq!(delta("commands"), ran);
    assert_eq!(delta("calls"), 2, "an insert and a lookup");
    let inside = Duration::from_nanos(delta("call_nanoseconds"));
    // The pause began a moment before the lookup did: at least 200 ms of it are the lookup's.
    assert!(
        inside >= Duration::from_millis(200),
        "call_nanoseconds grew by {inside:?}, less than the lookup waited on the pause"
    );
    assert!(inside <= wall, "{inside:?} inside calls, {wall:?} in all");
}

/// With the only pooled connection held by an insert that the server holds up (writes
/// paused), a lookup on the same table waits out `redis_wait_timeout` for a connection on
/// each of its attempts and fails with a timeout (DeadlineExceededError) naming the server
/// and the field: retried (one pool-wait timeout per attempt), and long before the insert
/// is let go.
#[test]
fn a_pool_wait_timeout_is_retried_then_deadline_exceeded_and_counted() {
    let _one = serial();
    let s = Server::start();
    let t = table(
        &s,
        r#""redis_conn_pool_size": 1, "redis_wait_timeout": 200, "rde_max_retries": 2, "rde_retry_backoff_ms": 10, "redis_socket_timeout": 60000"#,
    );
    insert(&t, &[1]).unwrap();
    let (pool_waits, timeouts) = (counter("pool_wait_timeouts"), counter("timeouts"));
    assert_eq!(
        s.cli(&[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]),
        b"+OK\r\n"
    );
    std::thread::scope(|sc| {
        let holder = sc.spawn(|| insert(&t, &[2]));
        let deadline = Instant::now() + Duration::from_secs(10);
        // Blocked (flag b) in HSET: the insert holds the connection, waiting on the pause.
        let blocked = || {
            String::from_utf8_lossy(&s.cli(&[b"CLIENT", b"LIST"]))
                .lines()
                .any(|l| {
                    l.contains(" cmd=hset ")
                        && l.split(' ')
                            .any(|f| f.starts_with("flags=") && f.contains('b'))
                })
        };
        while !blocked() {
            assert!(
                Instant::now() < deadline,
                "the insert never reached the server"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let e = find(&t, &[1]).unwrap_err();
        let took = started.elapsed();
        assert_eq!(s.cli(&[b"CLIENT", b"UNPAUSE"]), b"+OK\r\n");
        holder.join().unwrap().unwrap();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert_eq!(e.tf_code(), 4, "DeadlineExceededError expected: {e}");
        assert!(e.message().contains("redis_wait_timeout = 200 ms"), "{e}");
        assert!(e.message().contains(&s.addr()), "{e}");
        assert!(e.message().contains("gave up after 2 retries"), "{e}");
        // 3 waits of 200 ms and 30 ms of backoff; generous for a loaded machine.
        assert!(took >= Duration::from_millis(600), "took {took:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    });
    assert_eq!(counter("pool_wait_timeouts") - pool_waits, 3);
    assert!(counter("timeouts") - timeouts >= 3);
    assert_eq!(find(&t, &[1, 2]).unwrap(), [1, 1]);
}
