//! The embedded backend (`rde_backend: "memory"`) through the public `Table`: the Redis ops'
//! semantics with no server, sharing by model tag and name, the row cap, compact storage, and
//! files that move a table embedded → Redis → embedded unchanged.

mod support;

use redis_embedding::{
    Backend, Config, ErrorKind, KeyType, Rows, Shard, Table, TableSpec, ValueType,
};
use support::{f32_bytes, f32s, i64_keys, Server};

fn mem_config(extra: &str) -> Config {
    let sep = if extra.is_empty() { "" } else { "," };
    Config::from_json(&format!(
        r#"{{"rde_backend": "memory", "table_store_mode": 0{sep}{extra}}}"#
    ))
    .unwrap()
}

/// A float32 table of `dim` under its own model tag (`tag`), so tests never share rows.
fn open(tag: &str, name: &str, dim: usize, extra: &str) -> Table {
    let extra = format!(
        r#""model_tag_runtime": "{tag}", "model_tag_import": "{tag}"{}{extra}"#,
        if extra.is_empty() { "" } else { "," }
    );
    let spec = TableSpec::new(name, KeyType::I64, ValueType::F32, dim);
    Table::open(mem_config(&extra), spec).unwrap()
}

fn insert(t: &Table, keys: &[i64], vals: &[f32]) -> redis_embedding::Result<()> {
    let (kb, vb) = (i64_keys(keys), f32_bytes(vals));
    let row = vals.len() / keys.len().max(1) * 4;
    t.insert(&t.keys(&kb, &[]).unwrap(), &Rows::Fixed { data: &vb, row })
}

fn find(t: &Table, keys: &[i64], defaults: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let kb = i64_keys(keys);
    let dim = t.spec().dim;
    let mut out = vec![0u8; keys.len() * dim * 4];
    let mut ex = vec![0u8; keys.len()];
    let k = t.keys(&kb, &[]).unwrap();
    t.find(&k, &f32_bytes(defaults), &mut out, Some(&mut ex))
        .unwrap();
    (f32s(&out), ex)
}

fn export(t: &Table) -> Vec<(i64, Vec<f32>)> {
    let ex = t.export().unwrap();
    let dim = t.spec().dim;
    let mut rows: Vec<(i64, Vec<f32>)> = (0..ex.len)
        .map(|i| {
            let k = i64::from_le_bytes(ex.keys[i * 8..i * 8 + 8].try_into().unwrap());
            (k, f32s(&ex.values[i * dim * 4..(i + 1) * dim * 4]))
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn find_insert_duplicates_defaults_remove_clear_size() {
    let t = open("ops", "emb", 2, "");
    assert_eq!(t.backend(), Backend::Memory);
    insert(&t, &[1, 2, 1], &[1., 1., 2., 2., 9., 9.]).unwrap();
    let (v, ex) = find(&t, &[1, 7, 1, 2], &[-1., -1.]);
    assert_eq!(v, [9., 9., -1., -1., 9., 9., 2., 2.]);
    assert_eq!(ex, [1, 0, 1, 1]);
    // Per-key defaults.
    let (v, _) = find(&t, &[5, 2], &[5., 5., 6., 6.]);
    assert_eq!(v, [5., 5., 2., 2.]);
    assert_eq!(t.size().unwrap(), 2);
    t.remove(&t.keys(&i64_keys(&[1, 42]), &[]).unwrap())
        .unwrap();
    assert_eq!(t.size().unwrap(), 1);
    t.clear().unwrap();
    assert_eq!(t.size().unwrap(), 0);
}

#[test]
fn accum_adds_where_exists_and_inserts_where_absent() {
    let t = open("accum", "emb", 1, "");
    insert(&t, &[1, 2], &[1., 2.]).unwrap();
    let (kb, d) = (
        i64_keys(&[1, 2, 3, 4, 3]),
        f32_bytes(&[0.5, 9., 3., 4., 1.]),
    );
    let k = t.keys(&kb, &[]).unwrap();
    t.accum(&k, &Rows::Fixed { data: &d, row: 4 }, &[1, 0, 0, 1, 1])
        .unwrap();
    let (v, ex) = find(&t, &[1, 2, 3, 4], &[-1.]);
    assert_eq!((v, ex), (vec![1.5, 2., 4., -1.], vec![1, 1, 1, 0]));
    let e = t.accum(&k, &Rows::Fixed { data: &d, row: 4 }, &[1]);
    assert!(e.unwrap_err().to_string().contains("exists has 1 entries"));
}

#[test]
fn concurrent_accums_add_up_exactly() {
    let t = open("conc", "emb", 4, "");
    let keys: Vec<i64> = (0..5000).collect();
    insert(&t, &keys, &vec![0.; 4 * keys.len()]).unwrap();
    let (kb, ones) = (i64_keys(&keys), f32_bytes(&vec![1.; 4 * keys.len()]));
    let flags = vec![1u8; keys.len()];
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    let k = t.keys(&kb, &[]).unwrap();
                    t.accum(
                        &k,
                        &Rows::Fixed {
                            data: &ones,
                            row: 16,
                        },
                        &flags,
                    )
                    .unwrap();
                }
            });
        }
    });
    let (v, _) = find(&t, &keys, &[0.; 4]);
    assert!(v.iter().all(|&x| x == 40.));
}

