//! Sentinel mode against a real master, replica and sentinel, including a forced failover.

mod support;

use redis_embedding::{KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Sentinel};

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
