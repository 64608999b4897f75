//! The `redis-embedding` binary's `export`, `import` and `copy` against real servers: round
//! trips with the library's own file save/load, interrupted runs resumed (the test-only
//! `RDE_FAILPOINT_ADMIN_ABORT_AFTER` failpoint, feature `failpoints`), standalone to cluster,
//! model-tag and `storage_slice` copies, errors, and the progress bar on a terminal.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};
use serde_json::Value;
use support::cli::{failed, json_of as ok, open_table, run_json as run, write_cfg, BIN};
use support::{f32_bytes, i64_keys, Server};

const DIM: usize = 4;

/// A standalone config's JSON for `port` with model tag `tag`.
fn standalone(port: u16, tag: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"],
            "redis_host_port": [{port}], "model_tag_runtime": "{tag}",
            "model_tag_import": "{tag}"{sep}{extra}}}"#
    )
}

/// A config's JSON for cluster `c`, model tag `m`, 6 buckets.
fn cluster_json(c: &support::Cluster) -> String {
    let ports: Vec<String> = c.nodes.iter().map(|n| n.port.to_string()).collect();
    let hosts = vec!["\"127.0.0.1\""; ports.len()];
    format!(
        r#"{{"redis_connection_mode": 0, "redis_host_ip": [{}],
            "redis_host_port": [{}], "model_tag_runtime": "m", "model_tag_import": "m",
            "storage_slice": 6, "storage_slice_import": 6}}"#,
        hosts.join(","),
        ports.join(",")
    )
}

fn table(json: &str, name: &str) -> Table {
    open_table(json, name, DIM)
}

fn row(k: i64) -> [f32; DIM] {
    [
        k as f32,
        (k % 17) as f32 * 0.25,
        -(k as f32) / 3.0,
        1.0 / (k as f32 + 0.5),
    ]
}

/// Inserts keys `0..n` with [`row`].
fn fill(t: &Table, n: i64) {
    let keys: Vec<i64> = (0..n).collect();
    for part in keys.chunks(10_000) {
        let kb = i64_keys(part);
        let vb = f32_bytes(&part.iter().flat_map(|&k| row(k)).collect::<Vec<_>>());
        let rows = Rows::Fixed {
            data: &vb,
            row: DIM * 4,
        };
        t.insert(&t.keys(&kb, &[]).unwrap(), &rows).unwrap();
    }
}

/// Every key of `0..n` holds [`row`] byte for byte (widened through `narrow` when the table
/// stores compactly) and the table holds nothing else.
fn assert_rows(t: &Table, n: i64, narrow: impl Fn(f32) -> f32) {
    let keys: Vec<i64> = (0..n).collect();
    let kb = i64_keys(&keys);
    let mut out = vec![0u8; keys.len() * DIM * 4];
    let mut ex = vec![0u8; keys.len()];
    let k = t.keys(&kb, &[]).unwrap();
    t.find(&k, &[0u8; DIM * 4], &mut out, Some(&mut ex))
        .unwrap();
    assert!(ex.iter().all(|&e| e == 1), "rows missing");
    let want: Vec<f32> = keys.iter().flat_map(|&k| row(k)).map(&narrow).collect();
    assert!(out == f32_bytes(&want), "rows differ");
    assert_eq!(t.size().unwrap(), n, "extra rows");
}

/// The (key, row) records of an int64-keyed pair of files; every key once.
fn read_files(base: &Path) -> BTreeMap<i64, Vec<u8>> {
    let read = |s: &str| std::fs::read(format!("{}{s}", base.display())).unwrap();
    let (keys, values) = (read("-keys"), read("-values"));
    assert_eq!(keys.len() / 8 * DIM * 4, values.len());
    let mut out = BTreeMap::new();
    for (k, v) in keys.chunks(8).zip(values.chunks(DIM * 4)) {
        let key = i64::from_le_bytes(k.try_into().unwrap());
        assert!(out.insert(key, v.to_vec()).is_none(), "key {key} twice");
    }
    out
}

fn expected_files(n: i64) -> BTreeMap<i64, Vec<u8>> {
    (0..n).map(|k| (k, f32_bytes(&row(k)))).collect()
}

