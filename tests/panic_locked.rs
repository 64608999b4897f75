//! A panic inside an op's body while it holds a lock (test-only failpoint
//! `RDE_FAILPOINT_PANIC_LOCKED`, feature `failpoints`) leaves the table usable: the lock is
//! taken over by the next op (src/sync.rs, docs/operations.md), later ops read and write the
//! right rows, and the same table name opens again. One test, because the failpoint is an
//! environment variable of the whole process. The bridge turning the panic into a TF error is
//! tests/python/test_panic.py's.
#![cfg(feature = "failpoints")]

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Server};

fn insert(t: &Table, keys: &[i64], vals: &[f32]) {
    let kb = i64_keys(keys);
    let vb = f32_bytes(vals);
    let row = vals.len() / keys.len() * 4;
    t.insert(&t.keys(&kb, &[]).unwrap(), &Rows::Fixed { data: &vb, row })
        .unwrap();
}

fn find(t: &Table, keys: &[i64]) -> Vec<f32> {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * t.spec().dim * 4];
    let k = t.keys(&kb, &[]).unwrap();
    t.find(&k, &f32_bytes(&vec![-1.0; t.spec().dim]), &mut out, None)
        .unwrap();
    f32s(&out)
}

/// Runs `op` with the failpoint at `site` armed, and checks that it panicked there.
fn panics_at(site: &str, op: impl FnOnce()) {
    std::env::set_var("RDE_FAILPOINT_PANIC_LOCKED", site);
    let r = catch_unwind(AssertUnwindSafe(op));
    std::env::remove_var("RDE_FAILPOINT_PANIC_LOCKED");
    let payload = r.expect_err("the failpoint did not fire");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(msg, format!("failpoint RDE_FAILPOINT_PANIC_LOCKED={site}"));
}

fn open(cfg: &dyn Fn() -> Config, name: &str) -> Table {
    Table::open(cfg(), TableSpec::new(name, KeyType::I64, ValueType::F32, 2)).unwrap()
}

/// The checks on one backend: `write_lock` is the site an insert panics at holding the
/// table's write lock, `open_lock` the one opening a table panics at.
fn survives(cfg: &dyn Fn() -> Config, write_lock: &str, open_lock: &str) {
    let t = open(cfg, "locked");
    insert(&t, &[1, 2, 3], &[1., 1., 2., 2., 3., 3.]);

    // An insert panics holding the lock: nothing of it is written, and every later op on
    // the same lock works.
    panics_at(write_lock, || {
        let _ = t.insert(
            &t.keys(&i64_keys(&[1, 4]), &[]).unwrap(),
            &Rows::Fixed {
                data: &f32_bytes(&[9., 9., 4., 4.]),
                row: 8,
            },
        );
    });
    assert_eq!(find(&t, &[1, 2, 3, 4]), [1., 1., 2., 2., 3., 3., -1., -1.]);
    insert(&t, &[1, 4], &[5., 5., 4., 4.]);
    assert_eq!(find(&t, &[1, 4, 2]), [5., 5., 4., 4., 2., 2.]);
    assert_eq!(t.size().unwrap(), 4);

    // Opening panics holding its lock; the same name then opens, with its rows.
    panics_at(open_lock, || {
        let _ = open(cfg, "locked");
    });
    let again = open(cfg, "locked");
    assert_eq!(
        find(&again, &[1, 4, 2, 3]),
        [5., 5., 4., 4., 2., 2., 3., 3.]
    );
    insert(&again, &[6], &[6., 6.]);
    assert_eq!(find(&t, &[6]), [6., 6.]);
    assert_eq!(t.size().unwrap(), 5);
}

#[test]
fn a_panic_holding_a_lock_leaves_the_table_usable_on_both_backends() {
    let memory = || {
        Config::from_json(
            r#"{"rde_backend": "memory", "table_store_mode": 0, "model_tag_runtime": "panic"}"#,
        )
        .unwrap()
    };
    survives(&memory, "memory_shard", "memory_registry");
    let s = Server::start();
    survives(
        &|| s.config(r#""model_tag_runtime": "panic""#),
        "redis_pools",
        "redis_pools",
    );
    s.stop();
}
