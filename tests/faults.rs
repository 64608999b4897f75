//! Faults injected into real redis-servers while tables work: connections killed
//! (CLIENT KILL) while a request is in flight, replies stalled past or within the socket
//! timeout (CLIENT PAUSE), the server killed and restarted with AOF, and concurrent writers.
//! Each test checks that nothing acknowledged is lost, that failures are errors naming the
//! server (never defaults), and that the fault counters saw the faults.
//!
//! The counters are process-wide, so every test here holds `support::serial()`: a counter
//! delta a test checks was caused by that test.

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

/// Pauses the server's write commands (reads and admin commands still run) for far longer
/// than any test waits: [`unpause`] ends it.
fn pause_writes(s: &Server) {
    assert_eq!(
        s.cli(&[b"CLIENT", b"PAUSE", b"60000", b"WRITE"]),
        b"+OK\r\n"
    );
}

fn unpause(s: &Server) {
    assert_eq!(s.cli(&[b"CLIENT", b"UNPAUSE"]), b"+OK\r\n");
}

/// Waits (at most 10 s) until CLIENT LIST shows a client blocked (flag `b`) in `cmd`: under
/// [`pause_writes`], a request that has reached the server and not run yet.
fn wait_blocked_in(s: &Server, cmd: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!(" cmd={cmd} ");
    loop {
        let list = String::from_utf8_lossy(&s.cli(&[b"CLIENT", b"LIST"])).into_owned();
        let blocked = list.lines().any(|l| {
            l.contains(&want)
                && l.split(' ')
                    .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
        });
        if blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no client was blocked in {cmd} within 10 s; CLIENT LIST:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_killed_connection_is_reopened_and_the_request_retried() {
    let _serial = support::serial();
    let s = Server::start();
    // A paused request waits for its kill, however slow this machine: no socket timeout.
    let t = table(&s, "kill1", r#""redis_socket_timeout": 60000"#);
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
    pause_writes(&s);
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| insert(&t, &[4], 8.0));
        // The insert is waiting on the pause once the server lists a client blocked in it.
        wait_blocked_in(&s, "hset");
        assert!(kill_clients(&s) >= 1);
        unpause(&s);
        writer.join().unwrap().unwrap();
    });
    assert!(counter("connection_failures") > failures);
    assert!(counter("retries") > retries);
    // Every test in this binary is standalone, where a retry just reconnects: no refreshes.
    assert_eq!(counter("topology_refreshes"), 0);
    assert_eq!(find(&t, &[4]).unwrap().1, [1]);
}

/// A writer inserts batches while its requests are killed in flight: 20 times, writes are
/// paused, the writer's HSET pipeline is seen blocked on the server (reached it, not run),
/// and its connection is killed. Every insert is acknowledged (inserts are idempotent, so
/// the cut pipeline is resent), every kill is seen as a connection failure and a retry, and
/// every row is there afterwards.
#[test]
fn connections_killed_during_a_load_lose_nothing() {
    const KILLS: u64 = 20;
    const BATCHES: i64 = 100;
    let _serial = support::serial();
    let s = Server::start();
    let t = table(
        &s,
        "kill2",
        // A paused request waits for its kill, however slow this machine: no socket timeout.
        // No TTL: its periodic EXPIRE refresh (every 60 s) would be the write found paused.
        r#""keys_sending_size": 64, "rde_retry_backoff_ms": 5, "redis_socket_timeout": 60000, "expire_model_tag_in_seconds": 0"#,
    );
    let (failures, retries, failed) = (
        counter("connection_failures"),
        counter("retries"),
        counter("requests_failed"),
    );
    let (tx, acks) = mpsc::channel::<i64>();
    let killer_done = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|sc| {
        let (t, killer_done) = (&t, &killer_done);
        let writer = sc.spawn(move || {
            // Runs until the killer is done and at least BATCHES batches are in.
            let started = Instant::now();
            let mut b = 0i64;
            while b < BATCHES || !killer_done.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "the load did not finish within 120 s ({b} batches)"
                );
                let keys: Vec<i64> = (b * 500..(b + 1) * 500).collect();
                insert(t, &keys, b as f32).unwrap_or_else(|e| panic!("batch {b}: {e}"));
                // The killer may be gone (done): acknowledgements are then unread.
                let _ = tx.send(b);
                b += 1;
            }
            b
        });
        for kill in 0..KILLS {
            pause_writes(&s);
            wait_blocked_in(&s, "hset");
            assert!(kill_clients(&s) >= 1, "kill {kill} found no client");
            // The writer cannot finish a batch while writes are paused: acknowledgements
            // read after the unpause are of batches that got through after this kill.
            while acks.try_recv().is_ok() {}
            unpause(&s);
            // One kill per request: the next kill waits until the killed one got through.
            if let Err(e) = acks.recv_timeout(Duration::from_secs(30)) {
                panic!("no insert was acknowledged within 30 s after kill {kill}: {e}");
            }
        }
        killer_done.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap()
    });
    let (failures, retries) = (
        counter("connection_failures") - failures,
        counter("retries") - retries,
    );
    eprintln!(
        "kill during load: {KILLS} in-flight kills, {failures} connection failures, {retries} retries, {written} inserts acknowledged"
    );
    assert!(
        failures >= KILLS,
        "{KILLS} kills but {failures} connection failures"
    );
    assert!(retries >= KILLS, "{KILLS} kills but {retries} retries");
    assert_eq!(counter("requests_failed"), failed, "an insert failed");
    for b in 0..written {
        let keys: Vec<i64> = (b * 500..(b + 1) * 500).collect();
        let (v, ex) = find(&t, &keys).unwrap();
        assert!(ex.iter().all(|&e| e == 1), "batch {b} lost rows");
        assert!(
            v.iter().all(|&x| x == b as f32),
            "batch {b} has wrong values"
        );
    }
}

