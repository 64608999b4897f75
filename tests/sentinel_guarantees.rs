//! Sentinel promises of docs/operations.md that no other test showed: a master demoted under
//! an open table answers READONLY, and the write is retried (asking the sentinels again each
//! time) until they name the new master; a node the sentinels name that is not a master is
//! never used; and TLS reaches the sentinels as well as the master they name. One test reads
//! the process-wide counters, so every test here holds `support::serial()`.

mod support;

use redis_embedding::{stats, Config, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, free_port, i64_keys, serial, wait_for, Certs, Sentinel, Server};

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn spec() -> TableSpec {
    TableSpec::new("sg", KeyType::I64, ValueType::F32, 1)
}

fn insert(t: &Table, keys: &[i64]) -> redis_embedding::Result<()> {
    let vb = f32_bytes(&keys.iter().map(|&k| k as f32).collect::<Vec<_>>());
    t.insert(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &Rows::Fixed { data: &vb, row: 4 },
    )
}

fn find(t: &Table, keys: &[i64]) -> Vec<f32> {
    let mut out = vec![0u8; keys.len() * 4];
    t.find(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &f32_bytes(&[-1.0]),
        &mut out,
        None,
    )
    .unwrap();
    f32s(&out)
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

/// The master is demoted by hand under an open table (the replica is promoted with
/// `REPLICAOF NO ONE`, the old master made its replica), while the sentinel still names the
/// old master. A table opened now is refused: the named master answers ROLE as a replica, so
/// it is "not yet promoted" and never used. The open table's write reaches the old master,
/// is refused with READONLY, and is resent after asking the sentinel again, more than once,
/// without ever failing; once the sentinel names the new master the write lands there.
#[test]
fn a_demoted_master_is_retried_until_the_sentinels_name_the_new_one() {
    let _one = serial();
    let s = Sentinel::start();
    let t = Table::open(
        // No TTLs anywhere, so a reader opening later has nothing to write.
        s.config(
            r#""rde_max_retries": 1000, "rde_retry_backoff_ms": 10, "expire_model_tag_in_seconds": -1"#,
        ),
        spec(),
    )
    .unwrap();
    let first: Vec<i64> = (0..100).collect();
    insert(&t, &first).unwrap();
    s.wait_replicated();

    // The swap. A sentinel reconfigures a master that reports itself a replica (and a
    // replica that reports itself a master) once the role has been reported for down-after
    // plus two 10 s INFO periods. With the harness' down-after of 1 s that is ~21 s, which a
    // slow machine can spend before the checks below; raised to an hour here, the sentinel
    // cannot react during the test at any speed, so nothing depends on the clock.
    assert_eq!(
        s.sentinel.cli(&[
            b"SENTINEL",
            b"SET",
            b"mymaster",
            b"down-after-milliseconds",
            b"3600000"
        ]),
        b"+OK\r\n"
    );
    let (old, new) = (&s.master, &s.replica);
    assert_eq!(new.cli(&[b"REPLICAOF", b"NO", b"ONE"]), b"+OK\r\n");
    let new_port = new.port.to_string();
    assert!(old
        .cli(&[b"REPLICAOF", b"127.0.0.1", new_port.as_bytes()])
        .starts_with(b"+OK"));
    wait_for("the old master to replicate from the new one", 20, || {
        text(old.cli(&[b"INFO", b"replication"])).contains("master_link_status:up")
    });
    let named = || {
        text(
            s.sentinel
                .cli(&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"mymaster"]),
        )
    };
    assert!(
        named().contains(&old.port.to_string()),
        "the sentinel already names another master: {}",
        named()
    );

    // A reader opening now (it would write nothing: the layout record exists and it sets no
    // TTLs) is refused instead of reading from the replica the sentinel names.
    let e = Table::open(
        s.config(r#""expire_model_tag_in_seconds": -1, "rde_max_retries": 0"#),
        spec(),
    )
    .err()
    .expect("a table opened on a replica the sentinel still names master");
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(
        e.message()
            .contains("is not a master (failover in progress)"),
        "{e}"
    );
    assert!(e.message().contains(&old.addr()), "{e}");

    let (refusals, refreshes, failed) = (
        counter("refusals"),
        counter("topology_refreshes"),
        counter("requests_failed"),
    );
    let rejected = old.cmdstat("hset", "rejected_calls");
    let second: Vec<i64> = (100..200).collect();
    std::thread::scope(|sc| {
        let writer = sc.spawn(|| insert(&t, &second));
        // Refused at the old master, the sentinel asked again (still naming it), refused again.
        wait_for("two READONLY refusals with a refresh between", 30, || {
            assert!(
                !writer.is_finished(),
                "the write ended (failed: it was not retried) while the sentinel named a replica"
            );
            counter("refusals") >= refusals + 2 && counter("topology_refreshes") > refreshes
        });
        // The sentinel now names the new master.
        assert_eq!(
            s.sentinel.cli(&[b"SENTINEL", b"REMOVE", b"mymaster"]),
            b"+OK\r\n"
        );
        assert_eq!(
            s.sentinel.cli(&[
                b"SENTINEL",
                b"MONITOR",
                b"mymaster",
                b"127.0.0.1",
                new_port.as_bytes(),
                b"1"
            ]),
            b"+OK\r\n"
        );
        writer.join().unwrap().unwrap();
    });
    assert!(
        old.cmdstat("hset", "rejected_calls") >= rejected + 2,
        "the old master did not refuse the write (READONLY)"
    );
    assert_eq!(counter("requests_failed"), failed, "a request gave up");
    assert!(
        new.calls("hset") >= 1,
        "the write did not reach the new master"
    );
    let all: Vec<i64> = (0..200).collect();
    assert_eq!(
        find(&t, &all),
        all.iter().map(|&k| k as f32).collect::<Vec<_>>()
    );
}

/// A sentinel that speaks TLS only (its `tls-port`; the plain port is the harness'), naming a
/// master that speaks TLS: with `rde_tls` the table asks the sentinel over TLS, verifying its
/// certificate, and writes to the master over TLS. A CA that did not sign the sentinel's
/// certificate fails at the sentinel, naming it; so does plain TCP to its TLS port.
#[test]
fn tls_reaches_the_sentinels_and_the_master_they_name() {
    let _one = serial();
    let certs = Certs::generate();
    let (master, master_tls) = Server::start_tls(&certs, false);
    let tls_port = free_port();
    let sentinel = Server::start_sentinel(&format!(
        "tls-port {tls_port}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
         tls-auth-clients no\ntls-replication yes\n\
         sentinel monitor mymaster 127.0.0.1 {master_tls} 1\n\
         sentinel down-after-milliseconds mymaster 60000\n",
        cert = certs.path("server.crt"),
        key = certs.path("server.key"),
        ca = certs.path("ca.crt"),
    ));
    let cfg = |tls: &str| {
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 1, "redis_master_name": "mymaster",
                "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{tls_port}],
                "table_store_mode": 0, "rde_max_retries": 0, "redis_sentinel_socket_timeout": 2000{tls}}}"#
        ))
        .unwrap()
    };
    let ca = |file: &str| {
        format!(
            r#", "rde_tls": true, "rde_tls_ca_cert_file": "{}""#,
            certs.path(file)
        )
    };
    let t = Table::open(cfg(&ca("ca.crt")), spec()).unwrap();
    insert(&t, &[1, 2, 3]).unwrap();
    assert_eq!(find(&t, &[3, 1, 9]), [3.0, 1.0, -1.0]);
    assert_eq!(master.calls("hset"), 1, "the rows went to the named master");

    let sentinel_addr = format!("127.0.0.1:{tls_port}");
    let e = Table::open(cfg(&ca("other-ca.crt")), spec())
        .err()
        .expect("a sentinel certificate from another CA was accepted");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("certificate"), "{e}");
    assert!(e.message().contains(&sentinel_addr), "{e}");
    let e = Table::open(cfg(""), spec())
        .err()
        .expect("plain TCP to the sentinel's TLS port worked");
    assert!(e.message().contains(&sentinel_addr), "{e}");
    drop(sentinel);
}
