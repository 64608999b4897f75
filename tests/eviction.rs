//! The eviction guard at table open, against real redis-servers: an evicting
//! `maxmemory-policy` refuses the open (naming server, policy and fix) unless
//! `rde_allow_eviction` accepts it; `noeviction`, and servers that deny `CONFIG`, open.

mod support;

use redis_embedding::{stats, Config, ErrorKind, KeyType, Result, Table, TableSpec, ValueType};
use support::{serial, Cluster, Sentinel, Server};

fn open(cfg: Config) -> Result<Table> {
    Table::open(cfg, TableSpec::new("emb", KeyType::I64, ValueType::F32, 2))
}

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

fn set_policy(s: &Server, policy: &str) {
    assert_eq!(
        s.cli(&[b"CONFIG", b"SET", b"maxmemory-policy", policy.as_bytes()]),
        b"+OK\r\n"
    );
}

/// The refusal names the server, the policy and both fixes.
fn assert_refused(e: &redis_embedding::Error, addr: &str, policy: &str) {
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert_eq!(e.tf_code(), 9);
    let m = e.message();
    assert!(
        m.contains(&format!("redis {addr} has maxmemory-policy {policy}")),
        "{e}"
    );
    assert!(m.contains("maxmemory-policy noeviction"), "{e}");
    assert!(m.contains("\"rde_allow_eviction\": true"), "{e}");
}

#[test]
fn allkeys_lru_refuses_the_open_unless_allowed() {
    let _one = serial();
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let refused = counter("evicting_opens_refused");
    let e = open(s.config("")).err().expect("opened on allkeys-lru");
    assert_refused(&e, &s.addr(), "allkeys-lru");
    assert_eq!(counter("evicting_opens_refused"), refused + 1);
    // Even without a TTL: allkeys-* evicts any key.
    let e = open(s.config(r#""expire_model_tag_in_seconds": -1"#))
        .err()
        .unwrap();
    assert_refused(&e, &s.addr(), "allkeys-lru");
    // Nothing was written by the refused opens (no layout record, no bucket).
    assert_eq!(s.cli(&[b"DBSIZE"]), b":0\r\n");

    let allowed = counter("evicting_opens_allowed");
    open(s.config(r#""rde_allow_eviction": true"#)).expect("allowed");
    assert_eq!(counter("evicting_opens_allowed"), allowed + 1);
}

#[test]
fn noeviction_opens() {
    let _one = serial();
    let s = Server::start_with(&["--maxmemory-policy", "noeviction"]);
    let refused = counter("evicting_opens_refused");
    open(s.config("")).expect("noeviction refused");
    assert_eq!(counter("evicting_opens_refused"), refused);
}

#[test]
fn volatile_policies_refuse_only_tables_with_a_ttl() {
    let _one = serial();
    let s = Server::start_with(&["--maxmemory-policy", "volatile-lru"]);
    // The default TTL (7 days) makes the buckets volatile.
    let e = open(s.config(""))
        .err()
        .expect("opened on volatile-lru with a TTL");
    assert_refused(&e, &s.addr(), "volatile-lru");
    assert!(e.message().contains("expire_model_tag_in_seconds"), "{e}");
    open(s.config(r#""expire_model_tag_in_seconds": -1"#)).expect("no TTL, nothing to evict");
}

#[test]
fn a_user_denied_config_opens_without_the_check() {
    let _one = serial();
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    assert_eq!(
        s.cli(&[b"ACL", b"SETUSER", b"trainer", b"on", b">pw", b"~*", b"+@all", b"-config"]),
        b"+OK\r\n"
    );
    open(s.config(r#""redis_user": "trainer", "redis_password": "pw""#))
        .expect("a user without CONFIG must open");
}

#[test]
fn a_renamed_config_command_opens_without_the_check() {
    let _one = serial();
    let s = Server::start_with(&[
        "--maxmemory-policy",
        "allkeys-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    open(s.config("")).expect("a server without CONFIG must open");
}

#[test]
fn each_cluster_master_is_checked() {
    let _one = serial();
    let c = Cluster::start(3, 0);
    open(c.config("")).expect("noeviction cluster");
    set_policy(&c.nodes[2], "allkeys-lfu");
    let e = open(c.config("")).err().expect("one evicting master");
    assert_refused(&e, &c.nodes[2].addr(), "allkeys-lfu");
}

#[test]
fn the_sentinel_master_is_checked() {
    let _one = serial();
    let s = Sentinel::start();
    set_policy(&s.master, "allkeys-random");
    let e = open(s.config("")).err().expect("evicting sentinel master");
    assert_refused(&e, &s.master.addr(), "allkeys-random");
    open(s.config(r#""rde_allow_eviction": true"#)).expect("allowed");
}

fn evicted(t: &Table) -> f64 {
    t.stats_snapshot()
        .into_iter()
        .find(|(n, _)| n == "evicted_keys")
        .unwrap()
        .1
}

/// Fills `s` with 100 kB strings until it has evicted at least `n` more keys.
fn evict_at_least(s: &Server, n: u64, tag: &str) {
    let before = evictions_on(s);
    let big = vec![b'x'; 100_000];
    let mut i = 0;
    while evictions_on(s) < before + n {
        s.cli(&[b"SET", format!("{tag}{i}").as_bytes(), &big]);
        i += 1;
        assert!(i < 10_000, "the server never evicted");
    }
}

fn evictions_on(s: &Server) -> u64 {
    let info = String::from_utf8_lossy(&s.cli(&[b"INFO", b"stats"])).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn evictions_after_an_allowed_open_are_counted_in_the_tables_stats() {
    let _one = serial();
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-lru", "--maxmemory", "4mb"]);
    evict_at_least(&s, 3, "before");
    // Any command of the open may make the server evict one more key (the last filler left
    // it over its limit): the table's count starts between these two readings.
    let before_open = evictions_on(&s);
    let t = open(s.config(r#""rde_allow_eviction": true"#)).expect("allowed");
    let after_open = evictions_on(&s);
    evict_at_least(&s, 5, "after");
    let seen = evicted(&t) as u64;
    let now = evictions_on(&s);
    assert!(seen >= 5, "{seen}");
    assert!(
        (now - after_open..=now - before_open).contains(&seen),
        "evictions before the open are not the table's concern: {seen} of {before_open}..{now}"
    );

    let calm = Server::start_with(&["--maxmemory-policy", "noeviction"]);
    let t = open(calm.config("")).unwrap();
    assert_eq!(
        evicted(&t),
        0.0,
        "a server that cannot evict is not even asked"
    );
}
