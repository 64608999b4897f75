//! Faults injected into real redis-servers while tables work: connections killed
//! (CLIENT KILL), replies stalled past the socket timeout (CLIENT PAUSE), the server killed
//! and restarted with AOF, and concurrent writers. Each test checks that nothing
//! acknowledged is lost, that failures are errors naming the server (never defaults), and
//! that the fault counters saw the faults.

mod support;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis_embedding::{stats, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Server};

const DIM: usize = 4;

fn table(s: &Server, name: &str, extra: &str) -> Table {
    Table::open(
        s.config(extra),
        TableSpec::new(name, KeyType::I64, ValueType::F32, DIM),
    )
    .unwrap()
}

fn insert(t: &Table, keys: &[i64], v: f32) -> redis_embedding::Result<()> {
    let kb = i64_keys(keys);
    let vb = f32_bytes(&vec![v; keys.len() * DIM]);
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed {
            data: &vb,
            row: DIM * 4,
        },
    )
}

fn find(t: &Table, keys: &[i64]) -> redis_embedding::Result<(Vec<f32>, Vec<u8>)> {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * DIM * 4];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&[-1.0; DIM]),
        &mut out,
        Some(&mut ex),
    )?;
    Ok((f32s(&out), ex))
}

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn kill_clients(s: &Server) -> u64 {
    let r = s.cli(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"]);
    String::from_utf8_lossy(&r[1..r.len() - 2]).parse().unwrap()
}

#[test]
fn a_killed_connection_is_reopened_and_the_request_retried() {
    let s = Server::start();
    let t = table(&s, "kill1", "");
    insert(&t, &[1, 2, 3], 7.0).unwrap();
    // Killed while idle in the pool: found dead before use and replaced.
    let stale = counter("stale_connections");
    assert!(kill_clients(&s) >= 1);
    let (v, ex) = find(&t, &[1, 2, 3]).unwrap();
    assert_eq!(ex, [1, 1, 1]);
    assert!(v.iter().all(|&x| x == 7.0));
    assert!(counter("stale_connections") > stale);
    // Killed with a reply in flight (the server is paused, so the kill lands first): the
    // lookup is resent on a new connection.
    let (failures, retries) = (counter("connection_failures"), counter("retries"));
    assert_eq!(
        s.cli(&[b"CLIENT", b"PAUSE", b"10000", b"WRITE"]),
        b"+OK\r\n"
    );
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| insert(&t, &[4], 8.0));
        // The insert is waiting on the pause once the server lists a client blocked in it.
        while !String::from_utf8_lossy(&s.cli(&[b"CLIENT", b"LIST"])).contains("cmd=hset") {
            std::thread::yield_now();
        }
        assert!(kill_clients(&s) >= 1);
        assert_eq!(s.cli(&[b"CLIENT", b"UNPAUSE"]), b"+OK\r\n");
        writer.join().unwrap().unwrap();
    });
    assert!(counter("connection_failures") > failures);
    assert!(counter("retries") > retries);
    // Every test in this binary is standalone, where a retry just reconnects: no refreshes.
    assert_eq!(counter("topology_refreshes"), 0);
    assert_eq!(find(&t, &[4]).unwrap().1, [1]);
}

/// A writer inserts batches while connections are killed under it, one kill per batch at
/// an unsynchronised moment. Every insert is acknowledged (inserts are idempotent, so a
/// broken pipeline is resent) and every row is there afterwards.
#[test]
fn connections_killed_during_a_load_lose_nothing() {
    let s = Server::start();
    let t = table(
        &s,
        "kill2",
        r#""keys_sending_size": 64, "rde_retry_backoff_ms": 5"#,
    );
    let failures = counter("connection_failures");
    let (tx, rx) = mpsc::channel::<()>();
    let mut kills = 0;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for b in 0..100i64 {
                let keys: Vec<i64> = (b * 500..(b + 1) * 500).collect();
                insert(&t, &keys, b as f32).unwrap();
                tx.send(()).unwrap();
            }
            drop(tx);
        });
        while rx.recv().is_ok() {
            kills += kill_clients(&s);
        }
    });
    eprintln!(
        "kill during load: {kills} connections killed, {} connection failures, 100 inserts acknowledged",
        counter("connection_failures") - failures
    );
    assert!(kills >= 20, "only {kills} connections were killed");
    assert!(counter("connection_failures") > failures);
    for b in 0..100i64 {
        let keys: Vec<i64> = (b * 500..(b + 1) * 500).collect();
        let (v, ex) = find(&t, &keys).unwrap();
        assert!(ex.iter().all(|&e| e == 1), "batch {b} lost rows");
        assert!(
            v.iter().all(|&x| x == b as f32),
            "batch {b} has wrong values"
        );
    }
}

