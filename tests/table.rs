//! Table operations against a real standalone redis-server.

mod support;

use redis_embedding::{ErrorKind, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, Server};

fn spec(name: &str, vt: ValueType, dim: usize) -> TableSpec {
    TableSpec::new(name, KeyType::I64, vt, dim)
}

fn f32_table(s: &Server, name: &str, dim: usize, extra: &str) -> Table {
    Table::open(s.config(extra), spec(name, ValueType::F32, dim)).unwrap()
}

fn find(t: &Table, keys: &[i64], dim: usize) -> (Vec<f32>, Vec<u8>) {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * dim * 4];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&vec![-1.0; dim]),
        &mut out,
        Some(&mut ex),
    )
    .unwrap();
    (f32s(&out), ex)
}

fn insert(t: &Table, keys: &[i64], vals: &[f32]) {
    let kb = i64_keys(keys);
    let vb = f32_bytes(vals);
    let row = vals.len() / keys.len() * 4;
    t.insert(&t.keys(&kb, &[]).unwrap(), &Rows::Fixed { data: &vb, row })
        .unwrap();
}

#[test]
fn insert_find_with_duplicates_and_small_chunks() {
    let s = Server::start();
    // keys_sending_size 2 forces several commands and pipelines per call.
    let t = f32_table(&s, "emb", 2, r#""keys_sending_size": 2"#);
    insert(
        &t,
        &[1, 2, 1, 3, 4, 5, 6],
        &[1., 1., 2., 2., 9., 9., 3., 3., 4., 4., 5., 5., 6., 6.],
    );
    let (v, ex) = find(&t, &[1, 7, 1, 2, 6], 2);
    assert_eq!(v, [9., 9., -1., -1., 9., 9., 2., 2., 6., 6.]);
    assert_eq!(ex, [1, 0, 1, 1, 1]);
    assert_eq!(t.size().unwrap(), 6);
    // The stored bytes are TFRA's: field = LE key, value = LE f32 row, bucket test:emb{3560}.
    let raw = s.cli(&[b"HGET", b"test:emb{3560}", &1i64.to_le_bytes()]);
    let mut want = b"$8\r\n".to_vec();
    want.extend(f32_bytes(&[9., 9.]));
    want.extend(b"\r\n");
    assert_eq!(raw, want);
}

#[test]
fn per_key_defaults_remove_and_clear() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 1, "");
    insert(&t, &[1], &[5.]);
    let kb = i64_keys(&[1, 2, 3]);
    let mut out = vec![0u8; 12];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&[10., 20., 30.]),
        &mut out,
        None,
    )
    .unwrap();
    assert_eq!(f32s(&out), [5., 20., 30.]);
    t.remove(&t.keys(&i64_keys(&[1, 99]), &[]).unwrap())
        .unwrap();
    assert_eq!(t.size().unwrap(), 0);
    insert(&t, &[4], &[1.]);
    t.clear().unwrap();
    assert_eq!(t.size().unwrap(), 0);
}

