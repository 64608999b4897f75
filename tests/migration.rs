//! Rehash (storage_slice changes, including a run that dies half way), model-tag copy, and
//! TTL handling, on real servers. One test function per server kind: the rehash failpoint is
//! an environment variable, so these scenarios run one after another.

mod support;

use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Cluster, Server};

fn spec(name: &str) -> TableSpec {
    TableSpec::new(name, KeyType::I64, ValueType::F32, 3)
}

fn row(k: i64) -> [f32; 3] {
    [k as f32, (k * 7 % 13) as f32, -(k as f32) / 3.0]
}

fn insert(t: &Table, keys: &[i64]) {
    let kb = i64_keys(keys);
    let vb = f32_bytes(&keys.iter().flat_map(|&k| row(k)).collect::<Vec<_>>());
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed { data: &vb, row: 12 },
    )
    .unwrap();
}

/// Every row present and unaltered, and nothing else in the table.
fn check_exact(t: &Table, keys: &[i64]) {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * 12];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &[0u8; 12],
        &mut out,
        Some(&mut ex),
    )
    .unwrap();
    assert!(ex.iter().all(|&e| e == 1), "rows lost");
    assert_eq!(
        f32s(&out),
        keys.iter().flat_map(|&k| row(k)).collect::<Vec<_>>(),
        "rows altered"
    );
    assert_eq!(t.size().unwrap(), keys.len() as i64, "extra rows");
}

fn with_slices(cfg: &Config, s: u32) -> Config {
    let mut c = cfg.clone();
    c.storage_slice = s;
    c.storage_slice_import = s;
    c.keys_sending_size = 100;
    c
}

/// The tests here run one at a time: the failpoint is process-wide.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn nonempty_buckets(t: &Table, node_count: impl Fn(&[u8]) -> i64) -> usize {
    t.buckets()
        .names()
        .iter()
        .filter(|b| node_count(b) > 0)
        .count()
}

#[test]
fn cluster_rehash_1_4_3_with_a_crash_in_the_middle() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start(3, 0);
    let base = c.config("");
    let hlen = |b: &[u8]| -> i64 {
        c.nodes
            .iter()
            .map(|n| {
                String::from_utf8_lossy(&n.cli(&[b"HLEN", b]))
                    .trim_start_matches(':')
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0)
            })
            .sum()
    };
    let keys: Vec<i64> = (0..2000).map(|k| k * 31 - 5000).collect();

    let t = Table::open(with_slices(&base, 1), spec("emb")).unwrap();
    insert(&t, &keys);
    check_exact(&t, &keys);
    drop(t);

    let t = Table::open(with_slices(&base, 4), spec("emb")).unwrap();
    assert_eq!(t.buckets().len(), 4);
    assert_eq!(nonempty_buckets(&t, hlen), 4);
    check_exact(&t, &keys);
    drop(t);

    // Die after 300 rows of the 4 → 3 rehash (test-only failpoint, feature `failpoints`), then
    // open again: it finishes, nothing lost.
    #[cfg(feature = "failpoints")]
    {
        std::env::set_var("RDE_FAILPOINT_MIGRATE_ABORT_AFTER", "300");
        let e = Table::open(with_slices(&base, 3), spec("emb"))
            .err()
            .expect("failpoint");
        assert!(e.message().contains("failpoint"), "{e}");
        std::env::remove_var("RDE_FAILPOINT_MIGRATE_ABORT_AFTER");
    }
    let t = Table::open(with_slices(&base, 3), spec("emb")).unwrap();
    assert_eq!(t.buckets().len(), 3);
    check_exact(&t, &keys);
    // The 4-bucket layout's extra bucket is gone (emptied, so Redis deleted it).
    let all_keys: usize = c
        .nodes
        .iter()
        .map(|n| {
            String::from_utf8_lossy(&n.cli(&[b"DBSIZE"]))
                .trim_start_matches(':')
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(all_keys, 3 + 1, "3 buckets and the layout record");

    // A sibling table with a longer name is never touched by emb's rehash.
    let sib = Table::open(with_slices(&base, 1), spec("emb2")).unwrap();
    insert(&sib, &[1, 2, 3]);
    drop(sib);
    let t = Table::open(with_slices(&base, 2), spec("emb")).unwrap();
    check_exact(&t, &keys);
    let sib = Table::open(with_slices(&base, 1), spec("emb2")).unwrap();
    check_exact(&sib, &[1, 2, 3]);
}

#[test]
fn standalone_model_tag_copy_ttl_and_opt_in_buckets() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let s = Server::start();
    // Model-tag copy: v1's rows appear under v2; v1 is left as it was.
    let v1 = Table::open(
        s.config(r#""model_tag_runtime": "v1", "model_tag_import": "v1""#),
        spec("emb"),
    )
    .unwrap();
    let keys: Vec<i64> = (0..700).collect();
    insert(&v1, &keys);
    let v2 = Table::open(
        s.config(r#""model_tag_runtime": "v2", "model_tag_import": "v1""#),
        spec("emb"),
    )
    .unwrap();
    check_exact(&v2, &keys);
    check_exact(&v1, &keys);
    // A second open of v2 does not copy again over v2's own writes.
    insert(&v2, &[5000]);
    let v2 = Table::open(
        s.config(r#""model_tag_runtime": "v2", "model_tag_import": "v1""#),
        spec("emb"),
    )
    .unwrap();
    assert_eq!(v2.size().unwrap(), 701);

    // TTL: armed on exactly this table's buckets, as soon as a write creates them.
    let ttl = |b: &[u8]| -> i64 {
        String::from_utf8_lossy(&s.cli(&[b"TTL", b]))
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap()
    };
    let a = Table::open(
        s.config(r#""expire_model_tag_in_seconds": 1000"#),
        spec("ttl"),
    )
    .unwrap();
    let b = Table::open(
        s.config(r#""expire_model_tag_in_seconds": -1"#),
        spec("ttl2"),
    )
    .unwrap();
    insert(&b, &[1]);
    insert(&a, &[1]);
    let (ta, tb) = (ttl(a.buckets().name(0)), ttl(b.buckets().name(0)));
    assert!(ta > 900 && ta <= 1000, "emb's TTL {ta}");
    assert_eq!(tb, -1, "the sibling ttl2 got a TTL");
    drop(a);
    // Reopening with expiry disabled removes the TTL (PERSIST on open).
    let a = Table::open(
        s.config(r#""expire_model_tag_in_seconds": -1"#),
        spec("ttl"),
    )
    .unwrap();
    assert_eq!(ttl(a.buckets().name(0)), -1);

    // Opting into spread buckets outside a cluster moves the existing rows once.
    let t = Table::open(s.config(r#""storage_slice": 4"#), spec("spread")).unwrap();
    insert(&t, &keys);
    assert_eq!(s.cli(&[b"HLEN", t.buckets().name(0)]), b":700\r\n");
    let t = Table::open(
        s.config(r#""storage_slice": 4, "rde_standalone_buckets": true"#),
        spec("spread"),
    )
    .unwrap();
    check_exact(&t, &keys);
    for b in t.buckets().names() {
        let n: i64 = String::from_utf8_lossy(&s.cli(&[b"HLEN", b]))
            .trim_start_matches(':')
            .trim()
            .parse()
            .unwrap();
        assert!(n > 100, "bucket {} holds {n}", String::from_utf8_lossy(b));
    }
}
