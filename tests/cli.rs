//! The `redis-embedding` admin tool against real servers: `ls`, `stats`, `drop`, `check`,
//! its errors, and its progress bar on a terminal.

mod support;

use std::process::Command;

use redis_embedding::{KeyType, Rows, Table, TableSpec, ValueType};
use serde_json::Value;
use support::cli::{cli, config_file, fill, json_of, standalone_json, table, BIN};
use support::{f32_bytes, Cluster, Sentinel, Server};

#[test]
fn ls_lists_tables_with_rows_layout_and_sizes() {
    let s = Server::start();
    let cfg = s.config(r#""model_tag_runtime": "m1", "storage_slice": 2"#);
    let _a = fill(&cfg, "user", 4, 100);
    let _b = fill(&cfg, "item-fused", 12, 7);
    let spread = s
        .config(r#""model_tag_runtime": "m2", "storage_slice": 4, "rde_standalone_buckets": true"#);
    let _c = fill(&spread, "user", 4, 50);
    let (_d, path) = config_file(&standalone_json(s.port, ""));

    let ls = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(ls["tables"].as_array().unwrap().len(), 3, "{ls}");
    let user = &ls["tables"][1];
    assert_eq!(
        (user["model_tag"].as_str(), user["table"].as_str()),
        (Some("m1"), Some("user"))
    );
    assert_eq!(user["rows"], 100);
    assert_eq!(
        user["buckets"], 1,
        "standalone TFRA layout keeps rows in bucket 0"
    );
    assert_eq!(user["layout"], "tfra");
    assert_eq!(
        (user["key_bytes"].as_u64(), user["row_bytes"].as_u64()),
        (Some(8), Some(16))
    );
    assert!(user["bytes"].as_u64().unwrap() > 100 * 16, "{user}");
    let week = 7 * 24 * 3600 * 1000;
    let ttl = user["ttl_ms"].as_i64().unwrap();
    assert!(
        ttl > week - 60_000 && ttl <= week,
        "TFRA's default TTL is a week: {ttl}"
    );
    let fused = table(&ls, "item-fused");
    assert_eq!(
        (fused["layout"].as_str(), fused["rows"].as_u64()),
        (Some("fused"), Some(7))
    );
    assert_eq!(fused["row_bytes"], 48);
    let m2 = &ls["tables"][2];
    assert_eq!(
        (m2["model_tag"].as_str(), m2["layout"].as_str()),
        (Some("m2"), Some("spread"))
    );
    assert_eq!(
        (m2["rows"].as_u64(), m2["buckets"].as_u64()),
        (Some(50), Some(4))
    );

    let only = json_of(&cli(&path, &["--json", "ls", "--model-tag", "m2"]));
    assert_eq!(only["tables"].as_array().unwrap().len(), 1);

    let text = cli(&path, &["ls"]);
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("MODEL_TAG"), "{text}");
    assert!(
        lines[2].starts_with("m1") && lines[2].contains("user") && lines[2].contains("100"),
        "{text}"
    );
    assert!(lines[2].contains("7.0d"), "TTLs read as durations: {text}");
}

#[test]
fn ls_shows_a_ttl_and_cluster_buckets_on_their_masters() {
    let c = Cluster::start(3, 0);
    let cfg = c.config(r#""storage_slice": 6, "expire_model_tag_in_seconds": 3600"#);
    let _t = fill(&cfg, "emb", 2, 600);
    let ports: Vec<String> = c.nodes.iter().map(|n| n.port.to_string()).collect();
    let (_d, path) = config_file(&format!(
        r#"{{"redis_connection_mode": 0, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{}]}}"#,
        ports[0]
    ));
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    let emb = table(&ls, "emb");
    assert_eq!(
        (emb["rows"].as_u64(), emb["buckets"].as_u64()),
        (Some(600), Some(6))
    );
    let ttl = emb["ttl_ms"].as_i64().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
    let servers: std::collections::BTreeSet<&str> = emb["bucket_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["server"].as_str().unwrap())
        .collect();
    assert_eq!(
        servers.len(),
        3,
        "TFRA's cluster tags deal buckets over every master: {emb}"
    );
}

#[test]
fn stats_reports_server_figures_and_rows_per_server_and_watches() {
    let s = Server::start();
    let cfg = s.config(r#""model_tag_runtime": "m""#);
    let t = fill(&cfg, "user", 4, 10);
    // One hit and one miss on the server's own counters.
    s.cli(&[b"HGET", b"m:user{3560}", &1i64.to_le_bytes()]);
    s.cli(&[b"GET", b"absent"]);
    let _ = t;
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let st = json_of(&cli(&path, &["--json", "stats"]));
    let srv = &st["servers"][0];
    assert_eq!(srv["server"], format!("127.0.0.1:{}", s.port));
    assert_eq!(srv["evicted_keys"], 0);
    assert!(srv["keyspace_hits"].as_u64().unwrap() >= 1, "{srv}");
    assert!(srv["keyspace_misses"].as_u64().unwrap() >= 1, "{srv}");
    assert!(srv["used_memory"].as_u64().unwrap() > 0);
    assert_eq!(srv["maxmemory_policy"], "noeviction");
    assert_eq!(st["tables"][0]["table"], "m:user");
    assert_eq!(st["tables"][0]["rows"], 10);

    let watched = cli(
        &path,
        &["--json", "stats", "--watch", "0.05", "--count", "3"],
    );
    assert!(watched.status.success());
    let docs: Vec<Value> = String::from_utf8(watched.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3, "one document per refresh");

    let text = String::from_utf8(cli(&path, &["stats"]).stdout).unwrap();
    assert!(
        text.contains("EVICTED") && text.contains("REPL_LAG") && text.contains("m:user"),
        "{text}"
    );
}

#[test]
fn stats_counts_evictions_and_replication_lag_columns() {
    let s = Server::start();
    s.cli(&[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"]);
    s.cli(&[b"CONFIG", b"SET", b"maxmemory", b"2mb"]);
    let big = vec![b'x'; 100_000];
    for i in 0..60 {
        s.cli(&[b"SET", format!("filler{i}").as_bytes(), &big]);
    }
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let st = json_of(&cli(&path, &["--json", "stats"]));
    assert!(
        st["servers"][0]["evicted_keys"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(st["servers"][0]["maxmemory_policy"], "allkeys-lru");
}

#[test]
fn stats_through_a_sentinel_shows_the_master_and_its_replica() {
    let s = Sentinel::start();
    let _t = fill(&s.config(r#""model_tag_runtime": "m""#), "user", 2, 40);
    s.wait_replicated();
    let (_d, path) = config_file(&format!(
        r#"{{"redis_connection_mode": 1, "redis_master_name": "mymaster", "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{}]}}"#,
        s.sentinel.port
    ));
    let st = json_of(&cli(&path, &["--json", "stats"]));
    let srv = &st["servers"][0];
    assert_eq!(srv["server"], format!("127.0.0.1:{}", s.master.port));
    let replicas = srv["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{srv}");
    assert_eq!(
        replicas[0]["replica"],
        format!("127.0.0.1:{}", s.replica.port)
    );
    assert_eq!(replicas[0]["lag_bytes"], 0, "caught up: {srv}");
    assert_eq!(st["tables"][0]["rows"], 40);
}

#[test]
fn drop_prints_the_plan_needs_confirmation_and_deletes_one_model_tag() {
    let s = Server::start();
    let _a = fill(&s.config(r#""model_tag_runtime": "keep""#), "user", 2, 20);
    let _b = fill(
        &s.config(
            r#""model_tag_runtime": "old", "storage_slice": 3, "rde_standalone_buckets": true"#,
        ),
        "user",
        2,
        30,
    );
    let _c = fill(&s.config(r#""model_tag_runtime": "old""#), "item", 2, 5);
    let (_d, path) = config_file(&standalone_json(s.port, ""));

    let refused = cli(&path, &["drop", "--model-tag", "old"]);
    assert_eq!(refused.status.code(), Some(1));
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(
        out.contains("old:user") && out.contains("old:item"),
        "the plan comes first: {out}"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(
        json_of(&cli(&path, &["--json", "ls"]))["tables"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let everything = cli(&path, &["drop", "--yes"]);
    assert_eq!(
        everything.status.code(),
        Some(1),
        "a drop names what it drops"
    );

    let done = cli(&path, &["drop", "--model-tag", "old", "--yes"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(out.contains("rde-layout:"), "layout records go too: {out}");
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    let left: Vec<&str> = ls["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["model_tag"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["keep"]);
    let keys = String::from_utf8_lossy(&s.cli(&[b"KEYS", b"*old*"])).into_owned();
    assert_eq!(keys, "*0\r\n", "nothing of the dropped tag is left");

    let unconfirmed = cli(&path, &["--json", "drop", "--model-tag", "keep"]);
    assert_eq!(unconfirmed.status.code(), Some(1));
    assert!(
        unconfirmed.stdout.is_empty(),
        "no text plan mixed into --json output"
    );
    let dropped = json_of(&cli(
        &path,
        &["--json", "drop", "--model-tag", "keep", "--yes"],
    ));
    assert_eq!(dropped["tables"][0]["table"], "keep:user");
    assert_eq!(dropped["tables"][0]["rows"], 20);
    assert_eq!(
        dropped["deleted_keys"], 2,
        "the bucket and its layout record: {dropped}"
    );
    let none = json_of(&cli(
        &path,
        &["--json", "drop", "--model-tag", "keep", "--yes"],
    ));
    assert_eq!(none["deleted_keys"], 0);
}

/// A model tag holding ':' is selected by `--model-tag` whole: the table keeps its own name,
/// and a sibling tag is untouched.
#[test]
fn a_model_tag_with_a_colon_is_selected_whole() {
    let s = Server::start();
    let _a = fill(&s.config(r#""model_tag_runtime": "ctr:v1""#), "user", 2, 20);
    let _b = fill(&s.config(r#""model_tag_runtime": "ctr:v2""#), "user", 2, 30);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let ls = json_of(&cli(&path, &["--json", "ls", "--model-tag", "ctr:v1"]));
    let t = table(&ls, "user");
    assert_eq!(
        (t["model_tag"].as_str(), t["rows"].as_u64()),
        (Some("ctr:v1"), Some(20))
    );
    let done = cli(
        &path,
        &["drop", "--model-tag", "ctr:v1", "--table", "user", "--yes"],
    );
    assert!(done.status.success(), "{done:?}");
    let keys = String::from_utf8_lossy(&s.cli(&[b"KEYS", b"ctr:v1:*"])).into_owned();
    assert_eq!(keys, "*0\r\n", "ctr:v1 is dropped");
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(ls["tables"][0]["rows"], 30, "ctr:v2 is kept: {ls}");
}

#[test]
fn check_finds_a_planted_bad_row_a_wrong_bucket_and_a_foreign_key() {
    let s = Server::start();
    let cfg =
        s.config(r#""model_tag_runtime": "m", "storage_slice": 4, "rde_standalone_buckets": true"#);
    let _t = fill(&cfg, "user", 4, 200);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let clean = cli(&path, &["check"]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("checked 200 rows"));

    // A row of 3 floats in a 4-float table, under key 7 in its own bucket.
    let buckets: Vec<String> = redis_embedding::hash_tags(4, &[])
        .iter()
        .map(|tag| format!("m:user{tag}"))
        .collect();
    let hashed = cfg.using_hash_storage_slice;
    let home = redis_embedding::bucket_of(&7i64.to_le_bytes(), true, hashed, 4);
    s.cli(&[
        b"HSET",
        buckets[home].as_bytes(),
        &7i64.to_le_bytes(),
        &f32_bytes(&[1.0, 2.0, 3.0]),
    ]);
    // Key 8's row, copied into a bucket it does not map to.
    let b8 = redis_embedding::bucket_of(&8i64.to_le_bytes(), true, hashed, 4);
    let other = &buckets[(b8 + 1) % 4];
    s.cli(&[
        b"HSET",
        other.as_bytes(),
        &8i64.to_le_bytes(),
        &f32_bytes(&[0.0; 4]),
    ]);
    // A string key named like a bucket.
    s.cli(&[b"SET", b"m:user{999}", b"oops"]);

    let bad = cli(&path, &["--json", "check"]);
    assert_eq!(bad.status.code(), Some(2), "findings exit 2");
    let r: Value = serde_json::from_slice(&bad.stdout).unwrap();
    let kinds: Vec<(&str, &str)> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["detail"].as_str().unwrap()))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(k, d)| *k == "row-size" && d.contains("key 7 has a 12-byte row")),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|(k, d)| *k == "wrong-bucket" && d.contains("key 8 belongs in bucket")),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|(k, d)| *k == "not-a-hash" && d.contains("m:user{999}")),
        "{kinds:?}"
    );
    assert_eq!(r["rows"], 201);
}

/// A bad row among the rows `ls` samples for the table's row size is still found: the size
/// nearly every sampled row has is the table's.
#[test]
fn check_finds_a_bad_row_in_the_sampled_bucket() {
    let s = Server::start();
    let _t = fill(&s.config(r#""model_tag_runtime": "m""#), "user", 4, 40);
    s.cli(&[
        b"HSET",
        b"m:user{3560}",
        &7i64.to_le_bytes(),
        &f32_bytes(&[1.0, 2.0, 3.0]),
    ]);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(table(&ls, "user")["row_bytes"], 16, "{ls}");
    let out = cli(&path, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("key 7 has a 12-byte row"), "{text}");
}

/// String keys that all happen to be 8 bytes long look like int64 keys to a sample; with
/// `--key-dtype string` check places them by TFRA's string rule and finds nothing.
#[test]
fn check_takes_the_key_dtype_for_string_keys_of_one_size() {
    let s = Server::start();
    let cfg =
        s.config(r#""model_tag_runtime": "m", "storage_slice": 4, "rde_standalone_buckets": true"#);
    let t = Table::open(
        cfg,
        TableSpec::new("words", KeyType::Str, ValueType::F32, 2),
    )
    .unwrap();
    let (mut data, mut offs) = (Vec::new(), vec![0u64]);
    for k in 0..200 {
        data.extend(format!("w{k:07}").bytes());
        offs.push(data.len() as u64);
    }
    let vals = f32_bytes(&vec![0.5; 400]);
    let rows = Rows::Fixed {
        data: &vals,
        row: 8,
    };
    t.insert(&t.keys(&data, &offs).unwrap(), &rows).unwrap();
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let guessed = cli(&path, &["check"]);
    let text = String::from_utf8_lossy(&guessed.stdout);
    assert!(
        text.contains("--key-dtype string"),
        "the finding says what to try: {text}"
    );
    let out = cli(&path, &["check", "--key-dtype", "string"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("checked 200 rows"), "{text}");
}

#[test]
fn check_reports_a_ttl_that_will_drop_rows_and_a_bucket_outside_the_layout() {
    let s = Server::start();
    let cfg = s.config(r#""model_tag_runtime": "m", "expire_model_tag_in_seconds": 0"#);
    let _t = fill(&cfg, "user", 2, 10);
    s.cli(&[b"EXPIRE", b"m:user{3560}", b"600"]);
    // A bucket of an earlier storage_slice: its tag is not in the layout record.
    s.cli(&[
        b"HSET",
        b"m:user{8209}",
        &3i64.to_le_bytes(),
        &f32_bytes(&[0.0; 2]),
    ]);
    let (_d, path) = config_file(&standalone_json(
        s.port,
        r#", "expire_model_tag_in_seconds": 0"#,
    ));
    let out = cli(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ttl") && text.contains("will be lost"),
        "{text}"
    );
    assert!(
        text.contains("mixed-layout") && text.contains("m:user{8209}"),
        "{text}"
    );
}

#[test]
fn errors_are_one_line_naming_the_server_and_exit_1() {
    let port = support::free_port();
    let (_d, path) = config_file(&standalone_json(port, r#", "rde_max_retries": 0"#));
    let out = cli(&path, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let missing = Command::new(BIN)
        .args(["ls"])
        .env_remove("TFRA_REDIS_CONFIG_PATH")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--config"));

    let (_e, bad) = config_file(r#"{"redis_connection_mode": 2, "storage_slice": 0}"#);
    let out = cli(&bad, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage_slice"));
}

#[test]
fn the_config_comes_from_tfras_environment_variable() {
    let s = Server::start();
    let _t = fill(&s.config(""), "env_table", 2, 3);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let out = Command::new(BIN)
        .args(["--json", "ls"])
        .env("TFRA_REDIS_CONFIG_PATH", &path)
        .output()
        .unwrap();
    assert_eq!(table(&json_of(&out), "env_table")["rows"], 3);
}

#[test]
fn long_commands_draw_a_progress_bar_on_a_terminal_only() {
    let s = Server::start();
    let _t = fill(&s.config(r#""model_tag_runtime": "m""#), "user", 4, 5000);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&path).arg("check");
    let (status, shown) = support::on_a_pty(cmd);
    assert!(status.success(), "{shown}");
    assert!(shown.contains("checking rows"), "{shown:?}");
    assert!(
        shown.contains("5000/5000") || shown.contains("5,000/5,000"),
        "{shown:?}"
    );
    let piped = cli(&path, &["check"]);
    assert!(
        piped.stderr.is_empty(),
        "no bar when stderr is not a terminal"
    );
}

#[test]
fn md5_prefixed_tables_are_found_by_their_names() {
    let s = Server::start();
    let cfg = s.config(r#""model_tag_runtime": "m", "using_md5_prefix_name": true"#);
    let _t = fill(&cfg, "hashed", 2, 9);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let all = json_of(&cli(&path, &["--json", "ls"]));
    let anon = &all["tables"][0];
    assert!(anon["table"].as_str().unwrap().starts_with("md5:"), "{all}");
    let named = json_of(&cli(
        &path,
        &["--json", "ls", "--model-tag", "m", "--table", "hashed"],
    ));
    let t = table(&named, "hashed");
    assert_eq!(
        (t["model_tag"].as_str(), t["rows"].as_u64()),
        (Some("m"), Some(9))
    );
}

#[test]
fn a_memory_backend_config_is_refused_naming_the_field() {
    let (_d, path) = config_file(r#"{"rde_backend": "memory"}"#);
    let out = cli(&path, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rde_backend"));
}

#[test]
fn check_tests_bucket_placement_of_a_fused_table_spread_outside_a_cluster() {
    let s = Server::start();
    let cfg =
        s.config(r#""model_tag_runtime": "m", "storage_slice": 4, "rde_standalone_buckets": true"#);
    let _t = fill(&cfg, "emb-fused", 6, 50);
    let buckets: Vec<String> = redis_embedding::hash_tags(4, &[])
        .iter()
        .map(|tag| format!("m:emb-fused{tag}"))
        .collect();
    let b8 = redis_embedding::bucket_of(&8i64.to_le_bytes(), true, cfg.using_hash_storage_slice, 4);
    let other = &buckets[(b8 + 1) % 4];
    s.cli(&[
        b"HSET",
        other.as_bytes(),
        &8i64.to_le_bytes(),
        &f32_bytes(&[0.0; 6]),
    ]);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let out = cli(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wrong-bucket") && text.contains("key 8 belongs in bucket"),
        "{text}"
    );
}