#[test]
fn repeated_keys_get_their_own_defaults_and_flags() {
    let s = Server::start();
    // Two keys per command: the occurrences of a key span several replies.
    let t = f32_table(&s, "emb", 1, r#""keys_sending_size": 2"#);
    let count = |name: &str| {
        let all = redis_embedding::stats();
        all.iter().find(|(n, _)| *n == name).unwrap().1
    };
    let (calls, nanos) = (count("calls"), count("call_nanoseconds"));
    insert(&t, &[1, 4], &[5., 6.]);
    // Calls and the time inside them are counted (other tests may add to both).
    assert!(count("calls") > calls && count("call_nanoseconds") > nanos);
    let kb = i64_keys(&[2, 1, 2, 3, 2, 1, 4, 1]);
    let keys = t.keys(&kb, &[]).unwrap();
    let mut out = vec![0u8; 32];
    let mut exists = vec![9u8; 8];
    let per_key = f32_bytes(&[10., 11., 12., 13., 14., 15., 16., 17.]);
    t.find(&keys, &per_key, &mut out, Some(&mut exists))
        .unwrap();
    // A missing key takes each position's own default; a found one its row everywhere.
    assert_eq!(f32s(&out), [10., 5., 12., 13., 14., 5., 6., 5.]);
    assert_eq!(exists, [0, 1, 0, 0, 0, 1, 1, 1]);
    let mut out = vec![0u8; 32];
    t.find(&keys, &f32_bytes(&[-1.]), &mut out, None).unwrap();
    assert_eq!(f32s(&out), [-1., 5., -1., -1., -1., 5., 6., 5.]);
}

#[test]
fn remove_with_repeated_and_missing_keys_deletes_each_once() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 1, r#""keys_sending_size": 2"#);
    insert(&t, &[1, 2, 4], &[1., 2., 4.]);
    t.remove(&t.keys(&i64_keys(&[1, 1, 2, 1, 3, 2]), &[]).unwrap())
        .unwrap();
    assert_eq!(t.size().unwrap(), 1);
    assert_eq!(find(&t, &[1, 2, 4], 1).1, [0, 0, 1]);
    assert_eq!(find(&t, &[4], 1).0, [4.]);
}

#[test]
fn accum_follows_bp_v2_semantics() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 2, "");
    insert(&t, &[1, 2], &[1., 1., 2., 2.]);
    let kb = i64_keys(&[1, 2, 3, 4]);
    let d = f32_bytes(&[0.5, 0.5, 7., 7., 3., 3., 4., 4.]);
    // 1: present+exists → add; 2: present+!exists → unchanged; 3: absent+!exists → set;
    // 4: absent+exists → dropped.
    t.accum(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed { data: &d, row: 8 },
        &[1, 0, 0, 1],
    )
    .unwrap();
    let (v, ex) = find(&t, &[1, 2, 3, 4], 2);
    assert_eq!(v, [1.5, 1.5, 2., 2., 3., 3., -1., -1.]);
    assert_eq!(ex, [1, 1, 1, 0]);
}

#[test]
fn accum_with_duplicate_keys_applies_every_occurrence_in_order() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 1, "");
    let kb = i64_keys(&[1, 1, 1]);
    let d = f32_bytes(&[2., 5., 1.]);
    // absent+!exists sets 2, then present+exists adds 1; the middle !exists is a no-op.
    t.accum(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed { data: &d, row: 4 },
        &[0, 0, 1],
    )
    .unwrap();
    assert_eq!(find(&t, &[1], 1).0, [3.]);
}

#[test]
fn accum_integer_and_bfloat16_arithmetic() {
    let s = Server::start();
    let t = Table::open(s.config(""), spec("i64", ValueType::I64, 2)).unwrap();
    let kb = i64_keys(&[7]);
    let k = t.keys(&kb, &[]).unwrap();
    let start: Vec<u8> = [i64::MAX, -5i64]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    t.insert(
        &k,
        &Rows::Fixed {
            data: &start,
            row: 16,
        },
    )
    .unwrap();
    let delta: Vec<u8> = [1i64, (1i64 << 40) + 3]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    t.accum(
        &k,
        &Rows::Fixed {
            data: &delta,
            row: 16,
        },
        &[1],
    )
    .unwrap();
    let mut out = vec![0u8; 16];
    t.find(&k, &[0u8; 16], &mut out, None).unwrap();
    let got: Vec<i64> = out
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, [i64::MIN, (1i64 << 40) - 2]);

    let t = Table::open(s.config(""), spec("bf", ValueType::BF16, 3)).unwrap();
    let bf = |x: f32| ((x.to_bits() + 0x7fff + ((x.to_bits() >> 16) & 1)) >> 16) as u16;
    let enc = |v: &[f32]| {
        v.iter()
            .flat_map(|&x| bf(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let k = t.keys(&kb, &[]).unwrap();
    t.insert(
        &k,
        &Rows::Fixed {
            data: &enc(&[1.0, -2.0, 0.1]),
            row: 6,
        },
    )
    .unwrap();
    t.accum(
        &k,
        &Rows::Fixed {
            data: &enc(&[0.5, 0.25, 0.2]),
            row: 6,
        },
        &[1],
    )
    .unwrap();
    let mut out = vec![0u8; 6];
    t.find(&k, &[0u8; 6], &mut out, None).unwrap();
    let sum = |a: f32, b: f32| {
        let (a, b) = (
            f32::from_bits((bf(a) as u32) << 16),
            f32::from_bits((bf(b) as u32) << 16),
        );
        bf(a + b)
    };
    let want: Vec<u8> = [sum(1.0, 0.5), sum(-2.0, 0.25), sum(0.1, 0.2)]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(out, want);
}

#[test]
fn concurrent_accums_add_up_exactly() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 4, r#""keys_sending_size": 16"#);
    let keys: Vec<i64> = (0..64).collect();
    insert(&t, &keys, &vec![0.0; 64 * 4]);
    let kb = i64_keys(&keys);
    let d = f32_bytes(&vec![1.0; 64 * 4]);
    let exists = vec![1u8; 64];
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..25 {
                    t.accum(
                        &t.keys(&kb, &[]).unwrap(),
                        &Rows::Fixed { data: &d, row: 16 },
                        &exists,
                    )
                    .unwrap();
                }
            });
        }
    });
    let (v, _) = find(&t, &keys, 4);
    assert!(v.iter().all(|&x| x == 200.0), "lost updates: {:?}", &v[..8]);
}

