//! ACL users and TLS against real redis-servers, and secrets kept out of errors.

mod support;

use redis_embedding::{Config, ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Certs, Server};

fn spec() -> TableSpec {
    TableSpec::new("emb", KeyType::I64, ValueType::F32, 2)
}

/// Inserts two rows and reads them back.
fn round_trip(t: &Table) {
    let kb = i64_keys(&[1, 2]);
    let keys = t.keys(&kb, &[]).unwrap();
    let vals = f32_bytes(&[1., 2., 3., 4.]);
    t.insert(
        &keys,
        &Rows::Fixed {
            data: &vals,
            row: 8,
        },
    )
    .unwrap();
    let mut out = vec![0u8; 16];
    t.find(&keys, &f32_bytes(&[0., 0.]), &mut out, None)
        .unwrap();
    assert_eq!(f32s(&out), [1., 2., 3., 4.]);
}

fn acl(s: &Server, rules: &[&str]) {
    let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER"];
    args.extend(rules.iter().map(|r| r.as_bytes()));
    assert_eq!(s.cli(&args), b"+OK\r\n");
}

/// Opens the test table as ACL user `user` with `password`.
fn open_as(s: &Server, user: &str, password: &str) -> redis_embedding::Result<Table> {
    Table::open(
        s.config(&format!(
            r#""redis_user": "{user}", "redis_password": "{password}""#
        )),
        spec(),
    )
}

/// Every connection authenticates as the configured user. The default user may touch no
/// key, so a connection that skipped AUTH is refused; the table's connections are killed
/// before each round, so every round opens new ones, and each round's four threads may open
/// several at once. Every connection the server saw from the table ran as the user.
#[test]
fn acl_user_with_password_reads_and_writes() {
    const ROUNDS: u64 = 3;
    let s = Server::start();
    acl(&s, &["trainer", "on", ">tr4iner-pw", "~*", "+@all"]);
    // A connection that did not authenticate runs as `default`: it may still run commands
    // (the harness' own checks), but on no key.
    acl(&s, &["default", "resetkeys"]);
    let t = open_as(&s, "trainer", "tr4iner-pw").unwrap();
    let received = || {
        let info = String::from_utf8_lossy(&s.cli(&[b"INFO", b"stats"])).into_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = received();
    for _ in 0..ROUNDS {
        s.cli(&[b"CLIENT", b"KILL", b"USER", b"trainer"]);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| round_trip(&t));
            }
        });
        let list = String::from_utf8_lossy(&s.cli(&[b"CLIENT", b"LIST"])).into_owned();
        let clients = list.lines().filter(|l| l.starts_with("id="));
        for client in clients.filter(|l| !l.contains(" cmd=client|list ")) {
            assert!(client.contains(" user=trainer "), "{client}");
        }
    }
    // The harness' own commands open one connection each: two per round, and INFO once.
    let opened = received() - before - (2 * ROUNDS + 1);
    assert!(opened >= ROUNDS, "the table opened {opened} connections");
}

#[test]
fn a_wrong_password_is_permission_denied_and_not_echoed() {
    let s = Server::start();
    acl(&s, &["trainer", "on", ">right-pw", "~*", "+@all"]);
    let e = open_as(&s, "trainer", "wr0ng-pw").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert_eq!(e.tf_code(), 7);
    assert!(e.message().contains(&s.addr()), "{e}");
    assert!(e.message().contains("WRONGPASS"), "{e}");
    assert!(!e.message().contains("wr0ng-pw"), "{e}");
    assert!(!format!("{e:?}").contains("wr0ng-pw"));
}

#[test]
fn a_user_without_rights_gets_a_permission_error_naming_the_command() {
    let s = Server::start();
    acl(&s, &["nobody", "on", ">pw", "~*", "-@all", "+ping"]);
    let e = open_as(&s, "nobody", "pw").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("NOPERM"), "{e}");
    assert!(e.message().contains("no permissions to run the"), "{e}");
}

#[test]
fn a_read_only_user_can_serve_but_not_write() {
    let s = Server::start();
    // The trainer creates the table (and its layout record) first.
    round_trip(&Table::open(s.config(""), spec()).unwrap());
    acl(&s, &["server", "on", ">pw", "~*", "+@read", "+ping"]);
    let t = Table::open(
        s.config(
            r#""redis_user": "server", "redis_password": "pw", "expire_model_tag_in_seconds": -1"#,
        ),
        spec(),
    )
    .unwrap();
    let kb = i64_keys(&[1, 2]);
    let keys = t.keys(&kb, &[]).unwrap();
    let mut out = vec![0u8; 16];
    t.find(&keys, &f32_bytes(&[0., 0.]), &mut out, None)
        .unwrap();
    assert_eq!(f32s(&out), [1., 2., 3., 4.]);
    let vals = f32_bytes(&[9.; 4]);
    let e = t
        .insert(
            &keys,
            &Rows::Fixed {
                data: &vals,
                row: 8,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("hset"), "{e}");
    // Not retried (8 retries by default): the server refused the HSET once.
    assert_eq!(
        s.cmdstat("hset", "rejected_calls"),
        1,
        "the NOPERM write was retried"
    );
    // Nothing was written.
    t.find(&keys, &f32_bytes(&[0., 0.]), &mut out, None)
        .unwrap();
    assert_eq!(f32s(&out), [1., 2., 3., 4.]);
}

fn tls_config(port: u16, certs: &Certs, extra: &str) -> Config {
    Config::from_json(&format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{port}],
            "rde_tls": true, "rde_tls_ca_cert_file": "{}"{extra}}}"#,
        certs.path("ca.crt")
    ))
    .unwrap()
}

