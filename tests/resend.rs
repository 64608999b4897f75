//! Idempotent requests cut in flight are resent (docs/operations.md, "Retries and timeouts"):
//! lookups, size, export and the TTL commands. Each table talks to a real redis-server
//! through `support::proxy::Proxy`, which forwards a chosen request, lets the server run it
//! and closes the connection instead of forwarding the reply. For each op the test checks
//! that the call succeeds with the right data, that the proxy really cut the request
//! (counted when the server's reply to it arrived, so it had been sent and run), that the
//! server ran the command twice (the cut one and the resend), and that the `retries` and
//! `connection_failures` counters moved by the cuts.
//!
//! The counters are process-wide, so every test here holds `support::serial()`.

mod support;

use redis_embedding::{stats, Config, KeyType, Rows, Table, TableSpec, ValueType};
use support::proxy::Proxy;
use support::{f32_bytes, f32s, i64_keys, Server};

const DIM: usize = 2;

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

/// A standalone config for the server behind `p`.
fn config(p: &Proxy, extra: &str) -> Config {
    let sep = if extra.is_empty() { "" } else { "," };
    Config::from_json(&format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{}], "table_store_mode": 0{sep}{extra}}}"#,
        p.port
    ))
    .unwrap()
}

fn open(p: &Proxy, name: &str, extra: &str) -> redis_embedding::Result<Table> {
    Table::open(
        config(p, extra),
        TableSpec::new(name, KeyType::I64, ValueType::F32, DIM),
    )
}

fn row(k: i64) -> [f32; DIM] {
    [k as f32, -(k as f32)]
}

fn insert(t: &Table, keys: &[i64]) {
    let vals: Vec<f32> = keys.iter().flat_map(|&k| row(k)).collect();
    t.insert(
        &t.keys(&i64_keys(keys), &[]).unwrap(),
        &Rows::Fixed {
            data: &f32_bytes(&vals),
            row: DIM * 4,
        },
    )
    .unwrap();
}

/// Runs `op`, which sends `cmd` `sends` times when nothing is cut (if known), with the `n`
/// requests carrying `cmd` after the next `skip` ones cut in flight by `p`. Checks that
/// exactly those `n` were cut, that the server ran every `cmd` the proxy forwarded (the cut
/// ones too), `sends + n` of them (each cut request was resent), and that each cut was counted
/// as a connection failure and a retry. Returns what `op` returned, which must be a success.
fn cut<T>(
    (p, s): (&Proxy, &Server),
    cmd: &str,
    (sends, skip, n): (Option<u32>, u32, u32),
    op: impl FnOnce() -> redis_embedding::Result<T>,
) -> T {
    let stat = cmd.to_ascii_lowercase();
    let (cuts, ran) = (p.cuts(), s.calls(&stat));
    let (retries, failures, failed) = (
        counter("retries"),
        counter("connection_failures"),
        counter("requests_failed"),
    );
    p.cut_after(cmd, skip, n);
    let r = op().unwrap_or_else(|e| panic!("{cmd} cut in flight {n} time(s) was not resent: {e}"));
    assert_eq!(
        p.cuts_pending(),
        0,
        "{cmd}: the op never sent the request to cut"
    );
    assert_eq!(p.cuts() - cuts, n, "{cmd}: requests cut");
    let forwarded = p.seen();
    assert_eq!(
        s.calls(&stat) - ran,
        u64::from(forwarded),
        "{cmd}: the server ran each request the proxy forwarded"
    );
    if let Some(sends) = sends {
        assert_eq!(forwarded, sends + n, "{cmd}: each cut request was resent");
    }
    assert_eq!(counter("retries") - retries, u64::from(n), "{cmd}: retries");
    assert!(
        counter("connection_failures") - failures >= u64::from(n),
        "{cmd}: connection failures"
    );
    assert_eq!(
        counter("requests_failed"),
        failed,
        "{cmd}: a request failed"
    );
    r
}

/// A lookup (HMGET) cut in flight is resent and returns the stored rows and the defaults of
/// missing keys: fixed-size values (`find`) and string values (`find_strings`), once and
/// three times in a row.
#[test]
fn a_lookup_cut_in_flight_is_resent() {
    let _serial = support::serial();
    let s = Server::start();
    let p = Proxy::start(s.port);
    let t = open(&p, "rs_find", "").unwrap();
    let keys: Vec<i64> = (1..=100).collect();
    insert(&t, &keys);
    let query: Vec<i64> = (50..=150).collect();
    for n in [1, 3] {
        let (out, ex) = cut((&p, &s), "HMGET", (Some(1), 0, n), || {
            let mut out = vec![0u8; query.len() * DIM * 4];
            let mut ex = vec![0u8; query.len()];
            t.find(
                &t.keys(&i64_keys(&query), &[]).unwrap(),
                &f32_bytes(&[7.0; DIM]),
                &mut out,
                Some(&mut ex),
            )
            .map(|()| (f32s(&out), ex))
        });
        for (i, &k) in query.iter().enumerate() {
            let want = if k <= 100 { row(k) } else { [7.0; DIM] };
            assert_eq!(out[i * DIM..(i + 1) * DIM], want, "key {k}");
            assert_eq!(ex[i], u8::from(k <= 100), "key {k}");
        }
    }

    let st = Table::open(
        config(&p, ""),
        TableSpec::new("rs_str", KeyType::I64, ValueType::Str, 1),
    )
    .unwrap();
    st.insert(
        &st.keys(&i64_keys(&[1, 2]), &[]).unwrap(),
        &Rows::Str {
            data: b"abcd",
            offsets: &[0, 1, 4],
            dim: 1,
        },
    )
    .unwrap();
    let (rows, ex) = cut((&p, &s), "HMGET", (Some(1), 0, 1), || {
        st.find_strings(
            &st.keys(&i64_keys(&[2, 3, 1]), &[]).unwrap(),
            &Rows::Str {
                data: b"x",
                offsets: &[0, 1],
                dim: 1,
            },
        )
    });
    assert_eq!(rows.data, b"bcdxa");
    assert_eq!(rows.offsets, [0, 3, 4, 5]);
    assert_eq!(ex, [1, 0, 1]);
}