#[test]
fn stored_value_of_wrong_length_is_an_error_naming_bucket_and_key() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 4, "");
    s.cli(&[b"HSET", b"test:emb{3560}", &42i64.to_le_bytes(), b"short"]);
    let kb = i64_keys(&[42]);
    let mut out = vec![0u8; 16];
    let e = t
        .find(&t.keys(&kb, &[]).unwrap(), &[0u8; 16], &mut out, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data);
    assert!(
        e.message().contains("test:emb{3560}") && e.message().contains("key 42"),
        "{e}"
    );
    let e = t.export().unwrap_err();
    assert!(e.message().contains("key 42"), "{e}");
    let d = f32_bytes(&[1.0; 4]);
    let e = t
        .accum(
            &t.keys(&kb, &[]).unwrap(),
            &Rows::Fixed { data: &d, row: 16 },
            &[1],
        )
        .unwrap_err();
    assert!(
        e.message().contains("key 42") && e.message().contains("5 bytes"),
        "{e}"
    );
}

#[test]
fn string_keys_and_string_values_round_trip() {
    let s = Server::start();
    let t = Table::open(
        s.config(""),
        TableSpec::new("sv", KeyType::I64, ValueType::Str, 2),
    )
    .unwrap();
    let kb = i64_keys(&[1, 2]);
    let data = b"abcdefg";
    let offs = [0u64, 1, 3, 3, 7];
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Str {
            data,
            offsets: &offs,
            dim: 2,
        },
    )
    .unwrap();
    let q = i64_keys(&[2, 9, 1]);
    let dflt = Rows::Str {
        data: b"xy",
        offsets: &[0, 1, 2],
        dim: 2,
    };
    let (rows, ex) = t.find_strings(&t.keys(&q, &[]).unwrap(), &dflt).unwrap();
    let elems: Vec<&[u8]> = rows
        .offsets
        .windows(2)
        .map(|w| &rows.data[w[0] as usize..w[1] as usize])
        .collect();
    assert_eq!(elems, [b"".as_slice(), b"defg", b"x", b"y", b"a", b"bc"]);
    assert_eq!(ex, [1, 0, 1]);
    let ex = t.export().unwrap();
    assert_eq!(ex.len, 2);

    let t = Table::open(
        s.config(""),
        TableSpec::new("sk", KeyType::Str, ValueType::F32, 1),
    )
    .unwrap();
    let keys = b"a\0b{c}";
    let ko = [0u64, 3, 6];
    t.insert(
        &t.keys(keys, &ko).unwrap(),
        &Rows::Fixed {
            data: &f32_bytes(&[1., 2.]),
            row: 4,
        },
    )
    .unwrap();
    let ex = t.export().unwrap();
    assert_eq!(ex.len, 2);
    assert_eq!(s.cli(&[b"HEXISTS", b"test:sk{3560}", b"a\0b"]), b":1\r\n");
}