#[test]
fn export_import_round_trip_matches_the_library_files() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 3000);
    fill(&table(&json, "other"), 10);

    let out = ok(&run(
        d.path(),
        &cfg,
        &["export", "out", "--table", "emb"],
        &[],
    ));
    assert_eq!(out["rows"], 3000);
    assert_eq!(out["tables"][0]["table"], "m:emb");
    assert_eq!(out["bytes"], 3000 * (8 + DIM * 4));
    let base = d.path().join("out/m/emb");
    assert_eq!(read_files(&base), expected_files(3000));
    assert!(!d.path().join("out/m/other-keys").exists());
    assert!(!d.path().join("out/redis-embedding-export.state").exists());

    // The library loads the exported files...
    let json2 = standalone(s.port, "lib", "");
    let lib = table(&json2, "emb");
    assert_eq!(
        lib.load_from_files(&d.path().join("out/m"), "emb", false, 500)
            .unwrap(),
        3000
    );
    assert_rows(&lib, 3000, |x| x);
    // ...and the CLI imports them into another tag, and files the library saved.
    let out = ok(&run(
        d.path(),
        &cfg,
        &["import", "out", "--to-model-tag", "cli"],
        &[],
    ));
    assert_eq!(out["rows"], 3000);
    assert_rows(&table(&standalone(s.port, "cli", ""), "emb"), 3000, |x| x);
    lib.save_to_files(&d.path().join("saved"), "emb_mht_1of1", false, 100)
        .unwrap();
    let out = ok(&run(
        d.path(),
        &cfg,
        &[
            "import",
            "saved",
            "--to-model-tag",
            "saved",
            "--batch-rows",
            "700",
        ],
        &[],
    ));
    assert_eq!(
        (out["rows"].as_u64(), out["tables"][0]["to"].as_str()),
        (Some(3000), Some("saved:emb"))
    );
    assert_rows(&table(&standalone(s.port, "saved", ""), "emb"), 3000, |x| x);
}

/// String keys `w0..w{n}` and their rows ([`row`] of the index).
fn words(n: i64) -> (Vec<u8>, Vec<u64>, Vec<u8>) {
    let (mut data, mut offs) = (Vec::new(), vec![0u64]);
    for k in 0..n {
        data.extend(format!("w{k}").bytes());
        offs.push(data.len() as u64);
    }
    let vals = f32_bytes(&(0..n).flat_map(row).collect::<Vec<_>>());
    (data, offs, vals)
}

#[test]
fn string_keys_export_and_import_with_their_dtype() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    let spec = |tag: &str| {
        let t = TableSpec::new("words", KeyType::Str, ValueType::F32, DIM);
        Table::open(Config::from_json(&standalone(s.port, tag, "")).unwrap(), t).unwrap()
    };
    let (data, offs, vals) = words(300);
    let t = spec("m");
    let rows = Rows::Fixed {
        data: &vals,
        row: DIM * 4,
    };
    t.insert(&t.keys(&data, &offs).unwrap(), &rows).unwrap();
    // Sampled keys of several sizes: exported as string keys (a u32 length, then the bytes).
    assert_eq!(
        ok(&run(d.path(), &cfg, &["export", "out"], &[]))["rows"],
        300
    );
    let keys = std::fs::read(d.path().join("out/m/words-keys")).unwrap();
    assert_eq!(keys.len() as u64, 300 * 4 + offs[300]);
    let args = [
        "import",
        "out",
        "--key-dtype",
        "string",
        "--to-model-tag",
        "s",
    ];
    assert_eq!(ok(&run(d.path(), &cfg, &args, &[]))["rows"], 300);
    let back = spec("s");
    let mut out = vec![0u8; vals.len()];
    let mut ex = vec![0u8; 300];
    let k = back.keys(&data, &offs).unwrap();
    back.find(&k, &[0u8; DIM * 4], &mut out, Some(&mut ex))
        .unwrap();
    assert!(ex.iter().all(|&e| e == 1) && out == vals);
}

#[test]
fn compact_storage_exports_float32_rows() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "c", r#""rde_value_storage": "bfloat16""#);
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    let t = table(&json, "emb");
    fill(&t, 500);
    ok(&run(d.path(), &cfg, &["export", "out"], &[]));
    t.save_to_files(&d.path().join("lib"), "emb", false, 100)
        .unwrap();
    // The same records the library's save writes: float32, widened from bfloat16.
    assert_eq!(
        read_files(&d.path().join("out/c/emb")),
        read_files(&d.path().join("lib/emb"))
    );
    let one = &read_files(&d.path().join("out/c/emb"))[&7];
    let bf = |x: f32| half::bf16::from_f32(x).to_f32();
    assert_eq!(one, &f32_bytes(&row(7).map(bf)));
}

