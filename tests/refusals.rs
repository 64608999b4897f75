//! Refusals produced by real redis-servers, not the executor's scripted fake
//! (src/cluster/dispatch.rs): `LOADING` from a server loading a large RDB, and `CLUSTERDOWN`
//! from a cluster that lost a master (no replica, so no failover). Each fails an op with
//! `Unavailable` naming the refusal when no retry is allowed, and is retried until the server
//! serves again otherwise, with the rows intact. (`TRYAGAIN` answers only multi-key
//! commands; the library's one is the exact-update script of the TFRA layout, refused during
//! a slot migration in tests/train_exact.rs.) Both read the process-wide counters, so each
//! holds `support::serial()`.

mod support;

use redis_embedding::{stats, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, serial, wait_for, Cluster, Server};

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn spec() -> TableSpec {
    TableSpec::new("rf", KeyType::I64, ValueType::F32, 1)
}

fn insert(t: &Table, keys: &[i64]) {
    let vb = f32_bytes(&keys.iter().map(|&k| k as f32).collect::<Vec<_>>());
    t.insert(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &Rows::Fixed { data: &vb, row: 4 },
    )
    .unwrap();
}

fn find(t: &Table, keys: &[i64]) -> redis_embedding::Result<Vec<f32>> {
    let mut out = vec![0u8; keys.len() * 4];
    t.find(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &f32_bytes(&[-1.0]),
        &mut out,
        None,
    )?;
    Ok(f32s(&out))
}

const RETRYING: &str =
    r#""rde_max_retries": 1000, "rde_retry_backoff_ms": 10, "expire_model_tag_in_seconds": -1"#;
const NO_RETRY: &str = r#""rde_max_retries": 0, "expire_model_tag_in_seconds": -1"#;

/// A server restarted on an RDB of 20,000 filler keys plus the table, loading each key
/// 150 µs late (`key-load-delay`, a Redis 7 debug option) and serving events every KB
/// (`loading-process-events-interval-bytes`), answers LOADING for about 3 s, slept by the
/// server, not computed, so it lasts as long on a slow machine. Once it is seen answering
/// LOADING: a table opened with no retries fails with Unavailable naming LOADING, and a
/// lookup on a table opened before the restart is retried until the rows are back.
#[test]
fn loading_fails_without_retries_and_is_retried_until_loaded() {
    let _one = serial();
    let s = Server::start();
    let t = Table::open(s.config(RETRYING), spec()).unwrap();
    let keys: Vec<i64> = (0..100).collect();
    insert(&t, &keys);
    let fill = s.cli(&[
        b"EVAL",
        b"for i = 1, 20000 do redis.call('SET', 'filler:' .. i, 'x') end return 1",
        b"0",
    ]);
    assert_eq!(fill, b":1\r\n");
    assert_eq!(s.cli(&[b"SAVE"]), b"+OK\r\n");
    s.stop();

    let (retries, refusals) = (counter("retries"), counter("refusals"));
    std::thread::scope(|sc| {
        // The harness waits until the server answers PING, that is until it has loaded.
        let restarted = sc.spawn(|| {
            s.restart_with(&[
                "--key-load-delay",
                "150",
                "--loading-process-events-interval-bytes",
                "1024",
            ])
        });
        wait_for("the restarted server to answer LOADING", 10, || {
            s.raw(b"*1\r\n$4\r\nPING\r\n")
                .is_some_and(|r| r.starts_with(b"-LOADING"))
        });
        let e = Table::open(s.config(NO_RETRY), spec())
            .err()
            .expect("a table opened on a loading server with no retries");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.message().contains("LOADING"), "{e}");
        assert!(e.message().contains(&s.addr()), "{e}");
        assert_eq!(
            find(&t, &keys).unwrap(),
            keys.iter().map(|&k| k as f32).collect::<Vec<_>>()
        );
        restarted.join().unwrap();
    });
    assert!(counter("refusals") >= refusals + 2, "LOADING was not seen");
    assert!(counter("retries") > retries, "the lookup was not retried");
    s.stop();
}

/// The master that owns the table's bucket, among `c`'s nodes: the one that answers HLEN
/// for it instead of redirecting.
fn owner(c: &Cluster, bucket: &[u8]) -> usize {
    (0..c.nodes.len())
        .find(|&i| !c.nodes[i].cli(&[b"HLEN", bucket]).starts_with(b"-MOVED"))
        .expect("some node owns the bucket")
}

/// A 3-master cluster without replicas (`cluster-require-full-coverage` yes, the default)
/// loses a master that does not own the table's bucket: once the survivors say
/// `cluster_state:fail`, the bucket's owner answers CLUSTERDOWN. A lookup with no retries
/// fails with Unavailable naming CLUSTERDOWN; a retried one is refused and retried (it never
/// fails) until the master is back and the cluster is ok, then returns the rows.
#[test]
fn clusterdown_fails_without_retries_and_is_retried_until_the_cluster_is_up() {
    let _one = serial();
    let c = Cluster::start(3, 0);
    let t = Table::open(c.config(RETRYING), spec()).unwrap();
    let once = Table::open(c.config(NO_RETRY), spec()).unwrap();
    let keys: Vec<i64> = (0..100).collect();
    let rows: Vec<f32> = keys.iter().map(|&k| k as f32).collect();
    insert(&t, &keys);
    assert_eq!(t.buckets().len(), 1);
    let home = owner(&c, &t.buckets().names()[0]);
    let victim = &c.nodes[(home + 1) % 3];
    victim.crash();
    let survivors: Vec<&Server> = c.nodes.iter().filter(|n| n.port != victim.port).collect();
    wait_for("the survivors to mark the cluster failed", 60, || {
        survivors.iter().all(|n| {
            String::from_utf8_lossy(&n.cli(&[b"CLUSTER", b"INFO"])).contains("cluster_state:fail")
        })
    });

    let e = find(&once, &keys).expect_err("a lookup on a failed cluster with no retries");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("CLUSTERDOWN"), "{e}");

    let (refusals, failed) = (counter("refusals"), counter("requests_failed"));
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| find(&t, &keys));
        wait_for("two CLUSTERDOWN refusals of the retried lookup", 30, || {
            assert!(
                !reader.is_finished(),
                "the lookup ended while the cluster was down"
            );
            counter("refusals") >= refusals + 2
        });
        victim.restart();
        assert_eq!(reader.join().unwrap().unwrap(), rows);
    });
    assert_eq!(counter("requests_failed"), failed, "a request gave up");
    c.wait_ok();
}