#[test]
fn a_malformed_string_row_names_its_own_bucket() {
    let s = Server::start();
    let t = Table::open(
        s.config(r#""storage_slice": 4, "rde_standalone_buckets": true"#),
        TableSpec::new("sb", KeyType::I64, ValueType::Str, 1),
    )
    .unwrap();
    let keys: Vec<i64> = (0..32).collect();
    let kb = i64_keys(&keys);
    let offs: Vec<u64> = (0..=32).collect();
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Str {
            data: &[b'v'; 32],
            offsets: &offs,
            dim: 1,
        },
    )
    .unwrap();
    // A key that lives in a bucket other than bucket 0.
    let (key, bucket) = keys
        .iter()
        .find_map(|&k| {
            (1..t.buckets().len()).find_map(|b| {
                let name = t.buckets().name(b);
                (s.cli(&[b"HEXISTS", name, &k.to_le_bytes()]) == b":1\r\n").then_some((k, b))
            })
        })
        .expect("some key outside bucket 0");
    let name = t.buckets().name(bucket).to_vec();
    s.cli(&[b"HSET", &name, &key.to_le_bytes(), b"\xff\xff\xff"]);
    let dflt = Rows::Str {
        data: b"d",
        offsets: &[0, 1],
        dim: 1,
    };
    let e = t
        .find_strings(&t.keys(&i64_keys(&[key]), &[]).unwrap(), &dflt)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data, "{e}");
    let shown = String::from_utf8_lossy(&name).into_owned();
    assert!(
        e.message().contains(&format!("bucket {shown} key {key}")),
        "{e}"
    );
}

#[test]
fn export_returns_every_row_once() {
    let s = Server::start();
    let t = f32_table(&s, "emb", 2, r#""keys_sending_size": 100"#);
    let keys: Vec<i64> = (0..3000).collect();
    let vals: Vec<f32> = keys.iter().flat_map(|&k| [k as f32, -(k as f32)]).collect();
    insert(&t, &keys, &vals);
    let ex = t.export().unwrap();
    assert_eq!(ex.len, 3000);
    let mut rows: Vec<(i64, Vec<f32>)> = ex
        .keys
        .chunks(8)
        .zip(ex.values.chunks(8))
        .map(|(k, v)| (i64::from_le_bytes(k.try_into().unwrap()), f32s(v)))
        .collect();
    rows.sort_by_key(|r| r.0);
    for (k, v) in rows {
        assert_eq!(v, [k as f32, -(k as f32)]);
    }
}

#[test]
fn the_export_op_streams_fixed_rows_and_reads_string_rows_first() {
    // The two steps the export kernel runs: plan (how many rows to allocate), then fill.
    let s = Server::start();
    let t = f32_table(&s, "emb", 2, "");
    insert(&t, &[7, 8], &[1., 2., 3., 4.]);
    let plan = t.export_plan().unwrap();
    // Streamed: no rows read ahead, room for at least the two rows.
    assert!(plan.exported().is_none() && plan.rows() >= 2);
    let (mut kb, mut vb) = (vec![0u8; plan.rows() * 8], vec![0u8; plan.rows() * 8]);
    assert_eq!(t.export_fill(&plan, &mut kb, &mut vb).unwrap(), 2);
    let mut keys = [kb[..8].to_vec(), kb[8..16].to_vec()];
    keys.sort();
    assert_eq!(keys.concat(), i64_keys(&[7, 8]));

    // String values: the rows are read first, and only the fixed-size keys are filled.
    let t = Table::open(s.config(""), spec("sv", ValueType::Str, 1)).unwrap();
    let offs = [0u64, 2, 5];
    let rows = Rows::Str {
        data: b"abcde",
        offsets: &offs,
        dim: 1,
    };
    t.insert(&t.keys(&i64_keys(&[1, 2]), &[]).unwrap(), &rows)
        .unwrap();
    let plan = t.export_plan().unwrap();
    assert_eq!(plan.rows(), 2);
    let ex = plan.exported().unwrap();
    assert_eq!(ex.str_values.offsets.len(), 3);
    let mut kb = vec![0u8; 16];
    assert_eq!(t.export_fill(&plan, &mut kb, &mut []).unwrap(), 2);
    assert_eq!(kb, ex.keys);
    // A key buffer of the wrong size is a bug reported, not a silent truncation.
    let e = t.export_fill(&plan, &mut [0u8; 8], &mut []).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains("key bytes (16)"), "{e}");
}