#[test]
fn import_names_the_file_whose_size_does_not_divide() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(d.path(), "cfg.json", &standalone(s.port, "m", ""));
    std::fs::create_dir(d.path().join("in")).unwrap();
    std::fs::write(d.path().join("in/emb-keys"), [0u8; 24]).unwrap();
    std::fs::write(d.path().join("in/emb-values"), [0u8; 40]).unwrap();
    let err = failed(&run(d.path(), &cfg, &["import", "in"], &[]));
    assert!(
        err.contains("emb-values") && err.contains("3 rows"),
        "{err}"
    );
    std::fs::write(d.path().join("in/emb-keys"), [0u8; 20]).unwrap();
    let err = failed(&run(d.path(), &cfg, &["import", "in"], &[]));
    assert!(
        err.contains("emb-keys") && err.contains("--key-dtype"),
        "{err}"
    );
    // An unreachable server is named.
    let port = support::free_port();
    let bad = write_cfg(
        d.path(),
        "bad.json",
        &standalone(port, "m", r#""rde_max_retries": 0"#),
    );
    let err = failed(&run(d.path(), &bad, &["export", "out"], &[]));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_export_resumes_with_exactly_the_rows() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 20_000);
    let args = ["export", "out", "--page-rows", "1000"];
    let err = failed(&run(
        d.path(),
        &cfg,
        &args,
        &[("RDE_FAILPOINT_ADMIN_ABORT_AFTER", "7000")],
    ));
    assert!(err.contains("failpoint"), "{err}");
    // Nothing looks complete: no final files, the state and the partial files are kept.
    let out = d.path().join("out");
    assert!(!out.join("m/emb-keys").exists());
    // The page written when it stopped is in the file but not in the state: cut on resume.
    let state: Value =
        serde_json::from_slice(&std::fs::read(out.join("redis-embedding-export.state")).unwrap())
            .unwrap();
    let entry = state["tables"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let recorded = entry["rows"].as_u64().unwrap();
    assert!((1..7000).contains(&recorded), "{entry}");
    assert_eq!(entry["keys_len"].as_u64(), Some(recorded * 8));
    let written = std::fs::metadata(out.join("m/emb-keys.tmp")).unwrap().len();
    assert!(written >= 7000 * 8 && written > recorded * 8, "{written}");
    let err = failed(&run(d.path(), &cfg, &args, &[]));
    assert!(err.contains("--resume"), "{err}");
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let summary = ok(&run(d.path(), &cfg, &resumed, &[]));
    assert_eq!(summary["rows"], 20_000);
    assert_eq!(read_files(&out.join("m/emb")), expected_files(20_000));
    assert!(!out.join("m/emb-keys.tmp").exists());
    assert!(!out.join("redis-embedding-export.state").exists());
}

#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_import_resumes() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 5000);
    ok(&run(d.path(), &cfg, &["export", "out"], &[]));
    let args = [
        "import",
        "out",
        "--to-model-tag",
        "back",
        "--batch-rows",
        "1000",
    ];
    failed(&run(
        d.path(),
        &cfg,
        &args,
        &[("RDE_FAILPOINT_ADMIN_ABORT_AFTER", "2000")],
    ));
    let back = table(&standalone(s.port, "back", ""), "emb");
    assert_eq!(back.size().unwrap(), 2000);
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    assert_eq!(ok(&run(d.path(), &cfg, &resumed, &[]))["rows"], 5000);
    assert_rows(&back, 5000, |x| x);
    assert!(!d.path().join("redis-embedding-import.state").exists());
}

