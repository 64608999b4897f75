//! Consistency checks over every stored row: row and key sizes, rows in the wrong bucket,
//! buckets outside the table's layout, keys of the wrong type, and TTLs that would drop rows.

use rustc_hash::FxHashMap;

use super::catalog::{split_bucket, Filter, TableInfo};
use super::{Admin, Report};
use crate::cluster::layout::{self, display_bytes};
use crate::cluster::scan::{self, HashRead};
use crate::codec::KeyType;
use crate::error::Result;
use crate::resp::conn::{FlatPage, Reply};

/// Detailed findings kept per table and kind; the rest are only counted.
const KEEP_PER_KIND: usize = 20;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// A row whose value size differs from the table's.
    RowSize,
    /// A key whose size differs from the table's numeric key size.
    KeySize,
    /// A row stored in a bucket its key does not map to.
    WrongBucket,
    /// A bucket that the table's layout record does not list (left by another layout).
    MixedLayout,
    /// A key named like one of the table's buckets that is not a hash.
    NotAHash,
    /// A TTL that will drop rows, or TTLs that differ between buckets.
    Ttl,
}

impl FindingKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::RowSize => "row-size",
            FindingKind::KeySize => "key-size",
            FindingKind::WrongBucket => "wrong-bucket",
            FindingKind::MixedLayout => "mixed-layout",
            FindingKind::NotAHash => "not-a-hash",
            FindingKind::Ttl => "ttl",
        }
    }
}

/// One problem, naming where it is.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// `model_tag:name`.
    pub table: String,
    /// The bucket (or key) it is in.
    pub bucket: String,
    /// The master holding it.
    pub server: String,
    /// What was found, naming the row's key where there is one.
    pub detail: String,
}

/// The outcome of [`Admin::check`].
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Tables checked.
    pub tables: usize,
    /// Rows read.
    pub rows: u64,
    /// Findings, at most [`KEEP_PER_KIND`] per table and kind.
    pub findings: Vec<Finding>,
    /// Findings counted but not listed.
    pub more: u64,
}

/// Per-table state while its rows are read.
struct Tally<'a> {
    table: &'a TableInfo,
    row_bytes: usize,
    key_bytes: Option<usize>,
    /// Appended to key findings when the key type was guessed from the sample.
    hint: &'static str,
    kept: FxHashMap<FindingKind, usize>,
}

impl Tally<'_> {
    fn note(
        &mut self,
        out: &mut CheckReport,
        kind: FindingKind,
        bucket: &[u8],
        server: &str,
        detail: String,
    ) {
        let kept = self.kept.entry(kind).or_default();
        if *kept < KEEP_PER_KIND {
            *kept += 1;
            out.findings.push(Finding {
                kind,
                table: self.table.full_name(),
                bucket: display_bytes(bucket),
                server: server.to_owned(),
                detail,
            });
        } else {
            out.more += 1;
        }
    }
}

impl Admin {
    /// Reads every row of `filter`'s tables and reports what is inconsistent. `row_bytes`
    /// is the expected stored row size and `key_type` the keys' dtype; without them, each
    /// table's sampled sizes are used (keys all of 4 or 8 bytes taken as numeric).
    pub fn check(
        &self,
        filter: &Filter,
        row_bytes: Option<usize>,
        key_type: Option<KeyType>,
        report: &dyn Report,
    ) -> Result<CheckReport> {
        let tables = self.tables(filter)?;
        let mut out = CheckReport {
            tables: tables.len(),
            ..CheckReport::default()
        };
        self.foreign_keys(filter, &tables, &mut out)?;
        let total = tables.iter().map(TableInfo::rows).sum();
        report.begin("checking rows", Some(total));
        for t in &tables {
            let mut tally = Tally {
                table: t,
                row_bytes: row_bytes.or(t.row_bytes).unwrap_or(0),
                key_bytes: match key_type {
                    Some(kt) => kt.width(),
                    None => t.key_bytes.filter(|&k| k == 4 || k == 8),
                },
                hint: match key_type {
                    Some(_) => "",
                    None => " (string keys? pass --key-dtype string)",
                },
                kept: FxHashMap::default(),
            };
            self.check_ttl(&mut tally, &mut out);
            for i in 0..t.buckets.len() {
                self.check_bucket(&mut tally, i, &mut out, report)?;
            }
        }
        report.finish();
        Ok(out)
    }

    /// Non-hash keys named like a selected table's buckets.
    fn foreign_keys(
        &self,
        filter: &Filter,
        tables: &[TableInfo],
        out: &mut CheckReport,
    ) -> Result<()> {
        // The tables' buckets are hashes (the catalog found them by type): only other keys
        // named like a bucket need a TYPE, asked in one pipeline per server.
        let known: rustc_hash::FxHashSet<&[u8]> = tables
            .iter()
            .flat_map(|t| t.buckets.iter().map(|b| b.key.as_slice()))
            .collect();
        for addr in self.servers() {
            let mut odd = Vec::new();
            self.scan_keys(&addr, b"*}", |keys| {
                for key in keys {
                    if !known.contains(key.as_slice())
                        && split_bucket(&key).is_some_and(|(p, _)| filter.select(p).is_some())
                    {
                        odd.push(key);
                    }
                }
                Ok(())
            })?;
            let cmds: Vec<Vec<&[u8]>> = odd.iter().map(|k| vec![b"TYPE".as_slice(), k]).collect();
            let types = self.pipeline(&addr, &cmds)?;
            for (key, reply) in odd.iter().zip(types) {
                let kind = match reply {
                    Reply::Status(s) => s,
                    other => format!("{other:?}"),
                };
                if kind == "hash" {
                    continue;
                }
                let (prefix, _) = split_bucket(key).unwrap_or((key, &[]));
                let table = tables.iter().find(|t| t.prefix == prefix);
                let named = filter.select(prefix).map(|(t, n)| format!("{t}:{n}"));
                out.findings.push(Finding {
                    kind: FindingKind::NotAHash,
                    table: table.map_or_else(|| named.unwrap_or_default(), TableInfo::full_name),
                    bucket: display_bytes(key),
                    server: addr.clone(),
                    detail: format!("{} is a {kind}, not a bucket hash", display_bytes(key)),
                });
            }
        }
        Ok(())
    }