#[test]
fn server_down_fails_with_connection_error_naming_the_address() {
    let s = Server::start();
    let t = f32_table(
        &s,
        "emb",
        1,
        r#""redis_connect_timeout": 200, "redis_socket_timeout": 200"#,
    );
    insert(&t, &[1], &[1.]);
    s.stop();
    let kb = i64_keys(&[1]);
    let mut out = vec![0u8; 4];
    let e = t
        .find(&t.keys(&kb, &[]).unwrap(), &[0u8; 4], &mut out, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert_eq!(e.tf_code(), 14, "UnavailableError expected: {e}");
    assert!(
        e.message().contains(&format!("127.0.0.1:{}", s.port)),
        "{e}"
    );
    // Refused connections are retried (8 times by default) before the lookup fails.
    assert!(e.message().contains("gave up after 8 retries"), "{e}");
    // Opening a table retries its first connection the same way.
    let e = Table::open(s.config(""), spec("emb", ValueType::F32, 1))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.message().contains("gave up after 8 retries"), "{e}");
}

/// A server that accepts connections and never answers (a real one, paused with CLIENT
/// PAUSE ALL for far longer than the test) fails the open with a timeout naming it, after
/// waiting out the socket timeout of every attempt (the open's handshake is retried like a
/// request) and within the bound the timeouts and retries allow.
#[test]
fn silent_server_times_out() {
    const SOCKET_MS: u64 = 150;
    const CONNECT_MS: u64 = 150;
    const RETRIES: u32 = 2;
    let s = Server::start();
    let cfg = s.config(&format!(
        r#""redis_socket_timeout": {SOCKET_MS}, "redis_connect_timeout": {CONNECT_MS}, "rde_max_retries": {RETRIES}"#
    ));
    assert_eq!(s.cli(&[b"CLIENT", b"PAUSE", b"60000", b"ALL"]), b"+OK\r\n");
    let started = std::time::Instant::now();
    let e = Table::open(cfg, spec("emb", ValueType::F32, 1))
        .err()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains(&s.addr()), "{e}");
    let ms = std::time::Duration::from_millis;
    let attempts = RETRIES + 1;
    assert!(
        e.message()
            .contains(&format!("gave up after {RETRIES} retries")),
        "{e}"
    );
    // It waited a whole socket timeout for a reply on each attempt, and the 50 + 100 ms of
    // backoff between them...
    assert!(
        took >= ms(SOCKET_MS) * attempts + ms(150),
        "gave up after {took:?}: {e}"
    );
    // ...and no attempt took more than its connect, write and read timeouts, plus the
    // 50 + 100 ms of backoff between attempts; twice that, for a loaded machine.
    let bound = (ms(CONNECT_MS + 2 * SOCKET_MS) * attempts + ms(150)) * 2;
    assert!(took < bound, "gave up after {took:?}, bound {bound:?}: {e}");
}