/// Accum is not idempotent: a pipeline cut after sending is reported, never resent. So the
/// stored sum is at least the acknowledged accums and at most those plus the failed ones.
#[test]
fn accums_under_killed_connections_are_never_applied_twice() {
    let s = Server::start();
    let t = table(&s, "kill3", "");
    let keys: Vec<i64> = (0..32).collect();
    insert(&t, &keys, 0.0).unwrap();
    let kb = i64_keys(&keys);
    let d = f32_bytes(&vec![1.0; keys.len() * DIM]);
    let exists = vec![1u8; keys.len()];
    let (tx, rx) = mpsc::channel::<()>();
    let (mut acked, mut failed) = (0u32, 0u32);
    let server = &s;
    std::thread::scope(|sc| {
        sc.spawn(move || {
            while rx.recv().is_ok() {
                kill_clients(server);
            }
        });
        for _ in 0..200 {
            match t.accum(
                &t.keys(&kb, &[]).unwrap(),
                &Rows::Fixed {
                    data: &d,
                    row: DIM * 4,
                },
                &exists,
            ) {
                Ok(()) => acked += 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
                    assert!(e.message().contains(&s.addr()), "{e}");
                    failed += 1;
                }
            }
            tx.send(()).unwrap();
        }
        drop(tx);
    });
    eprintln!("accum under kills: {acked} acknowledged, {failed} reported as failed");
    let (v, _) = find(&t, &keys).unwrap();
    for x in v {
        assert!(
            x >= acked as f32 && x <= (acked + failed) as f32,
            "sum {x} outside [{acked}, {}]",
            acked + failed
        );
    }
}

/// Replies stalled past the socket timeout fail with DeadlineExceeded after the bounded
/// retries, well before the stall ends; afterwards the same table works again.
#[test]
fn stalled_replies_time_out_within_the_retry_bound() {
    let s = Server::start();
    let t = table(
        &s,
        "slow",
        r#""redis_socket_timeout": 200, "redis_connect_timeout": 200, "rde_max_retries": 2, "rde_retry_backoff_ms": 50"#,
    );
    insert(&t, &[1], 1.0).unwrap();
    let timeouts = counter("timeouts");
    assert_eq!(s.cli(&[b"CLIENT", b"PAUSE", b"5000", b"ALL"]), b"+OK\r\n");
    let started = Instant::now();
    let e = find(&t, &[1]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(s.cli(&[b"CLIENT", b"UNPAUSE"]), b"+OK\r\n");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(e.tf_code(), 4);
    assert!(e.message().contains(&s.addr()), "{e}");
    assert!(e.message().contains("gave up after 2 retries"), "{e}");
    // 3 attempts × 200 ms + 50 + 100 ms of backoff, far below the 5 s stall.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(counter("timeouts") >= timeouts + 3);
    assert_eq!(find(&t, &[1]).unwrap().1, [1]);
}

/// A slow reply within the socket timeout is waited for, not failed.
#[test]
fn a_slow_reply_within_the_timeout_succeeds() {
    let s = Server::start();
    let t = table(&s, "slow2", r#""redis_socket_timeout": 3000"#);
    insert(&t, &[1], 1.0).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| s.cli(&[b"DEBUG", b"SLEEP", b"0.3"]));
        assert_eq!(find(&t, &[1]).unwrap().1, [1]);
    });
}