#[test]
fn tls_with_a_client_certificate() {
    let certs = Certs::generate();
    let (_s, port) = Server::start_tls(&certs, true);
    let client = format!(
        r#", "rde_tls_cert_file": "{}", "rde_tls_key_file": "{}""#,
        certs.path("client.crt"),
        certs.path("client.key")
    );
    round_trip(&Table::open(tls_config(port, &certs, &client), spec()).unwrap());
    // The server requires a client certificate: without one the connection is refused.
    let e = Table::open(tls_config(port, &certs, ""), spec())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn tls_checks_the_server_certificate_and_name() {
    let certs = Certs::generate();
    let (s, port) = Server::start_tls(&certs, false);
    round_trip(&Table::open(tls_config(port, &certs, ""), spec()).unwrap());
    // A name the certificate carries, other than the address connected to.
    round_trip(
        &Table::open(
            tls_config(port, &certs, r#", "rde_tls_server_name": "localhost""#),
            spec(),
        )
        .unwrap(),
    );
    // A CA that did not sign the server's certificate.
    let cfg = Config::from_json(&format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{port}],
            "rde_tls": true, "rde_tls_ca_cert_file": "{}"}}"#,
        certs.path("other-ca.crt")
    ))
    .unwrap();
    let opened = std::time::Instant::now();
    let e = Table::open(cfg, spec()).err().unwrap();
    // Refused, not retried: every connection would fail the same way.
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("TLS handshake was refused"), "{e}");
    assert!(e.message().contains("rde_tls_ca_cert_file"), "{e}");
    assert!(
        opened.elapsed() < std::time::Duration::from_secs(2),
        "a refused certificate was retried: {:?}",
        opened.elapsed()
    );
    // A name the certificate does not carry.
    let e = Table::open(
        tls_config(
            port,
            &certs,
            r#", "rde_tls_server_name": "redis.example.com""#,
        ),
        spec(),
    )
    .err()
    .unwrap();
    assert!(e.message().contains("certificate"), "{e}");
    // TLS to the plain port fails cleanly instead of hanging or misreading.
    let e = Table::open(
        tls_config(s.port, &certs, r#", "redis_socket_timeout": 500"#),
        spec(),
    )
    .err()
    .unwrap();
    assert!(e.message().contains(&s.addr()), "{e}");
}

#[test]
fn unreadable_certificate_files_name_the_field() {
    let certs = Certs::generate();
    let (_s, port) = Server::start_tls(&certs, false);
    let e = Table::open(
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 2, "redis_host_port": [{port}], "rde_tls": true,
                "rde_tls_ca_cert_file": "/nonexistent/ca.pem"}}"#
        ))
        .unwrap(),
        spec(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message()
            .contains("rde_tls_ca_cert_file /nonexistent/ca.pem"),
        "{e}"
    );
    let e = Table::open(
        tls_config(
            port,
            &certs,
            &format!(
                r#", "rde_tls_cert_file": "{}", "rde_tls_key_file": "{}""#,
                certs.path("client.crt"),
                certs.path("ca.crt")
            ),
        ),
        spec(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("rde_tls_key_file"), "{e}");
}

#[test]
fn a_password_rotated_under_an_open_table_fails_at_once_without_retries() {
    let s = Server::start();
    acl(&s, &["trainer", "on", ">old-pw", "~*", "+@all"]);
    // Retrying would take 8 × 1 s of backoff (8 retries, the 1 s cap), far over the bound.
    let t = Table::open(
        s.config(
            r#""redis_user": "trainer", "redis_password": "old-pw", "rde_max_retries": 8, "rde_retry_backoff_ms": 1000"#,
        ),
        spec(),
    )
    .unwrap();
    round_trip(&t);
    acl(&s, &["trainer", "resetpass", ">new-pw"]);
    // Pooled connections stay authenticated: drop them so the next request must log in.
    s.cli(&[b"CLIENT", b"KILL", b"USER", b"trainer"]);
    let kb = i64_keys(&[1]);
    let vals = f32_bytes(&[5., 6.]);
    let started = std::time::Instant::now();
    let e = t
        .insert(
            &t.keys(&kb, &[]).unwrap(),
            &Rows::Fixed {
                data: &vals,
                row: 8,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("WRONGPASS"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the refused login was retried: {:?}",
        started.elapsed()
    );
}