/// Opening a table rides out a server that does not answer for a while, as requests do: a
/// real server is paused (CLIENT PAUSE ALL) for 1 s against a 200 ms socket timeout. The
/// open's handshake times out and is retried with backoff on new connections, and the open
/// succeeds once the pause has ended: not before (nothing answers until then), and at most
/// one capped backoff and one attempt after it (with slack for a loaded machine).
#[test]
fn a_server_paused_at_open_is_retried_until_it_answers() {
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(1000);
    let s = Server::start();
    let cfg = s.config(
        r#""redis_socket_timeout": 200, "redis_connect_timeout": 200, "rde_max_retries": 20, "rde_retry_backoff_ms": 50"#,
    );
    let received = || {
        let info = String::from_utf8_lossy(&s.cli(&[b"INFO", b"stats"])).into_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = received();
    // The pause starts after `started`, so no reply can come before started + PAUSE.
    let started = std::time::Instant::now();
    let pause_ms = PAUSE.as_millis().to_string();
    assert_eq!(
        s.cli(&[b"CLIENT", b"PAUSE", pause_ms.as_bytes(), b"ALL"]),
        b"+OK\r\n"
    );
    let t = Table::open(cfg, spec("emb", ValueType::F32, 1))
        .unwrap_or_else(|e| panic!("the open was not retried until the pause ended: {e}"));
    let took = started.elapsed();
    assert!(
        took >= PAUSE,
        "opened after {took:?}, within the {PAUSE:?} pause"
    );
    let bound = PAUSE + std::time::Duration::from_millis(200 + 1000) * 3;
    assert!(took < bound, "opened after {took:?}, bound {bound:?}");
    // Connections accepted: the harness' CLIENT PAUSE and INFO, and the open's attempts.
    let attempts = received() - before - 2;
    assert!(attempts >= 2, "the open made {attempts} connection(s)");
    insert(&t, &[1], &[1.0]);
    assert_eq!(find(&t, &[1], 1).1, [1]);
}

#[test]
fn huge_batches_run_in_windows_and_keep_last_write_wins() {
    let s = Server::start();
    let t = f32_table(&s, "big", 1, "");
    // 150k positions: every key appears twice, the second time in a later window.
    let keys: Vec<i64> = (0..75_000).chain(0..75_000).collect();
    let vals: Vec<f32> = (0..150_000).map(|i| i as f32).collect();
    insert(&t, &keys, &vals);
    assert_eq!(t.size().unwrap(), 75_000);
    let q: Vec<i64> = (0..80_000).collect();
    let (v, ex) = find(&t, &q, 1);
    assert!(v[..75_000]
        .iter()
        .enumerate()
        .all(|(k, &x)| x == (75_000 + k) as f32));
    assert!(ex[..75_000].iter().all(|&e| e == 1) && ex[75_000..].iter().all(|&e| e == 0));
    assert!(v[75_000..].iter().all(|&x| x == -1.0));

    // Streaming export into caller buffers, and the conflict error when they are too small.
    let cap = t.export_capacity().unwrap().unwrap();
    assert!(cap >= 75_000);
    let (mut kb, mut vb) = (vec![0u8; cap * 8], vec![0u8; cap * 4]);
    let n = t.export_into(&mut kb, &mut vb).unwrap();
    assert_eq!(n, 75_000);
    let mut got: Vec<(i64, f32)> = kb[..n * 8]
        .chunks(8)
        .zip(vb[..n * 4].chunks(4))
        .map(|(k, v)| {
            (
                i64::from_le_bytes(k.try_into().unwrap()),
                f32::from_le_bytes(v.try_into().unwrap()),
            )
        })
        .collect();
    got.sort_by_key(|r| r.0);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &(k, v))| k == i as i64 && v == (75_000 + i) as f32));
    let e = t.export_into(&mut [0u8; 80], &mut [0u8; 40]).unwrap_err();
    assert_eq!(e.kind(), redis_embedding::ErrorKind::Conflict);
}

#[test]
fn heavily_contended_accums_still_add_up_exactly() {
    // 8 writers on the same 4 keys: many compare-and-set rounds are lost, and the remaining
    // keys go through the server-side fallback; the sums must still be exact.
    let s = Server::start();
    let t = f32_table(&s, "hot", 8, r#""keys_sending_size": 2"#);
    let keys: Vec<i64> = vec![1, 2, 3, 4];
    insert(&t, &keys, &[0.0; 32]);
    let kb = i64_keys(&keys);
    let d = f32_bytes(&[0.5; 32]);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..40 {
                    t.accum(
                        &t.keys(&kb, &[]).unwrap(),
                        &Rows::Fixed { data: &d, row: 32 },
                        &[1; 4],
                    )
                    .unwrap();
                }
            });
        }
    });
    let (v, _) = find(&t, &keys, 8);
    assert!(v.iter().all(|&x| x == 160.0), "{:?}", &v[..8]);
}

