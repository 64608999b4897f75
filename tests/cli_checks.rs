//! The `redis-embedding` binary's refusals and limits that tests/cli.rs and
//! tests/cli_transfer.rs do not show: `copy` refusing a selection that puts two tables onto
//! one, `copy`'s row-count check after the rows are written, and `check` listing at most 20
//! findings per table and kind (the rest counted).

mod support;

use redis_embedding::{Rows, Table};
use serde_json::Value;
use support::cli::{
    cli, failed, open_table, run_json as run, tagged_json as standalone, write_cfg,
};
use support::{f32_bytes, i64_keys, Server};

const DIM: usize = 4;

fn table(json: &str, name: &str) -> Table {
    open_table(json, name, DIM)
}

/// Inserts keys `keys` with rows `[k; DIM]`.
fn fill(t: &Table, keys: &[i64]) {
    let kb = i64_keys(keys);
    let vb = f32_bytes(
        &keys
            .iter()
            .flat_map(|&k| [k as f32; DIM])
            .collect::<Vec<_>>(),
    );
    let rows = Rows::Fixed {
        data: &vb,
        row: DIM * 4,
    };
    t.insert(&t.keys(&kb, &[]).unwrap(), &rows).unwrap();
}

/// Two model tags each hold an `emb`; copying both to one model tag (no `--model-tag` to
/// pick one) would put both onto `z:emb`, and is refused naming both before anything is
/// written. Selecting one of them copies it.
#[test]
fn copy_refuses_two_tables_that_land_on_one() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let (m, n) = (standalone(s.port, "m"), standalone(s.port, "n"));
    fill(&table(&m, "emb"), &[1, 2, 3]);
    fill(&table(&n, "emb"), &[7, 8]);
    let cfg = write_cfg(d.path(), "cfg.json", &m);
    let err = failed(&run(d.path(), &cfg, &["copy", "--to-model-tag", "z"], &[]));
    assert!(
        err.contains("m:emb and n:emb would both be copied to z:emb")
            || err.contains("n:emb and m:emb would both be copied to z:emb"),
        "{err}"
    );
    assert!(err.contains("--model-tag"), "{err}");
    let z = table(&standalone(s.port, "z"), "emb");
    assert_eq!(z.size().unwrap(), 0, "the refused copy wrote rows");
    // Nothing of the layout either: only the two source tables' keys are on the server.
    let keys = String::from_utf8_lossy(&s.cli(&[b"KEYS", b"z:*"])).into_owned();
    assert_eq!(keys, "*0\r\n", "the refused copy wrote keys: {keys:?}");

    let out = run(
        d.path(),
        &cfg,
        &["copy", "--model-tag", "n", "--to-model-tag", "z"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(z.size().unwrap(), 2);
}

/// A copy whose destination ends with another number of rows than the source fails its
/// verification naming both counts. An interrupted copy is resumed after a row the source
/// does not hold was written to the destination (as a writer during the copy would).
#[cfg(feature = "failpoints")]
#[test]
fn copy_fails_when_the_row_counts_differ() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    fill(&table(&json, "emb"), &(0..2000).collect::<Vec<_>>());
    let args = ["copy", "--to-model-tag", "m2", "--page-rows", "100"];
    let err = failed(&run(
        d.path(),
        &cfg,
        &args,
        &[("RDE_FAILPOINT_ADMIN_ABORT_AFTER", "1000")],
    ));
    assert!(err.contains("failpoint"), "{err}");
    fill(&table(&standalone(s.port, "m2"), "emb"), &[1_000_000]);
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let err = failed(&run(d.path(), &cfg, &resumed, &[]));
    assert!(
        err.contains(
            "copy of m:emb to m2:emb: the source holds 2000 rows but the destination 2001"
        ),
        "{err}"
    );
}

/// `check` lists at most 20 findings of one kind in one table and counts the rest: 25 rows
/// of the wrong size give 20 `row-size` findings and `more: 5` (and "... and 5 more" in
/// text), 25 findings in all; another kind in the same table is listed on its own count.
#[test]
fn check_lists_20_findings_per_kind_and_counts_the_rest() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let json = standalone(s.port, "m");
    let cfg = write_cfg(d.path(), "cfg.json", &json);
    let t = table(&json, "user");
    fill(&t, &(0..100).collect::<Vec<_>>());
    let buckets = t.buckets().names();
    assert_eq!(buckets.len(), 1);
    let bucket = buckets[0].as_slice();
    for k in 0..25i64 {
        s.cli(&[b"HSET", bucket, &k.to_le_bytes(), &f32_bytes(&[1.0; 3])]);
    }
    // Three keys of 4 bytes in an int64 table.
    for k in 0..3i32 {
        s.cli(&[b"HSET", bucket, &k.to_le_bytes(), &f32_bytes(&[1.0; DIM])]);
    }

    // The sizes are given: sampled, they would be unclear with this many bad rows.
    let sizes = ["check", "--row-bytes", "16", "--key-dtype", "int64"];
    let out = run(d.path(), &cfg, &sizes, &[]);
    assert_eq!(out.status.code(), Some(2), "findings exit 2: {out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = r["findings"].as_array().unwrap();
    let of = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).count();
    assert_eq!(of("row-size"), 20, "{r}");
    assert_eq!(of("key-size"), 3, "{r}");
    assert_eq!(r["more"], 5, "{r}");
    assert_eq!(r["rows"], 103);

    let text = cli(&cfg, &sizes);
    let shown = String::from_utf8_lossy(&text.stdout);
    assert_eq!(shown.matches("row-size").count(), 20, "{shown}");
    assert!(shown.contains("... and 5 more"), "{shown}");
    assert!(shown.contains("28 finding(s)"), "{shown}");
}