/// The server is SIGKILLed under a writer and restarted on its AOF (`appendfsync always`).
/// While it is down every insert fails within the timeout bound with an error naming the
/// server; after the restart the same table carries on; every acknowledged batch is there.
#[test]
fn server_killed_and_restarted_keeps_every_acknowledged_write() {
    let s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let t = table(
        &s,
        "aof",
        r#""redis_socket_timeout": 300, "redis_connect_timeout": 300, "rde_max_retries": 2, "rde_retry_backoff_ms": 20"#,
    );
    let (to_main, from_writer) = mpsc::channel::<&str>();
    let (to_writer, from_main) = mpsc::channel::<()>();
    let mut acked: HashMap<i64, f32> = HashMap::new();
    let mut failures = Vec::new();
    let server = &s;
    std::thread::scope(|sc| {
        sc.spawn(move || {
            if from_writer.recv() == Ok("kill") {
                server.crash();
            }
            if from_writer.recv() == Ok("restart") {
                server.restart();
                to_writer.send(()).unwrap();
            }
        });
        let mut b = 0i64;
        let mut down_in_a_row = 0;
        while b < 120 {
            if b == 40 {
                to_main.send("kill").unwrap();
            }
            let keys: Vec<i64> = (b * 100..(b + 1) * 100).collect();
            let started = Instant::now();
            match insert(&t, &keys, b as f32) {
                Ok(()) => {
                    keys.iter().for_each(|&k| {
                        acked.insert(k, b as f32);
                    });
                    down_in_a_row = 0;
                }
                Err(e) => {
                    failures.push((started.elapsed(), e));
                    down_in_a_row += 1;
                    if down_in_a_row == 5 {
                        to_main.send("restart").unwrap();
                        from_main.recv().unwrap();
                    }
                }
            }
            b += 1;
        }
    });
    eprintln!(
        "server kill: {} inserts failed while down (slowest {:?}), {} rows acknowledged and checked",
        failures.len(),
        failures.iter().map(|f| f.0).max(),
        acked.len()
    );
    assert!(failures.len() >= 5, "the kill was not noticed");
    for (took, e) in &failures {
        assert!(
            matches!(e.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{e}"
        );
        assert!(e.message().contains(&s.addr()), "{e}");
        // 3 attempts of at most connect + socket timeout, plus backoff.
        assert!(
            *took < Duration::from_secs(3),
            "an insert took {took:?}: {e}"
        );
    }
    assert!(acked.len() >= 100 * 100, "training did not resume");
    let keys: Vec<i64> = acked.keys().copied().collect();
    let (v, ex) = find(&t, &keys).unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(ex[i], 1, "acknowledged key {k} was lost");
        assert_eq!(v[i * DIM], acked[k], "key {k} has a stale value");
    }
}

/// Threads insert, remove and look up their own keys while two more accum shared keys; each
/// thread checks every lookup against its own model, and the table's contents are checked
/// against the union of the models at the end.
#[test]
fn concurrent_insert_remove_lookup_keep_their_invariants() {
    let s = Server::start();
    let t = table(&s, "stress", r#""keys_sending_size": 32"#);
    let shared: Vec<i64> = (1_000_000..1_000_050).collect();
    insert(&t, &shared, 0.0).unwrap();
    let models: Vec<HashMap<i64, f32>> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..4i64)
            .map(|w| {
                let t = &t;
                sc.spawn(move || {
                    let mut model = HashMap::new();
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
                    let mut next = || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    for step in 0..150 {
                        let keys: Vec<i64> = (0..20)
                            .map(|_| w * 10_000 + (next() % 300) as i64)
                            .collect();
                        match next() % 3 {
                            0 => {
                                insert(t, &keys, step as f32).unwrap();
                                keys.iter().for_each(|&k| {
                                    model.insert(k, step as f32);
                                });
                            }
                            1 => {
                                let kb = i64_keys(&keys);
                                t.remove(&t.keys(&kb, &[]).unwrap()).unwrap();
                                keys.iter().for_each(|k| {
                                    model.remove(k);
                                });
                            }
                            _ => {
                                let (v, ex) = find(t, &keys).unwrap();
                                for (i, k) in keys.iter().enumerate() {
                                    match model.get(k) {
                                        Some(&m) => {
                                            assert_eq!(ex[i], 1, "key {k}");
                                            assert_eq!(v[i * DIM], m, "key {k}");
                                        }
                                        None => assert_eq!(ex[i], 0, "removed key {k} exists"),
                                    }
                                }
                            }
                        }
                    }
                    model
                })
            })
            .collect();
        for _ in 0..2 {
            sc.spawn(|| {
                let kb = i64_keys(&shared);
                let d = f32_bytes(&vec![1.0; shared.len() * DIM]);
                for _ in 0..100 {
                    t.accum(
                        &t.keys(&kb, &[]).unwrap(),
                        &Rows::Fixed {
                            data: &d,
                            row: DIM * 4,
                        },
                        &vec![1u8; shared.len()],
                    )
                    .unwrap();
                }
            });
        }
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (v, _) = find(&t, &shared).unwrap();
    assert!(v.iter().all(|&x| x == 200.0), "lost accums");
    let total: usize = models.iter().map(HashMap::len).sum();
    assert_eq!(t.size().unwrap() as usize, total + shared.len());
    let exported = t.export().unwrap();
    assert_eq!(exported.len, total + shared.len());
    for m in &models {
        let keys: Vec<i64> = m.keys().copied().collect();
        let (v, ex) = find(&t, &keys).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!((ex[i], v[i * DIM]), (1, m[k]), "key {k}");
        }
    }
}
