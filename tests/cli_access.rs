//! The `redis-embedding` admin tool on servers that guard their access, and its selection of
//! model tags: a TLS server (with a client certificate), an ACL user (allowed, refused a
//! command, wrong password), and `--model-tag` matched exactly.

mod support;

use support::cli::{cli, config_file, fill, json_of, standalone_json, table};
use support::{Certs, Server};

/// The one stderr line of a run that failed with exit 1.
fn one_line_error(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn ls_and_check_run_over_tls_with_a_client_certificate() {
    let certs = Certs::generate();
    let (s, tls_port) = Server::start_tls(&certs, true);
    let _t = fill(&s.config(r#""model_tag_runtime": "m""#), "user", 2, 40);
    let tls = format!(
        r#", "rde_tls": true, "rde_tls_ca_cert_file": "{}", "rde_tls_cert_file": "{}",
           "rde_tls_key_file": "{}""#,
        certs.path("ca.crt"),
        certs.path("client.crt"),
        certs.path("client.key")
    );
    let (_d, path) = config_file(&standalone_json(tls_port, &tls));
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(table(&ls, "user")["rows"], 40, "{ls}");
    let check = cli(&path, &["check"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("checked 40 rows"));
    // The server asks for a client certificate: without one the CLI is refused, naming the
    // address.
    let no_cert = format!(
        r#", "rde_tls": true, "rde_tls_ca_cert_file": "{}", "rde_max_retries": 0"#,
        certs.path("ca.crt")
    );
    let (_e, path) = config_file(&standalone_json(tls_port, &no_cert));
    let err = one_line_error(&cli(&path, &["ls"]));
    assert!(err.contains(&format!("127.0.0.1:{tls_port}")), "{err}");
}

#[test]
fn an_acl_user_lists_and_a_refused_command_deletes_nothing() {
    let s = Server::start();
    let _t = fill(&s.config(r#""model_tag_runtime": "m""#), "user", 2, 25);
    let user = |rules: &[&str]| {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", b"ops"];
        args.extend(rules.iter().map(|r| r.as_bytes()));
        assert_eq!(s.cli(&args), b"+OK\r\n");
    };
    // An operator that may read everything but delete nothing.
    user(&["on", ">0ps-secret", "~*", "+@all", "-del", "-unlink"]);
    let creds = r#", "redis_user": "ops", "redis_password": "0ps-secret""#;
    let (_d, path) = config_file(&standalone_json(s.port, creds));
    let ls = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(table(&ls, "user")["rows"], 25, "{ls}");
    let clients = String::from_utf8_lossy(&s.cli(&[b"ACL", b"LOG"])).into_owned();
    assert!(
        !clients.contains("auth"),
        "the CLI's AUTH failed: {clients}"
    );
    let err = one_line_error(&cli(&path, &["drop", "--model-tag", "m", "--yes"]));
    assert!(
        err.contains("NOPERM") || err.contains("permission"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{}", s.port)), "{err}");
    assert!(!err.contains("0ps-secret"), "the password is echoed: {err}");
    let after = json_of(&cli(&path, &["--json", "ls"]));
    assert_eq!(
        table(&after, "user")["rows"],
        25,
        "a refused drop deleted rows"
    );
    // A wrong password: refused at once, the password not shown.
    let wrong = r#", "redis_user": "ops", "redis_password": "not-it", "rde_max_retries": 0"#;
    let (_e, path) = config_file(&standalone_json(s.port, wrong));
    let err = one_line_error(&cli(&path, &["ls"]));
    assert!(!err.contains("not-it"), "the password is echoed: {err}");
    assert!(
        err.to_lowercase().contains("wrongpass") || err.contains("password"),
        "{err}"
    );
}

/// `--model-tag a` selects tag `a` only, never tag `a:b` (whose buckets start with `a:`).
#[test]
fn a_model_tag_is_selected_exactly_not_as_a_prefix() {
    let s = Server::start();
    let _a = fill(&s.config(r#""model_tag_runtime": "ctr""#), "user", 2, 10);
    let _b = fill(&s.config(r#""model_tag_runtime": "ctr:v1""#), "user", 2, 20);
    let (_d, path) = config_file(&standalone_json(s.port, ""));
    let ls = json_of(&cli(&path, &["--json", "ls", "--model-tag", "ctr"]));
    let tables = ls["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{ls}");
    assert_eq!(
        (tables[0]["model_tag"].as_str(), tables[0]["table"].as_str()),
        (Some("ctr"), Some("user"))
    );
    assert_eq!(tables[0]["rows"], 10);
    // Unfiltered, the tag is all before the last ':'.
    let all = json_of(&cli(&path, &["--json", "ls"]));
    let mut tags: Vec<&str> = all["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["model_tag"].as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["ctr", "ctr:v1"], "{all}");
    let done = cli(&path, &["drop", "--model-tag", "ctr", "--yes"]);
    assert!(done.status.success(), "{done:?}");
    let left = json_of(&cli(&path, &["--json", "ls"]));
    let left = left["tables"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0]["model_tag"].as_str(), left[0]["rows"].as_u64()),
        (Some("ctr:v1"), Some(20)),
        "dropping tag ctr took ctr:v1 with it"
    );
}