#[test]
fn compact_storage_halves_the_bytes_and_round_trips_within_precision() {
    let s = Server::start();
    for (storage, rel) in [("bfloat16", 1.0 / 128.0), ("float16", 1.0 / 1024.0)] {
        let name = format!("c_{storage}");
        let t = f32_table(
            &s,
            &name,
            4,
            &format!(r#""rde_value_storage": "{storage}""#),
        );
        let vals = [1.0f32, -2.75, 0.1, 1234.5, 3.0, 4.0, 5.0, 6.0];
        insert(&t, &[1, 2], &vals);
        let bucket = format!("test:{name}{{3560}}");
        let raw = s.cli(&[b"HGET", bucket.as_bytes(), &1i64.to_le_bytes()]);
        assert!(
            raw.starts_with(b"$8\r\n"),
            "{storage}: 4 floats must take 8 bytes"
        );
        let (v, ex) = find(&t, &[1, 2, 3], 4);
        assert_eq!(ex, [1, 1, 0]);
        for (a, b) in vals.iter().zip(&v[..8]) {
            assert!((a - b).abs() <= a.abs() * rel, "{storage}: {a} -> {b}");
        }
        assert_eq!(&v[8..], [-1.0; 4]);
        // accum adds in the stored format; export and file round trips widen to float32.
        let kb = i64_keys(&[1]);
        t.accum(
            &t.keys(&kb, &[]).unwrap(),
            &Rows::Fixed {
                data: &f32_bytes(&[1.0; 4]),
                row: 16,
            },
            &[1],
        )
        .unwrap();
        let (v, _) = find(&t, &[1], 4);
        assert!(
            (v[0] - 2.0).abs() < 0.02 && (v[1] + 1.75).abs() < 0.02,
            "{storage}: {v:?}"
        );
        let ex = t.export().unwrap();
        assert_eq!((ex.len, ex.values.len()), (2, 2 * 16));
        let dir = tempfile::tempdir().unwrap();
        t.save_to_files(dir.path(), "f", false, 10).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("f-values"))
                .unwrap()
                .len(),
            2 * 16
        );
        t.clear().unwrap();
        t.load_from_files(dir.path(), "f", false, 10).unwrap();
        assert_eq!(t.size().unwrap(), 2);
    }
    let e = Table::open(
        s.config(r#""rde_value_storage": "bfloat16""#),
        spec("x", ValueType::F64, 2),
    )
    .err()
    .unwrap();
    assert!(e.message().contains("float32 tables only"), "{e}");
    let e = redis_embedding::Config::from_json(r#"{"rde_value_storage": "fp8"}"#).unwrap_err();
    assert!(e.message().contains("rde_value_storage"), "{e}");
}

#[test]
fn file_save_writes_every_row_once_from_paged_and_whole_buckets() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // One bucket of 80k rows is paged with HSCAN; 8 spread buckets are read whole.
    for (name, extra) in [
        ("paged", ""),
        (
            "spread",
            r#""storage_slice": 8, "rde_standalone_buckets": true"#,
        ),
    ] {
        let t = f32_table(&s, name, 2, extra);
        let keys: Vec<i64> = (0..80_000).collect();
        let vals: Vec<f32> = keys.iter().flat_map(|&k| [k as f32, 0.5]).collect();
        insert(&t, &keys, &vals);
        let rows = t.save_to_files(dir.path(), name, false, 1000).unwrap();
        assert_eq!(rows, 80_000, "{name}");
        let len = |suffix: &str| {
            std::fs::metadata(dir.path().join(format!("{name}{suffix}")))
                .unwrap()
                .len()
        };
        assert_eq!((len("-keys"), len("-values")), (80_000 * 8, 80_000 * 8));
        t.clear().unwrap();
        assert_eq!(
            t.load_from_files(dir.path(), name, false, 777).unwrap(),
            80_000
        );
        let (v, ex) = find(&t, &keys, 2);
        assert!(ex.iter().all(|&e| e == 1), "{name}");
        assert_eq!(v, vals, "{name}");
    }
}