/// Remove (HDEL) and clear (UNLINK) are idempotent like insert: each is seen blocked on the
/// server (writes paused: it reached the server and has not run) when its connection is
/// killed, and is resent on a new connection and succeeds; the rows are gone afterwards.
#[test]
fn a_remove_or_clear_killed_in_flight_is_resent() {
    let _serial = support::serial();
    let s = Server::start();
    // A paused request waits for its kill, however slow this machine: no socket timeout.
    let t = table(&s, "kill4", r#""redis_socket_timeout": 60000"#);
    insert(&t, &[1, 2, 3], 1.0).unwrap();
    let kb = i64_keys(&[1, 2]);
    let remove = || t.remove(&t.keys(&kb, &[]).unwrap());
    let clear = || t.clear();
    let ops: [(&str, &(dyn Fn() -> redis_embedding::Result<()> + Sync)); 2] =
        [("hdel", &remove), ("unlink", &clear)];
    for (cmd, op) in ops {
        let (failures, retries) = (counter("connection_failures"), counter("retries"));
        let ran = s.calls(cmd);
        pause_writes(&s);
        std::thread::scope(|sc| {
            let cut = sc.spawn(op);
            wait_blocked_in(&s, cmd);
            assert!(kill_clients(&s) >= 1);
            unpause(&s);
            cut.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("{cmd} cut in flight was not resent: {e}"));
        });
        assert!(counter("connection_failures") > failures, "{cmd}");
        assert!(counter("retries") > retries, "{cmd}");
        assert_eq!(
            s.calls(cmd) - ran,
            1,
            "{cmd} ran once, on the new connection"
        );
    }
    assert_eq!(find(&t, &[1, 2, 3]).unwrap().1, [0, 0, 0]);
}