    fn check_ttl(&self, tally: &mut Tally<'_>, out: &mut CheckReport) {
        let t = tally.table;
        let with: Vec<_> = t.buckets.iter().filter(|b| b.ttl_ms.is_some()).collect();
        if with.is_empty() {
            return;
        }
        let configured = self.config().expire_model_tag_in_seconds;
        for b in &with {
            let secs = b.ttl_ms.unwrap_or(0) / 1000;
            let detail = if configured <= 0 {
                format!(
                    "expires in {secs} s, although this config sets no TTL \
                     (expire_model_tag_in_seconds {configured}): its rows will be lost"
                )
            } else if with.len() < t.buckets.len() {
                format!(
                    "expires in {secs} s while {} other bucket(s) of the table never expire",
                    t.buckets.len() - with.len()
                )
            } else {
                continue;
            };
            tally.note(out, FindingKind::Ttl, &b.key, &b.server, detail);
        }
    }

    /// Reads one bucket page by page and checks each row.
    fn check_bucket(
        &self,
        tally: &mut Tally<'_>,
        index: usize,
        out: &mut CheckReport,
        report: &dyn Report,
    ) -> Result<()> {
        let t = tally.table;
        let b = &t.buckets[index];
        let expected = self.bucket_index(t, &b.key);
        if t.recorded_tags.is_some() && expected.is_none() {
            let detail = format!(
                "bucket {} holds {} row(s) but the table's layout record does not list it \
                 (left by an earlier storage_slice or hash tags?)",
                display_bytes(&b.key),
                b.rows
            );
            tally.note(out, FindingKind::MixedLayout, &b.key, &b.server, detail);
        }
        let spread = t.recorded_tags.as_ref().filter(|_| t.spread);
        let mut cursor = b"0".to_vec();
        let mut page = FlatPage::default();
        loop {
            let what = HashRead::Page {
                cursor: &cursor,
                count: self.config().keys_sending_size.max(1),
            };
            let (items, next) = scan::read_page(self.router(), self.retry(), &b.key, what, page)?;
            let rows = items.len() / 2;
            for r in 0..rows {
                let (key, value) = (items.item(2 * r), items.item(2 * r + 1));
                self.check_row(tally, out, index, spread, key, value);
            }
            out.rows += rows as u64;
            report.advance(rows as u64);
            page = items;
            match next {
                Some(c) => cursor = c,
                None => return Ok(()),
            }
        }
    }

    fn check_row(
        &self,
        tally: &mut Tally<'_>,
        out: &mut CheckReport,
        index: usize,
        spread: Option<&Vec<String>>,
        key: &[u8],
        value: &[u8],
    ) {
        let b = &tally.table.buckets[index];
        let (bucket, server) = (b.key.clone(), b.server.clone());
        let numeric = tally.key_bytes.is_some();
        if tally.row_bytes > 0 && value.len() != tally.row_bytes {
            let detail = format!(
                "key {} has a {}-byte row, the table's rows are {} bytes",
                display_key(key, numeric),
                value.len(),
                tally.row_bytes
            );
            tally.note(out, FindingKind::RowSize, &bucket, &server, detail);
        }
        if let Some(k) = tally.key_bytes.filter(|&k| k != key.len()) {
            let detail = format!(
                "key {} is {} bytes, the table's keys are {k}{}",
                display_key(key, numeric),
                key.len(),
                tally.hint
            );
            tally.note(out, FindingKind::KeySize, &bucket, &server, detail);
            return;
        }
        let (Some(tags), Some(here)) = (spread, self.bucket_index(tally.table, &bucket)) else {
            return;
        };
        let hashed = self.config().using_hash_storage_slice;
        let want = layout::bucket_of(key, numeric, hashed, tags.len() as u32);
        if want != here {
            let detail = format!(
                "key {} belongs in bucket {} ({}), not {here}{}",
                display_key(key, numeric),
                want,
                tags[want],
                tally.hint
            );
            tally.note(out, FindingKind::WrongBucket, &bucket, &server, detail);
        }
    }

    /// The index of `bucket` in the table's layout record.
    fn bucket_index(&self, t: &TableInfo, bucket: &[u8]) -> Option<usize> {
        let (_, tag) = split_bucket(bucket)?;
        t.recorded_tags
            .as_ref()?
            .iter()
            .position(|r| r.as_bytes() == tag)
    }
}

/// A stored key for messages: numeric keys as numbers, others escaped.
fn display_key(key: &[u8], numeric: bool) -> String {
    match (numeric, key.len()) {
        (true, 8) => KeyType::I64.display(key),
        (true, 4) => KeyType::I32.display(key),
        _ => format!("\"{}\"", display_bytes(key)),
    }
}