#[cfg(feature = "failpoints")]
#[test]
fn standalone_to_cluster_copy_resumes_and_verifies() {
    let s = Server::start();
    let c = support::Cluster::start(3, 0);
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let src = write_cfg(d.path(), "src.json", &json);
    let cjson = cluster_json(&c);
    let dst = write_cfg(d.path(), "dst.json", &cjson);
    fill(&table(&json, "emb"), 20_000);
    let args = ["copy", "--to", dst.to_str().unwrap(), "--page-rows", "1000"];
    let err = failed(&run(
        d.path(),
        &src,
        &args,
        &[("RDE_FAILPOINT_ADMIN_ABORT_AFTER", "5000")],
    ));
    assert!(err.contains("failpoint"), "{err}");
    let state: Value = serde_json::from_slice(
        &std::fs::read(d.path().join("redis-embedding-copy.state")).unwrap(),
    )
    .unwrap();
    let entry = state["tables"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    // HSCAN's COUNT is a hint: pages are about 1,000 rows. The last page written is not
    // recorded yet, so the resumed run writes it again.
    let (recorded, written) = (
        entry["rows"].as_i64().unwrap(),
        table(&cjson, "emb").size().unwrap(),
    );
    assert!(
        recorded > 0 && written >= 5000 && written > recorded,
        "{state} {written}"
    );
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let out = ok(&run(d.path(), &src, &resumed, &[]));
    assert_eq!(out["rows"], 20_000);
    assert_eq!(out["tables"][0]["sampled"], 1000);
    assert!(!d.path().join("redis-embedding-copy.state").exists());
    let dest = table(&cjson, "emb");
    assert_eq!(dest.buckets().len(), 6);
    assert_rows(&dest, 20_000, |x| x);
    // A second copy onto the now full destination is refused.
    let err = failed(&run(d.path(), &src, &args, &[]));
    assert!(err.contains("already holds 20000 rows"), "{err}");
}

#[test]
fn copies_to_a_model_tag_and_to_another_layout() {
    let s = Server::start();
    let other = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 3000);
    // Onto itself: refused, saying what to do.
    let err = failed(&run(d.path(), &cfg, &["copy"], &[]));
    assert!(err.contains("--to-model-tag"), "{err}");
    // A model-tag copy on the same server.
    let out = ok(&run(d.path(), &cfg, &["copy", "--to-model-tag", "m2"], &[]));
    assert_eq!(
        (out["rows"].as_u64(), out["tables"][0]["to"].as_str()),
        (Some(3000), Some("m2:emb"))
    );
    assert_rows(&table(&standalone(s.port, "m2", ""), "emb"), 3000, |x| x);
    // Another server, spread over 4 buckets and stored as bfloat16.
    let spread = standalone(
        other.port,
        "m",
        r#""storage_slice": 4, "storage_slice_import": 4, "rde_standalone_buckets": true,
           "rde_value_storage": "bfloat16""#,
    );
    let to = write_cfg(d.path(), "spread.json", &spread);
    let out = ok(&run(
        d.path(),
        &cfg,
        &["copy", "--to", to.to_str().unwrap(), "--table", "emb"],
        &[],
    ));
    assert_eq!(out["tables"][0]["sampled"], 1000);
    let dest = table(&spread, "emb");
    assert_eq!(dest.buckets().len(), 4);
    for b in dest.buckets().names() {
        let hlen = String::from_utf8(other.cli(&[b"HLEN", b.as_slice()])).unwrap();
        assert_ne!(hlen, ":0\r\n", "bucket {b:?} is empty");
    }
    assert_rows(&dest, 3000, |x| half::bf16::from_f32(x).to_f32());
}

/// Runs the binary with stderr on a terminal and returns what it drew there.
fn on_pty(cwd: &Path, cfg: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).arg("--config").arg(cfg).args(args);
    let (status, shown) = support::on_a_pty(cmd);
    assert!(status.success(), "{shown}");
    shown
}

#[test]
fn progress_bars_are_drawn_on_a_terminal() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 2000);
    let drawn = on_pty(d.path(), &cfg, &["export", "out"]);
    assert!(
        drawn.contains("export m:emb") && drawn.contains("2,000/2,000"),
        "{drawn:?}"
    );
    let drawn = on_pty(d.path(), &cfg, &["copy", "--to-model-tag", "t2"]);
    assert!(drawn.contains("copy m:emb to t2:emb"), "{drawn:?}");
    // Piped, stderr stays clean.
    let out = run(d.path(), &cfg, &["export", "out2"], &[]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

#[cfg(feature = "failpoints")]
#[test]
fn a_destination_row_that_differs_fails_the_verification() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), 2000);
    let args = [
        "copy",
        "--to-model-tag",
        "m2",
        "--page-rows",
        "100",
        "--sample",
        "2000",
    ];
    failed(&run(
        d.path(),
        &cfg,
        &args,
        &[("RDE_FAILPOINT_ADMIN_ABORT_AFTER", "1000")],
    ));
    // Rows the interrupted run already recorded are not written again: spoil them.
    let dest = table(&standalone(s.port, "m2", ""), "emb");
    let kb = i64_keys(&(0..2000).collect::<Vec<_>>());
    let vb = vec![0u8; 2000 * DIM * 4];
    let rows = Rows::Fixed {
        data: &vb,
        row: DIM * 4,
    };
    dest.insert(&dest.keys(&kb, &[]).unwrap(), &rows).unwrap();
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let err = failed(&run(d.path(), &cfg, &resumed, &[]));
    assert!(
        err.contains("copy to m2:emb: key ") && err.contains("holds other bytes"),
        "{err}"
    );
}