#[test]
fn redis_at_maxmemory_fails_writes_as_resource_exhausted() {
    let s = Server::start();
    let t = f32_table(&s, "oom", 2, "");
    insert(&t, &[1], &[1.0, 2.0]);
    assert!(s
        .cli(&[b"CONFIG", b"SET", b"maxmemory", b"1"])
        .starts_with(b"+OK"));
    let kb = i64_keys(&[2]);
    let e = t
        .insert(
            &t.keys(&kb, &[]).unwrap(),
            &Rows::Fixed {
                data: &f32_bytes(&[3.0, 4.0]),
                row: 8,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
    assert_eq!(e.tf_code(), 8, "{e}");
    assert_eq!(e.server(), Some(&redis_embedding::ServerError::Oom), "{e}");
    // Not retried (8 retries by default): the server refused the HSET once.
    assert_eq!(
        s.cmdstat("hset", "rejected_calls"),
        1,
        "the OOM write was retried"
    );
    // Reads still work.
    let (v, ex) = find(&t, &[1, 2], 2);
    assert_eq!((v, ex), (vec![1.0, 2.0, -1.0, -1.0], vec![1, 0]));
}

#[test]
fn file_errors_carry_their_real_kind() {
    let s = Server::start();
    let t = f32_table(&s, "ferr", 2, "");
    insert(&t, &[1], &[1.0, 2.0]);
    let dir = tempfile::tempdir().unwrap();
    // The directory to save into exists as a file: EEXIST (was InvalidArgument).
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"").unwrap();
    let e = t.save_to_files(&taken, "f", false, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // Below a file: ENOTDIR, an unusable path.
    let e = t
        .save_to_files(&taken.join("sub"), "f", false, 10)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // A missing file to load.
    let e = t
        .load_from_files(dir.path(), "missing", false, 10)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Files that are directories: reading them fails with EISDIR (was DataLoss). String
    // keys, so that no length check (directory sizes differ between file systems) comes
    // first.
    for suffix in ["-keys", "-values"] {
        std::fs::create_dir(dir.path().join(format!("d{suffix}"))).unwrap();
    }
    let strs = Table::open(
        s.config(""),
        TableSpec::new("ferr_s", KeyType::Str, ValueType::F32, 2),
    )
    .unwrap();
    let e = strs
        .load_from_files(dir.path(), "d", false, 10)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the io::Error is kept");
    assert_eq!(io.kind(), std::io::ErrorKind::IsADirectory, "{e}");
}

/// Any other error reply (here WRONGTYPE: a bucket key holds a string) fails the op at once
/// as an InternalError naming the server: not retried (8 retries by default), the server ran
/// the lookup once.
#[test]
fn another_error_reply_is_internal_and_not_retried() {
    let s = Server::start();
    let t = f32_table(&s, "wrongtype", 1, "");
    let bucket = t.buckets().name(0).to_vec();
    assert_eq!(s.cli(&[b"SET", &bucket, b"not a hash"]), b"+OK\r\n");
    let kb = i64_keys(&[1]);
    let mut out = vec![0u8; 4];
    let e = t
        .find(&t.keys(&kb, &[]).unwrap(), &[0u8; 4], &mut out, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server, "{e}");
    assert_eq!(e.tf_code(), 13, "InternalError expected: {e}");
    assert!(e.message().contains("WRONGTYPE"), "{e}");
    assert!(e.message().contains(&s.addr()), "{e}");
    assert_eq!(
        s.cmdstat("hmget", "failed_calls"),
        1,
        "the lookup was retried"
    );
}