/// `size` (HLEN) cut in flight is resent and counts every row.
#[test]
fn a_size_cut_in_flight_is_resent() {
    let _serial = support::serial();
    let s = Server::start();
    let p = Proxy::start(s.port);
    let t = open(&p, "rs_size", "").unwrap();
    insert(&t, &(0..321).collect::<Vec<_>>());
    assert_eq!(cut((&p, &s), "HLEN", (Some(1), 0, 1), || t.size()), 321);
    assert_eq!(cut((&p, &s), "HLEN", (Some(1), 0, 2), || t.size()), 321);
}

/// An export cut in flight is resent and returns every row once: its HLEN, the HGETALL of
/// a small bucket, and an HSCAN page in the middle of a bucket too large for one HGETALL
/// (the page is read again from the same cursor).
#[test]
fn an_export_cut_in_flight_is_resent() {
    let _serial = support::serial();
    let s = Server::start();
    let p = Proxy::start(s.port);
    let check = |ex: &redis_embedding::Exported, n: i64| {
        assert_eq!(ex.len, n as usize);
        let vals = f32s(&ex.values);
        let mut got: Vec<i64> = ex
            .keys
            .chunks(8)
            .enumerate()
            .map(|(i, k)| {
                let k = i64::from_le_bytes(k.try_into().unwrap());
                assert_eq!(vals[i * DIM..(i + 1) * DIM], row(k), "key {k}");
                k
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "every row once");
    };

    let small = open(&p, "rs_export", "").unwrap();
    insert(&small, &(0..500).collect::<Vec<_>>());
    check(
        &cut((&p, &s), "HLEN", (Some(1), 0, 1), || small.export()),
        500,
    );
    check(
        &cut((&p, &s), "HGETALL", (Some(1), 0, 1), || small.export()),
        500,
    );

    // More rows than one HGETALL reads (65,536): paged with HSCAN, 4,096 rows a page. The
    // number of pages depends on the state of the hash's incremental rehash: not checked.
    const BIG: i64 = 70_000;
    let big = open(&p, "rs_export_big", "").unwrap();
    insert(&big, &(0..BIG).collect::<Vec<_>>());
    check(&cut((&p, &s), "HSCAN", (None, 3, 1), || big.export()), BIG);
}

/// The TTL commands are resent when cut in flight: the EXPIRE that arms a bucket's TTL after
/// the write that created it, the EXPIRE of every bucket when a table opens with a TTL, and
/// the TTL query and PERSIST when it opens with `expire_model_tag_in_seconds: -1`. The
/// bucket's TTL on the server shows each took effect.
#[test]
fn ttl_commands_cut_in_flight_are_resent() {
    let _serial = support::serial();
    let s = Server::start();
    let p = Proxy::start(s.port);
    let ttl_of = |t: &Table| -> i64 {
        let r = s.cli(&[b"TTL", t.buckets().name(0)]);
        String::from_utf8_lossy(&r[1..r.len() - 2]).parse().unwrap()
    };
    // Opened before the bucket exists: its TTL is armed by the write that creates it.
    let t = open(&p, "rs_ttl", r#""expire_model_tag_in_seconds": 1000"#).unwrap();
    cut((&p, &s), "EXPIRE", (Some(1), 0, 1), || {
        insert(&t, &[1, 2, 3]);
        Ok(())
    });
    let armed = ttl_of(&t);
    assert!((1..=1000).contains(&armed), "TTL {armed} after the write");

    let t = cut((&p, &s), "EXPIRE", (Some(1), 0, 1), || {
        open(&p, "rs_ttl", r#""expire_model_tag_in_seconds": 2000"#)
    });
    let armed = ttl_of(&t);
    assert!((1001..=2000).contains(&armed), "TTL {armed} after the open");

    let off = r#""expire_model_tag_in_seconds": -1"#;
    let t = cut((&p, &s), "TTL", (Some(1), 0, 1), || open(&p, "rs_ttl", off));
    assert_eq!(
        ttl_of(&t),
        -1,
        "the TTL query was resent and the TTL removed"
    );

    open(&p, "rs_ttl", r#""expire_model_tag_in_seconds": 2000"#).unwrap();
    assert!(ttl_of(&t) > 1000);
    let t = cut((&p, &s), "PERSIST", (Some(1), 0, 1), || {
        open(&p, "rs_ttl", off)
    });
    assert_eq!(ttl_of(&t), -1, "PERSIST was resent");
}