/// Accum is not idempotent: a pipeline cut after sending is reported, never resent. Ten
/// times, an acknowledged accum is followed by one whose compare-and-set EVAL is seen
/// blocked on the server (writes paused: it reached the server and has not run) when its
/// connection is killed. That accum must fail naming the server, the EVAL must never run
/// (no resend: the server's EVAL count moves only with the acknowledged accums, and no
/// retry round is counted), and the stored sum must equal the acknowledged accums.
#[test]
fn an_accum_killed_in_flight_fails_and_is_never_resent() {
    const ROUNDS: u32 = 10;
    let _serial = support::serial();
    let s = Server::start();
    // A paused request waits for its kill, however slow this machine: no socket timeout.
    let t = table(&s, "kill3", r#""redis_socket_timeout": 60000"#);
    let keys: Vec<i64> = (0..32).collect();
    insert(&t, &keys, 0.0).unwrap();
    let kb = i64_keys(&keys);
    let d = f32_bytes(&vec![1.0; keys.len() * DIM]);
    let exists = vec![1u8; keys.len()];
    let accum = || {
        t.accum(
            &t.keys(&kb, &[]).unwrap(),
            &Rows::Fixed {
                data: &d,
                row: DIM * 4,
            },
            &exists,
        )
    };
    let (failures, retries, failed) = (
        counter("connection_failures"),
        counter("retries"),
        counter("requests_failed"),
    );
    let evals = s.calls("eval");
    for round in 1..=ROUNDS {
        accum().unwrap();
        pause_writes(&s);
        let r = std::thread::scope(|sc| {
            let killed = sc.spawn(accum);
            wait_blocked_in(&s, "eval");
            assert!(kill_clients(&s) >= 1);
            unpause(&s);
            killed.join().unwrap()
        });
        let e = r.expect_err(
            "an accum whose CAS was cut in flight succeeded: it was resent on a new connection",
        );
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(e.message().contains(&s.addr()), "{e}");
        assert!(e.message().contains("so it is not retried"), "{e}");
        assert_eq!(
            s.calls("eval") - evals,
            u64::from(round),
            "round {round}: the killed CAS ran (it was resent)"
        );
        let (v, _) = find(&t, &keys).unwrap();
        assert!(
            v.iter().all(|&x| x == round as f32),
            "round {round}: sums {:?}, expected {round} (the acknowledged accums only)",
            &v[..DIM]
        );
    }
    assert!(counter("connection_failures") - failures >= u64::from(ROUNDS));
    assert_eq!(
        counter("requests_failed") - failed,
        u64::from(ROUNDS),
        "one failed request per killed accum"
    );
    assert_eq!(counter("retries"), retries, "a request was resent");
}

/// Replies stalled past the socket timeout fail with DeadlineExceeded after the bounded
/// retries, well before the stall ends; afterwards the same table works again.
#[test]
fn stalled_replies_time_out_within_the_retry_bound() {
    let _serial = support::serial();
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

/// A slow reply within the socket timeout is waited for, not failed: the server is paused
/// (CLIENT PAUSE ALL, every command waits) for 1 s with a 10 s socket timeout. The lookup
/// succeeds, no sooner than the pause ends (so it really waited) and well before the socket
/// timeout, without a timeout, a retry or a connection failure.
#[test]
fn a_slow_reply_within_the_timeout_succeeds() {
    const PAUSE: Duration = Duration::from_millis(1000);
    const SOCKET_TIMEOUT: Duration = Duration::from_millis(10_000);
    let _serial = support::serial();
    let s = Server::start();
    let t = table(
        &s,
        "slow2",
        &format!(r#""redis_socket_timeout": {}"#, SOCKET_TIMEOUT.as_millis()),
    );
    insert(&t, &[1], 1.0).unwrap();
    let (timeouts, retries, failures) = (
        counter("timeouts"),
        counter("retries"),
        counter("connection_failures"),
    );
    // The pause starts after `started`, so no reply can come before started + PAUSE.
    let started = Instant::now();
    let pause_ms = PAUSE.as_millis().to_string();
    assert_eq!(
        s.cli(&[b"CLIENT", b"PAUSE", pause_ms.as_bytes(), b"ALL"]),
        b"+OK\r\n"
    );
    let r = find(&t, &[1]);
    let took = started.elapsed();
    assert_eq!(r.unwrap().1, [1]);
    assert!(
        took >= PAUSE,
        "the lookup returned after {took:?}, before the {PAUSE:?} pause ended: it did not wait"
    );
    assert!(
        took < SOCKET_TIMEOUT / 2,
        "the lookup took {took:?} against a {PAUSE:?} pause"
    );
    assert_eq!(counter("timeouts"), timeouts, "a read timed out");
    assert_eq!(counter("retries"), retries, "the lookup was retried");
    assert_eq!(counter("connection_failures"), failures);
}

/// The server is SIGKILLed under a writer and restarted on its AOF (`appendfsync always`).
/// While it is down every insert fails within the timeout bound with an error naming the
/// server; after the restart the same table carries on; every acknowledged batch is there.
#[test]
fn server_killed_and_restarted_keeps_every_acknowledged_write() {
    let _serial = support::serial();
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
    let _serial = support::serial();
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
