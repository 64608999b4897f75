//! The `redis-embedding` binary in tests (feature `cli`): config files, runs, their JSON, and
//! tables filled through the library for it to find.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};
use serde_json::Value;

use super::{f32_bytes, i64_keys};

pub const BIN: &str = env!("CARGO_BIN_EXE_redis-embedding");

/// A config file for `json` in a fresh temp dir (kept alive by the returned guard).
pub fn config_file(json: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis.json");
    std::fs::write(&path, json).unwrap();
    (dir, path)
}

pub fn standalone_json(port: u16, extra: &str) -> String {
    format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{port}]{extra}}}"#
    )
}

pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the binary in `cwd` (where `copy --resume` keeps its state) with extra environment.
pub fn cli_in(cwd: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RDE_FAILPOINT_ADMIN_ABORT_AFTER");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// A standalone config's JSON whose model tags (runtime and import) are both `tag`.
pub fn tagged_json(port: u16, tag: &str) -> String {
    standalone_json(
        port,
        &format!(r#", "model_tag_runtime": "{tag}", "model_tag_import": "{tag}""#),
    )
}

/// Runs the binary in `cwd` with `--config cfg --json` and `args`.
pub fn run_json(cwd: &Path, cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    cli_in(cwd, cfg, &all, env)
}

/// The one stderr line of a failed run.
pub fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("redis-embedding: error: "), "{err}");
    err
}

/// Writes `json` to `dir/name` and returns its path.
pub fn write_cfg(dir: &Path, name: &str, json: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, json).unwrap();
    p
}

/// Opens the int64 → float32 table `name` of `dim` under the config `json`.
pub fn open_table(json: &str, name: &str, dim: usize) -> Table {
    let spec = TableSpec::new(name, KeyType::I64, ValueType::F32, dim);
    Table::open(Config::from_json(json).unwrap(), spec).unwrap()
}

/// The JSON summary of a successful run.
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Fills table `name` of `cfg` with keys `0..n`, rows of `dim` floats.
pub fn fill(cfg: &Config, name: &str, dim: usize, n: i64) -> Table {
    let t = Table::open(
        cfg.clone(),
        TableSpec::new(name, KeyType::I64, ValueType::F32, dim),
    )
    .unwrap();
    let keys: Vec<i64> = (0..n).collect();
    let vals: Vec<f32> = (0..n as usize * dim).map(|i| i as f32).collect();
    let kb = i64_keys(&keys);
    let vb = f32_bytes(&vals);
    let k = t.keys(&kb, &[]).unwrap();
    t.insert(
        &k,
        &Rows::Fixed {
            data: &vb,
            row: dim * 4,
        },
    )
    .unwrap();
    t
}

pub fn table<'a>(ls: &'a Value, name: &str) -> &'a Value {
    ls["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("{name} not in {ls}"))
}