#[test]
fn tables_share_rows_by_model_tag_and_name() {
    let a = open("share", "emb", 2, "");
    let mut spec = TableSpec::new("emb", KeyType::I64, ValueType::F32, 2);
    spec.shard = Shard::new(2, 2).unwrap();
    let cfg = mem_config(r#""model_tag_runtime": "share", "model_tag_import": "share""#);
    let b = Table::open(cfg.clone(), spec).unwrap();
    insert(&a, &[1], &[1., 2.]).unwrap();
    assert_eq!(find(&b, &[1], &[0., 0.]).0, [1., 2.]);
    // Only shard 1 reports the shared rows.
    assert_eq!((a.size().unwrap(), b.size().unwrap()), (1, 0));
    assert_eq!(open("share2", "emb", 2, "").size().unwrap(), 0);
    // Another width under the same name is a table of its own (on Redis its rows would fail
    // to read at the other width).
    let wide = Table::open(cfg, TableSpec::new("emb", KeyType::I64, ValueType::F32, 3)).unwrap();
    assert_eq!(wide.size().unwrap(), 0);
}

#[test]
fn the_row_cap_fails_inserts_with_resource_exhausted_naming_table_and_cap() {
    let t = open("cap", "capped", 1, r#""rde_memory_max_rows": 3"#);
    insert(&t, &[1, 2, 3], &[1., 2., 3.]).unwrap();
    insert(&t, &[1, 2, 3], &[4., 5., 6.]).unwrap();
    let e = insert(&t, &[4], &[7.]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    let msg = e.to_string();
    assert!(
        msg.contains("\"capped\"") && msg.contains("rde_memory_max_rows = 3"),
        "{msg}"
    );
    assert_eq!(t.size().unwrap(), 3);
    assert_eq!(find(&t, &[1, 4], &[0.]).0, [4., 0.], "nothing was evicted");
}

#[test]
fn bf16_storage_rounds_to_8_bits_and_reads_back_float32() {
    let t = open("bf16", "emb", 2, r#""rde_value_storage": "bfloat16""#);
    insert(&t, &[1], &[1.0, 1.005]).unwrap();
    // 1.005 is not a bfloat16: it reads back rounded to 1.0078125 (8 significant bits).
    assert_eq!(find(&t, &[1, 2], &[-1., -1.]).0, [1.0, 1.0078125, -1., -1.]);
    let kb = i64_keys(&[1]);
    let d = f32_bytes(&[0.5, 0.5]);
    let k = t.keys(&kb, &[]).unwrap();
    t.accum(&k, &Rows::Fixed { data: &d, row: 8 }, &[1])
        .unwrap();
    assert_eq!(export(&t), vec![(1, vec![1.5, 1.5078125])]);
}

#[test]
fn export_streams_fixed_rows_and_import_upserts() {
    let t = open("export", "emb", 2, "");
    insert(&t, &[3, 1, 2], &[3., 3., 1., 1., 2., 2.]).unwrap();
    let plan = t.export_plan().unwrap();
    assert!(plan.exported().is_none(), "fixed-size rows stream");
    let inserted = vec![(1, vec![1., 1.]), (2, vec![2., 2.]), (3, vec![3., 3.])];
    // The first 3 rows of the streamed buffers (sized for the plan's capacity) are exactly
    // the inserted rows, in the store's order.
    let (mut k, mut v) = (vec![0u8; plan.rows() * 8], vec![0u8; plan.rows() * 8]);
    assert_eq!(t.export_fill(&plan, &mut k, &mut v).unwrap(), 3);
    let mut streamed: Vec<(i64, Vec<f32>)> = k[..3 * 8]
        .chunks_exact(8)
        .zip(v.chunks_exact(8))
        .map(|(k, v)| (i64::from_le_bytes(k.try_into().unwrap()), f32s(v)))
        .collect();
    streamed.sort_by_key(|r| r.0);
    assert_eq!(streamed, inserted);
    // So does export(), and a table it is imported into (import upserts over a stale row).
    assert_eq!(export(&t), inserted);
    let u = open("export", "copy", 2, "");
    insert(&u, &[2, 9], &[7., 7., 9., 9.]).unwrap();
    let ex = t.export().unwrap();
    let keys = u.keys(&ex.keys, &[]).unwrap();
    u.import(
        &keys,
        &Rows::Fixed {
            data: &ex.values,
            row: 8,
        },
    )
    .unwrap();
    let mut expected = inserted.clone();
    expected.push((9, vec![9., 9.]));
    assert_eq!(export(&u), expected);
}

/// Mode 1 on the memory backend: the export (a checkpoint save) writes the rows to the
/// table's own files under `model_lib_abs_dir/<model_tag>` and returns no rows; the import (a
/// restore) replaces the rows with the files'. Mode 2 saves nothing.
#[test]
fn store_mode_1_keeps_files_of_its_own_and_mode_2_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lib = format!(
        r#""table_store_mode": 1, "model_lib_abs_dir": "{}""#,
        dir.path().display()
    );
    let t = open("modes", "emb", 1, &lib);
    insert(&t, &[1, 2], &[1., 2.]).unwrap();
    assert_eq!(t.export().unwrap().len, 0);
    let files = dir.path().join("modes");
    assert_eq!(
        std::fs::metadata(files.join("emb.rows-keys"))
            .unwrap()
            .len(),
        16
    );
    insert(&t, &[3], &[3.]).unwrap();
    let none = t.keys(&[], &[]).unwrap();
    t.import(&none, &Rows::Fixed { data: &[], row: 4 }).unwrap();
    assert_eq!(
        t.size().unwrap(),
        2,
        "the row inserted after the save is gone"
    );
    let (v, ex) = find(&t, &[1, 2, 3], &[-1.]);
    assert_eq!((v, ex), (vec![1., 2., -1.], vec![1, 1, 0]));

    let u = open("modes2", "emb", 1, r#""table_store_mode": 2"#);
    insert(&u, &[1], &[1.]).unwrap();
    assert_eq!(u.export().unwrap().len, 0);
}

#[test]
fn string_keys_and_string_values() {
    let cfg = mem_config(r#""model_tag_runtime": "strings""#);
    let t = Table::open(cfg, TableSpec::new("s", KeyType::I64, ValueType::Str, 2)).unwrap();
    let kb = i64_keys(&[1]);
    let (vd, vo) = (b"abc".to_vec(), vec![0u64, 1, 3]);
    let k = t.keys(&kb, &[]).unwrap();
    t.insert(
        &k,
        &Rows::Str {
            data: &vd,
            offsets: &vo,
            dim: 2,
        },
    )
    .unwrap();
    let kb2 = i64_keys(&[1, 2]);
    let (dd, doff) = (b"d".to_vec(), vec![0u64, 1, 1]);
    let defaults = Rows::Str {
        data: &dd,
        offsets: &doff,
        dim: 2,
    };
    let (rows, found) = t
        .find_strings(&t.keys(&kb2, &[]).unwrap(), &defaults)
        .unwrap();
    assert_eq!(found, [1, 0]);
    assert_eq!(rows.data, b"abcd");
    assert_eq!(rows.offsets, [0, 1, 3, 4, 4]);
}

/// The rows of the `emb-keys`/`emb-values` files under `dir` (8-byte keys, 12-byte rows) as
/// byte pairs, sorted: the backends write rows in different orders.
fn file_rows(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keys = std::fs::read(dir.join("emb-keys")).unwrap();
    let values = std::fs::read(dir.join("emb-values")).unwrap();
    assert_eq!(keys.len() / 8 * 12, values.len());
    let mut rows: Vec<_> = keys
        .chunks_exact(8)
        .zip(values.chunks_exact(12))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    rows.sort();
    rows
}

#[test]
fn files_move_a_table_embedded_to_redis_and_back_exactly() {
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let keys: Vec<i64> = (0..3000).map(|i| i * 7919 - 100_000).collect();
    let vals: Vec<f32> = (0..keys.len() * 3).map(|i| i as f32 * 0.25 - 7.0).collect();
    let mem = open("files", "emb", 3, "");
    insert(&mem, &keys, &vals).unwrap();
    assert_eq!(
        mem.save_to_files(d1.path(), "emb", false, 1024).unwrap(),
        3000
    );

    let s = Server::start();
    let spec = TableSpec::new("emb", KeyType::I64, ValueType::F32, 3);
    let redis = Table::open(s.config(""), spec).unwrap();
    assert_eq!(redis.backend(), Backend::Redis);
    assert_eq!(
        redis
            .load_from_files(d1.path(), "emb", false, 1024)
            .unwrap(),
        3000
    );
    assert_eq!(export(&redis), export(&mem));
    redis.save_to_files(d2.path(), "emb", false, 1024).unwrap();

    let back = open("files-back", "emb", 3, "");
    assert_eq!(
        back.load_from_files(d2.path(), "emb", false, 1024).unwrap(),
        3000
    );
    assert_eq!(export(&back), export(&mem));
    back.save_to_files(d3.path(), "emb", false, 1024).unwrap();
    let (f1, f2, f3) = (
        file_rows(d1.path()),
        file_rows(d2.path()),
        file_rows(d3.path()),
    );
    assert_eq!(f1.len(), 3000);
    assert!(f1 == f2 && f2 == f3, "the rows' bytes changed on the way");
    s.stop();
}

#[test]
fn statistics_count_lookups_hits_and_rows_written() {
    let t = open("stats", "emb", 2, "");
    let figure = |name: &str| {
        t.stats_snapshot()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    insert(&t, &[1, 2, 3, 4], &[1.0; 8]).unwrap();
    find(&t, &[1, 2, 9, 1, 8], &[0.0; 2]);
    assert_eq!(figure("lookups"), 5.0, "key positions, duplicates included");
    assert_eq!(figure("hits"), 3.0);
    assert_eq!(figure("misses"), 2.0);
    assert_eq!(figure("bytes_in"), 24.0, "3 found rows of 8 bytes");
    assert_eq!(figure("rows_written"), 4.0);
    assert_eq!(figure("bytes_out"), 32.0);
    assert_eq!((figure("find_calls"), figure("insert_calls")), (1.0, 1.0));
    assert_eq!(figure("evicted_keys"), 0.0, "nothing is evicted in memory");

    // A key given twice in one insert counts twice here (docs/operations.md), once on Redis.
    insert(&t, &[5, 5, 6], &[1.0; 6]).unwrap();
    assert_eq!(figure("rows_written"), 7.0, "4 + 3 key positions");
    let s = Server::start();
    let spec = TableSpec::new("emb", KeyType::I64, ValueType::F32, 2);
    let r = Table::open(s.config(r#""model_tag_runtime": "stats""#), spec).unwrap();
    insert(&r, &[5, 5, 6], &[1.0; 6]).unwrap();
    let written = r
        .stats_snapshot()
        .into_iter()
        .find(|(n, _)| n == "rows_written")
        .unwrap()
        .1;
    assert_eq!(written, 2.0, "Redis counts distinct keys");
    s.stop();
}