/// An int32-keyed table (4-byte stored keys) is copied as int32: into a cluster, each row
/// goes to the bucket TFRA's numeric rule gives, where an int32 table finds it.
#[test]
fn int32_keys_are_copied_as_int32() {
    let s = Server::start();
    let c = support::Cluster::start(3, 0);
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let src = write_cfg(d.path(), "src.json", &json);
    let cjson = cluster_json(&c);
    let dst = write_cfg(d.path(), "dst.json", &cjson);
    let open = |json: &str| {
        let spec = TableSpec::new("ids", KeyType::I32, ValueType::F32, DIM);
        Table::open(Config::from_json(json).unwrap(), spec).unwrap()
    };
    let keys: Vec<u8> = (0..500i32).flat_map(|k| k.to_le_bytes()).collect();
    let values = f32_bytes(&(0..500i64).flat_map(row).collect::<Vec<_>>());
    let rows = Rows::Fixed {
        data: &values,
        row: DIM * 4,
    };
    let t = open(&json);
    t.insert(&t.keys(&keys, &[]).unwrap(), &rows).unwrap();
    ok(&run(
        d.path(),
        &src,
        &["copy", "--to", dst.to_str().unwrap()],
        &[],
    ));
    let dest = open(&cjson);
    let mut got = vec![0u8; values.len()];
    let mut exists = vec![0u8; 500];
    dest.find(
        &dest.keys(&keys, &[]).unwrap(),
        &[0u8; DIM * 4],
        &mut got,
        Some(&mut exists),
    )
    .unwrap();
    assert_eq!(exists.iter().filter(|&&e| e == 1).count(), 500);
    assert!(got == values, "rows differ");
    // Exported as int32 too: 4-byte keys with no length before them.
    ok(&run(d.path(), &src, &["export", "out"], &[]));
    assert_eq!(
        std::fs::read(d.path().join("out/m/ids-keys"))
            .unwrap()
            .len(),
        500 * 4
    );
    // 500 int32 keys also divide into 250 int64 keys with rows of twice the dim: the
    // export's meta file tells import what they are, with no options.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("out/m/ids-meta.json")).unwrap())
            .unwrap();
    assert_eq!(
        (meta["key_dtype"].as_str(), meta["dim"].as_u64()),
        (Some("int32"), Some(DIM as u64))
    );
    let back = ok(&run(
        d.path(),
        &src,
        &["import", "out", "--to-model-tag", "m2"],
        &[],
    ));
    assert_eq!(back["rows"], 500, "{back}");
    let json2 = standalone(s.port, "m2", "");
    let again = open(&json2);
    let mut exists = vec![0u8; 500];
    again
        .find(
            &again.keys(&keys, &[]).unwrap(),
            &[0u8; DIM * 4],
            &mut got,
            Some(&mut exists),
        )
        .unwrap();
    assert_eq!(exists.iter().filter(|&&e| e == 1).count(), 500);
    assert!(got == values, "rows differ after the import");
}

#[test]
fn names_with_slashes_stay_distinct_through_files() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m", "");
    let cfg = write_cfg(d.path(), "src.json", &json);
    fill(&table(&json, "tower/user"), 30);
    fill(&table(&json, "tower_user"), 20);
    ok(&run(d.path(), &cfg, &["export", "out"], &[]));
    let back = ok(&run(
        d.path(),
        &cfg,
        &["import", "out", "--to-model-tag", "back"],
        &[],
    ));
    assert_eq!(back["rows"], 50, "{back}");
    let json2 = standalone(s.port, "back", "");
    assert_rows(&table(&json2, "tower/user"), 30, |v| v);
    assert_rows(&table(&json2, "tower_user"), 20, |v| v);
}
