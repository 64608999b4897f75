//! Property tests of everything that decodes bytes we do not control: the JSON config, RESP
//! replies, stored string rows and key buffers. Each target also replays the committed
//! corpus under `tests/corpus/` (inputs that once mattered: huge lengths, deep nesting,
//! bad UTF-8). Nothing may panic or allocate by an announced length; every failure is an
//! `Error` with a kind.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::codec::{decode_str_row, KeyType, Keys, Rows};
use crate::config::Config;
use crate::error::{ErrorKind, ServerError};
use crate::resp::conn::{Conn, FlatPage, Reply};

fn corpus(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", root.display());
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Every reader over the same bytes: none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = Conn::from_bytes(bytes.to_vec()).read_reply();
    let _ = Conn::from_bytes(bytes.to_vec()).read_scan_page(&mut FlatPage::default());
    let _ = Conn::from_bytes(bytes.to_vec()).read_getall(&mut FlatPage::default());
    let mut c = Conn::from_bytes(bytes.to_vec());
    if let Ok(n) = c.read_array_header() {
        for _ in 0..n.min(64) {
            match c.read_bulk_len() {
                Ok(Some(len)) => {
                    if c.bulk(len).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

fn encode(r: &Reply, out: &mut Vec<u8>) {
    match r {
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            items.iter().for_each(|i| encode(i, out));
        }
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Nil),
        any::<i64>().prop_map(Reply::Int),
        "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Status),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Bulk),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        proptest::collection::vec(inner, 0..8).prop_map(Reply::Array)
    })
}

const FIELDS: &[&str] = &[
    "redis_connection_mode",
    "redis_host_ip",
    "redis_host_port",
    "redis_password",
    "redis_db",
    "redis_conn_pool_size",
    "redis_wait_timeout",
    "storage_slice",
    "storage_slice_import",
    "keys_sending_size",
    "table_store_mode",
    "model_tag_runtime",
    "redis_hash_tags_runtime",
    "rde_value_storage",
    "rde_tls",
    "rde_tls_cert_file",
    "rde_max_retries",
    "rde_allow_eviction",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
    })
}

proptest! {
    #[test]
    fn arbitrary_reply_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes);
    }

    #[test]
    fn well_formed_replies_decode_to_what_was_sent(r in reply()) {
        let mut bytes = Vec::new();
        encode(&r, &mut bytes);
        let got = Conn::from_bytes(bytes.clone()).read_reply().unwrap();
        prop_assert_eq!(got, r);
        // Cut anywhere, the reply is an error (never a panic, never a wrong value).
        for cut in 0..bytes.len() {
            prop_assert!(Conn::from_bytes(bytes[..cut].to_vec()).read_reply().is_err());
        }
    }

    #[test]
    fn arbitrary_config_text_never_panics(text in ".{0,200}") {
        if let Err(e) = Config::from_json(&text) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn mistyped_config_fields_are_named(field in proptest::sample::select(FIELDS), v in json_value()) {
        let text = serde_json::json!({ field: v }).to_string();
        if let Err(e) = Config::from_json(&text) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            prop_assert!(e.message().contains(field) || e.message().contains("rde_tls"), "{}", e);
        }
    }

    #[test]
    fn stored_string_rows_decode_or_fail_cleanly(
        stored in proptest::collection::vec(any::<u8>(), 0..128),
        dim in 0usize..8,
    ) {
        let (mut d, mut o) = (Vec::new(), vec![0u64]);
        if decode_str_row(&stored, dim, &mut d, &mut o).is_ok() {
            prop_assert_eq!(o.len(), dim + 1);
        }
    }

    #[test]
    fn string_rows_round_trip(elems in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6)) {
        let mut data = Vec::new();
        let mut offsets = vec![0u64];
        for e in &elems {
            data.extend_from_slice(e);
            offsets.push(data.len() as u64);
        }
        let rows = Rows::Str { data: &data, offsets: &offsets, dim: elems.len() };
        let mut enc = Vec::new();
        rows.encode(0, &mut enc);
        prop_assert_eq!(enc.len(), rows.encoded_len(0));
        let (mut d, mut o) = (Vec::new(), vec![0u64]);
        decode_str_row(&enc, elems.len(), &mut d, &mut o).unwrap();
        prop_assert_eq!(d, data);
        prop_assert_eq!(o, offsets);
    }

    #[test]
    fn key_buffers_are_checked(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        offsets in proptest::collection::vec(0u64..80, 0..8),
    ) {
        for kt in [KeyType::I32, KeyType::I64, KeyType::Str] {
            if let Ok(k) = Keys::new(kt, &data, &offsets) {
                let total: usize = (0..k.len()).map(|i| k.get(i).len()).sum();
                prop_assert_eq!(total, data.len());
            }
        }
    }
}

#[test]
fn reply_corpus() {
    for (path, bytes) in corpus("resp") {
        decode_all(&bytes);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let r = Conn::from_bytes(bytes).read_reply();
        match name.as_str() {
            "mixed_array.resp" => assert!(r.is_ok(), "{name}: {r:?}"),
            "noperm.resp" => assert_eq!(r.unwrap_err().kind(), ErrorKind::PermissionDenied),
            "moved.resp" => assert_eq!(
                r.unwrap_err().server(),
                Some(&ServerError::Moved {
                    slot: 3999,
                    addr: "127.0.0.1:7001".into()
                })
            ),
            n if n.starts_with("scan_page") => {}
            _ => assert!(r.is_err(), "{name} should not decode: {r:?}"),
        }
    }
}

#[test]
fn config_corpus() {
    for (path, bytes) in corpus("config") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let r = Config::from_json(&String::from_utf8_lossy(&bytes));
        match name.as_str() {
            "valid.json" => assert!(r.is_ok(), "{name}: {r:?}"),
            _ => {
                let e = r.expect_err(&name);
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name}: {e}");
                assert!(
                    !e.message().contains("12345"),
                    "{name} echoes a password: {e}"
                );
            }
        }
    }
}
