//! Sentinel mode against a real master, replica and sentinel, including a forced failover.

mod support;

use redis_embedding::{ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Sentinel, Server};

fn spec() -> TableSpec {
    TableSpec::new("emb", KeyType::I64, ValueType::F32, 1)
}

fn insert(t: &Table, keys: &[i64]) -> redis_embedding::Result<()> {
    let kb = i64_keys(keys);
    let vb = f32_bytes(&keys.iter().map(|&k| k as f32).collect::<Vec<_>>());
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed { data: &vb, row: 4 },
    )
}

fn find(t: &Table, keys: &[i64]) -> Vec<f32> {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * 4];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&[-1.0]),
        &mut out,
        None,
    )
    .unwrap();
    f32s(&out)
}

#[test]
fn discovers_the_master_and_survives_a_forced_failover() {
    let s = Sentinel::start();
    let t = Table::open(
        s.config(r#""rde_max_retries": 30, "redis_connect_timeout": 300"#),
        spec(),
    )
    .unwrap();
    let keys: Vec<i64> = (0..500).collect();
    insert(&t, &keys).unwrap();
    assert_eq!(s.master.calls("hset"), 1);
    s.wait_replicated();

    s.master.crash();
    // The next write waits (bounded) for the sentinel to promote the replica, then succeeds.
    let more: Vec<i64> = (500..600).collect();
    insert(&t, &more).unwrap();
    assert!(
        s.replica.calls("hset") >= 1,
        "the write did not reach the promoted replica"
    );
    let all: Vec<i64> = (0..600).collect();
    assert_eq!(
        find(&t, &all),
        all.iter().map(|&k| k as f32).collect::<Vec<_>>()
    );
    assert_eq!(t.size().unwrap(), 600);
}

#[test]
fn replica_reads_when_configured() {
    let s = Sentinel::start();
    let t = Table::open(s.config(r#""redis_read_access_slave": true"#), spec()).unwrap();
    insert(&t, &[1, 2, 3]).unwrap();
    s.wait_replicated();
    assert_eq!(find(&t, &[3, 1]), [3.0, 1.0]);
    assert_eq!(s.replica.calls("hmget"), 1);
    assert_eq!(s.master.calls("hmget"), 0);
}

#[test]
fn sentinel_password_is_used_and_a_wrong_one_is_a_clear_error() {
    let s = Sentinel::start_with_password("s3cret-sentinel");
    let t = Table::open(
        s.config(r#""redis_sentinel_password": "s3cret-sentinel""#),
        spec(),
    )
    .unwrap();
    insert(&t, &[7]).unwrap();
    assert_eq!(find(&t, &[7]), [7.0]);
    let e = Table::open(
        s.config(r#""redis_sentinel_password": "wrong", "rde_max_retries": 0"#),
        spec(),
    )
    .err()
    .unwrap();
    assert!(
        e.message().contains("WRONGPASS") || e.message().contains("invalid"),
        "{e}"
    );
    assert!(
        !e.message().contains("wrong"),
        "the password leaked into the error: {e}"
    );
    let e = Table::open(s.config(r#""rde_max_retries": 0"#), spec())
        .err()
        .unwrap();
    assert!(
        e.message().contains("NOAUTH") || e.message().contains("uthentication"),
        "{e}"
    );
}

/// TFRA's shortest config: no `redis_connection_mode`, so mode 1 (sentinel) applies.
fn tfra_default_config(port: u16, extra: &str) -> redis_embedding::Config {
    redis_embedding::Config::from_json(&format!(
        r#"{{"redis_host_ip": ["127.0.0.1"], "redis_host_port": [{port}], "table_store_mode": 0{extra}}}"#
    ))
    .unwrap()
}

#[test]
fn the_default_mode_uses_a_plain_master_as_a_standalone_server() {
    let server = Server::start();
    let t = Table::open(tfra_default_config(server.port, ""), spec()).unwrap();
    insert(&t, &[1, 2]).unwrap();
    assert_eq!(find(&t, &[2, 1, 3]), [2.0, 1.0, -1.0]);
    assert_eq!(
        server.calls("hset"),
        1,
        "the rows went to the configured server"
    );
}

#[test]
fn the_default_mode_never_falls_back_past_a_dead_or_failing_sentinel() {
    // Down: nothing listens at the configured port.
    let port = support::free_port();
    let e = Table::open(
        tfra_default_config(port, r#", "rde_max_retries": 0"#),
        spec(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    let m = e.message();
    assert!(
        m.contains("redis_connection_mode 1 (sentinel, TFRA's default"),
        "{m}"
    );
    assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
    assert!(m.contains("\"redis_connection_mode\": 2"), "{m}");

    // A real sentinel that does not know the master name: an error, not the master.
    let s = Sentinel::start();
    let e = Table::open(
        tfra_default_config(s.sentinel.port, r#", "redis_master_name": "nosuch""#),
        spec(),
    )
    .err()
    .unwrap();
    assert!(e.message().contains("does not know master"), "{e}");

    // A replica answers as a Redis server but is not a master: never written to.
    let e = Table::open(tfra_default_config(s.replica.port, ""), spec())
        .err()
        .unwrap();
    assert!(e.message().contains("SENTINEL"), "{e}");
    assert_eq!(s.replica.calls("hset"), 0);

    // Two hosts are a sentinel list: a plain master among them is not used alone.
    let server = Server::start();
    let e = Table::open(
        redis_embedding::Config::from_json(&format!(
            r#"{{"redis_connection_mode": 1, "redis_host_ip": ["127.0.0.1", "127.0.0.1"], "redis_host_port": [{}, {}]}}"#,
            server.port, port
        ))
        .unwrap(),
        spec(),
    )
    .err()
    .unwrap();
    assert!(
        e.message()
            .contains("redis_connection_mode 1 (sentinel) via sentinels"),
        "{e}"
    );
    assert_eq!(server.calls("hset"), 0);
}
