//! The fault-handling promises of docs/operations.md that had no test: redirects are followed
//! and counted, a replica that refuses reads (MASTERDOWN) is retried until it serves again,
//! and a write that too few replicas acknowledged fails and is counted. Each test reads the
//! process-wide counters, so the tests of this binary run one at a time.

mod support;

use redis_embedding::{key_slot, stats, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, serial, wait_for, Cluster, Server};

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn spec() -> TableSpec {
    TableSpec::new("g", KeyType::I64, ValueType::F32, 2)
}

fn insert(t: &Table, keys: &[i64]) -> redis_embedding::Result<()> {
    let vals: Vec<f32> = keys.iter().flat_map(|&k| [k as f32, -k as f32]).collect();
    t.insert(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &Rows::Fixed {
            data: &f32_bytes(&vals),
            row: 8,
        },
    )
}

fn find(t: &Table, keys: &[i64]) -> redis_embedding::Result<Vec<f32>> {
    let mut out = vec![0u8; keys.len() * 8];
    t.find(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &f32_bytes(&[0.0, 0.0]),
        &mut out,
        None,
    )?;
    Ok(f32s(&out))
}

fn expected(keys: &[i64]) -> Vec<f32> {
    keys.iter().flat_map(|&k| [k as f32, -k as f32]).collect()
}

fn info_has(s: &Server, section: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(&s.cli(&[b"INFO", section])).contains(needle)
}

#[test]
fn ask_and_moved_are_followed_and_counted_as_redirects() {
    let _one = serial();
    let c = Cluster::start(3, 0);
    let t = Table::open(c.config(""), spec()).unwrap();
    let keys: Vec<i64> = (1..=20).collect();
    insert(&t, &keys).unwrap();
    let bucket = t.buckets().name(0).to_vec();
    let slot = key_slot(&bucket) as usize;
    let count = slot.to_string();
    let owns = |n: &Server| n.cli(&[b"CLUSTER", b"COUNTKEYSINSLOT", count.as_bytes()]) == b":1\r\n";
    let from = c.nodes.iter().find(|n| owns(n)).expect("the bucket's node");
    let to = c.nodes.iter().find(|n| n.port != from.port).unwrap();
    let to_id = to.node_id();

    // Mid-migration: the bucket has moved to `to`, the slot is still `from`'s. `from` answers
    // ASK, and the lookup is sent again to `to` with ASKING.
    from.start_migrating(slot, to);
    from.migrate_keys(to, &[&bucket]);
    let redirects = counter("redirects");
    assert_eq!(find(&t, &keys).unwrap(), expected(&keys));
    assert!(counter("redirects") > redirects, "ASK was not counted");
    assert!(
        to.calls("asking") >= 1,
        "the lookup did not follow ASK to the importing node"
    );

    // Migration finished: every node says `to` owns the slot; our slot map is stale, so
    // `from` answers MOVED and the lookup follows it.
    for n in &c.nodes {
        n.set_slot(slot, b"NODE", &to_id);
    }
    let redirects = counter("redirects");
    let served = to.calls("hmget");
    assert_eq!(find(&t, &keys).unwrap(), expected(&keys));
    assert!(counter("redirects") > redirects, "MOVED was not counted");
    assert!(to.calls("hmget") > served);
    // The slot map learned the move: the next lookup goes straight to `to`.
    let redirects = counter("redirects");
    assert_eq!(find(&t, &keys).unwrap(), expected(&keys));
    assert_eq!(counter("redirects"), redirects);
}

#[test]
fn a_replica_refusing_reads_is_retried_until_it_serves_again() {
    let _one = serial();
    // The master keeps an AOF, so it comes back with its data after the crash.
    let master = Server::start_with(&["--appendonly", "yes"]);
    let port = master.port.to_string();
    let replica = Server::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--replica-serve-stale-data",
        "no",
    ]);
    let keys: Vec<i64> = (1..=50).collect();
    // No TTLs, so the reader has nothing to change on the (read-only) replica when it opens.
    let no_ttl = r#""expire_model_tag_in_seconds": -1"#;
    let writer = Table::open(master.config(no_ttl), spec()).unwrap();
    insert(&writer, &keys).unwrap();
    wait_for("the replica to catch up", 20, || {
        info_has(&replica, b"replication", "master_link_status:up")
            && replica.repl_offset() >= master.repl_offset()
    });
    // A reader of the replica (the layout record exists, so opening writes nothing).
    let reader = Table::open(
        replica.config(
            r#""expire_model_tag_in_seconds": -1, "rde_max_retries": 60, "rde_retry_backoff_ms": 20"#,
        ),
        spec(),
    )
    .unwrap();
    assert_eq!(find(&reader, &keys).unwrap(), expected(&keys));

    master.crash();
    wait_for("the replica to see its master down", 20, || {
        info_has(&replica, b"replication", "master_link_status:down")
    });
    let refusals = counter("refusals");
    std::thread::scope(|sc| {
        let lookup = sc.spawn(|| find(&reader, &keys));
        // The lookup is being refused with MASTERDOWN and resent...
        wait_for("a MASTERDOWN refusal", 20, || {
            counter("refusals") > refusals
        });
        // ...until the master is back and the replica serves again.
        master.restart();
        assert_eq!(lookup.join().unwrap().unwrap(), expected(&keys));
    });
    assert!(counter("refusals") > refusals);
}

#[test]
fn a_write_too_few_replicas_acknowledged_fails_and_is_counted() {
    let _one = serial();
    let master = Server::start();
    let port = master.port.to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_for("the replica to link", 20, || {
        info_has(&replica, b"replication", "master_link_status:up")
    });
    // A WAIT long enough for a linked replica's acknowledgement on a loaded machine, and
    // longer than the socket timeout: the WAIT reply is waited for that much longer, so a
    // shortfall is reported as one, not as a stalled server.
    let t = Table::open(
        master.config(
            r#""rde_wait_replicas": 1, "rde_wait_replicas_timeout_ms": 2000, "redis_socket_timeout": 500, "rde_max_retries": 1"#,
        ),
        spec(),
    )
    .unwrap();
    insert(&t, &[1, 2]).unwrap();

    replica.stop();
    wait_for("the master to see no replica", 20, || {
        info_has(&master, b"replication", "connected_slaves:0")
    });
    let shortfalls = counter("replica_ack_shortfalls");
    let e = insert(&t, &[3, 4]).unwrap_err();
    assert_eq!(e.tf_code(), 14, "UnavailableError expected: {e}");
    assert!(e.message().contains("acknowledged the write"), "{e}");
    assert!(e.message().contains(&master.addr()), "{e}");
    // Resent once (rde_max_retries 1; writes are idempotent), and short both times.
    assert!(e.message().contains("gave up after 1 retries"), "{e}");
    assert_eq!(counter("replica_ack_shortfalls") - shortfalls, 2);

    // With the replica back, writes are acknowledged again.
    replica.restart();
    wait_for("the replica to resync", 20, || {
        info_has(&replica, b"replication", "master_link_status:up")
    });
    insert(&t, &[5, 6]).unwrap();
}
