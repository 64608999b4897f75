//! What tables a deployment holds: every hash whose key looks like a bucket
//! (`<prefix>{<tag>}`), grouped by prefix, with rows, sampled memory, TTL, the layout record
//! and a sample of the stored key and row sizes.

use std::collections::BTreeMap;

use super::{int, Admin, Report};
use crate::cluster::layout;
use crate::cluster::layout_store::{self, Rule};
use crate::cluster::route::Access;
use crate::config::ConnectionMode;
use crate::error::Result;
use crate::resp::conn::Reply;

/// Which tables a command looks at (all when both are `None`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this model tag.
    pub model_tag: Option<String>,
    /// Only tables of this embedding name.
    pub table: Option<String>,
}

impl Filter {
    pub(crate) fn keeps(&self, model_tag: &str, name: &str) -> bool {
        self.model_tag.as_deref().is_none_or(|t| t == model_tag)
            && self.table.as_deref().is_none_or(|n| n == name)
    }

    /// The (model tag, name) of the table with bucket prefix `prefix`, if it is one this
    /// filter selects. A 16-byte MD5 prefix (`using_md5_prefix_name`) is named by the
    /// filter's model tag and table when it is their digest, else `md5:<hex>`. A model tag may
    /// hold ':' and an embedding name never does (tables refuse such names), so the tag is all
    /// before the last ':' and `--model-tag a` never selects tag `a:b`'s tables.
    pub(crate) fn select(&self, prefix: &[u8]) -> Option<(String, String)> {
        let Some(t) = &self.model_tag else {
            let (tag, name) = names_of(prefix)?;
            return self.keeps(&tag, &name).then_some((tag, name));
        };
        if let Some(n) = self.table.as_ref() {
            if prefix.len() == 16 && layout::prefix(t, n, true) == prefix {
                return Some((t.clone(), n.clone()));
            }
        }
        let (tag, name) = names_of(prefix)?;
        (&tag == t && self.keeps(t, &name)).then_some((tag, name))
    }
}

/// How a table's rows are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Where TFRA puts them (bucket 0 outside a cluster, TFRA's rule in one).
    Tfra,
    /// Spread over `storage_slice` buckets outside a cluster (`rde_standalone_buckets`).
    Spread,
    /// One row per key holding the parameters and every optimizer slot (the Keras layer's
    /// `layout="fused"`).
    Fused,
}

impl LayoutKind {
    /// The name used in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            LayoutKind::Tfra => "tfra",
            LayoutKind::Spread => "spread",
            LayoutKind::Fused => "fused",
        }
    }
}

/// One bucket hash.
#[derive(Debug, Clone)]
pub struct BucketInfo {
    /// Its Redis key.
    pub key: Vec<u8>,
    /// The master holding it.
    pub server: String,
    /// Rows (HLEN).
    pub rows: u64,
    /// Memory, from a sampled `MEMORY USAGE`.
    pub bytes: u64,
    /// Remaining time to live in ms, `None` without a TTL.
    pub ttl_ms: Option<i64>,
}

/// One table: every bucket with its prefix.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The model tag (`""` when the prefix is an MD5 digest).
    pub model_tag: String,
    /// The embedding name (`md5:<hex>` for a digest prefix).
    pub name: String,
    /// The bucket key prefix.
    pub prefix: Vec<u8>,
    /// Its layout.
    pub layout: LayoutKind,
    /// The hash tags of the layout record (`None` without one: TFRA wrote the table).
    pub recorded_tags: Option<Vec<String>>,
    /// Whether the layout record spreads keys over the buckets by TFRA's bucket rule (always
    /// so in a cluster; `rde_standalone_buckets` outside one).
    pub spread: bool,
    /// Its buckets, by key.
    pub buckets: Vec<BucketInfo>,
    /// The stored key size if every sampled key had it (8 for int64 keys).
    pub key_bytes: Option<usize>,
    /// The stored row size if nearly every sampled row had it (4 × dim for float32).
    pub row_bytes: Option<usize>,
}

impl TableInfo {
    /// Rows over all buckets.
    pub fn rows(&self) -> u64 {
        self.buckets.iter().map(|b| b.rows).sum()
    }

    /// Sampled memory over all buckets.
    pub fn bytes(&self) -> u64 {
        self.buckets.iter().map(|b| b.bytes).sum()
    }

    /// The smallest TTL of its buckets, `None` if none has one.
    pub fn ttl_ms(&self) -> Option<i64> {
        self.buckets.iter().filter_map(|b| b.ttl_ms).min()
    }

    /// `model_tag:name` as users write it.
    pub fn full_name(&self) -> String {
        if self.model_tag.is_empty() {
            self.name.clone()
        } else {
            format!("{}:{}", self.model_tag, self.name)
        }
    }
}

/// The commands reading a bucket's rows, memory and TTL.
fn figures_of(key: &[u8]) -> [Vec<&[u8]>; 3] {
    [
        vec![b"HLEN".as_slice(), key],
        vec![b"MEMORY", b"USAGE", key, b"SAMPLES", b"5"],
        vec![b"PTTL", key],
    ]
}

/// Splits a bucket key into its prefix and `{tag}`.
pub(crate) fn split_bucket(key: &[u8]) -> Option<(&[u8], &[u8])> {
    if key.last() != Some(&b'}') {
        return None;
    }
    let open = key.iter().rposition(|&b| b == b'{')?;
    (open > 0 && open + 2 < key.len()).then(|| key.split_at(open))
}

/// (model tag, embedding name) of a prefix: `<tag>:<name>`, or a 16-byte MD5 digest named
/// `md5:<hex>` with no tag. Anything else is no table's.
fn names_of(prefix: &[u8]) -> Option<(String, String)> {
    match std::str::from_utf8(prefix)
        .ok()
        .and_then(|p| p.rsplit_once(':'))
    {
        Some((tag, name)) => Some((tag.to_owned(), name.to_owned())),
        None if prefix.len() == 16 => {
            let hex: String = prefix.iter().map(|b| format!("{b:02x}")).collect();
            Some((String::new(), format!("md5:{hex}")))
        }
        None => None,
    }
}

/// Keys per pipeline when the buckets' figures are read.
const DESCRIBE_BATCH: usize = 512;

impl Admin {
    /// The tables `filter` selects, sorted by model tag and name.
    pub fn tables(&self, filter: &Filter) -> Result<Vec<TableInfo>> {
        self.tables_reporting(filter, &super::Quiet)
    }

    /// [`Admin::tables`], reporting the key scan and the bucket reads to `report`.
    pub fn tables_reporting(&self, filter: &Filter, report: &dyn Report) -> Result<Vec<TableInfo>> {
        // Keyed by bucket: a bucket migrating between masters during the scan is listed once.
        let mut found: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        report.begin("scanning keys", None);
        for addr in self.servers() {
            self.scan_hashes(&addr, report, |key| {
                if split_bucket(&key).is_some_and(|(p, _)| filter.select(p).is_some()) {
                    found.insert(key, addr.clone());
                }
            })?;
        }
        report.finish();
        let buckets = self.describe_buckets(found, report)?;
        let mut by_prefix: BTreeMap<Vec<u8>, Vec<BucketInfo>> = BTreeMap::new();
        for b in buckets {
            if let Some((prefix, _)) = split_bucket(&b.key) {
                by_prefix.entry(prefix.to_vec()).or_default().push(b);
            }
        }
        let mut out = Vec::with_capacity(by_prefix.len());
        for (prefix, buckets) in by_prefix {
            if let Some(names) = filter.select(&prefix) {
                out.push(self.describe(prefix, names, buckets)?);
            }
        }
        out.sort_by(|a, b| (&a.model_tag, &a.name).cmp(&(&b.model_tag, &b.name)));
        Ok(out)
    }

    /// Every hash key on `addr` that ends in `}`.
    fn scan_hashes(
        &self,
        addr: &str,
        report: &dyn Report,
        mut f: impl FnMut(Vec<u8>),
    ) -> Result<()> {
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self.on(
                addr,
                &[
                    b"SCAN", &cursor, b"MATCH", b"*}", b"COUNT", b"1000", b"TYPE", b"hash",
                ],
            )?;
            let (next, keys) = super::scan_reply(addr, reply)?;
            report.advance(keys.len() as u64);
            keys.into_iter().for_each(&mut f);
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Rows, memory and TTL of each bucket: one pipeline per server and batch; a batch that
    /// fails there (the bucket moved away during a resharding, the server went) is read again
    /// bucket by bucket through the router, which follows redirects and retries.
    fn describe_buckets(
        &self,
        found: BTreeMap<Vec<u8>, String>,
        report: &dyn Report,
    ) -> Result<Vec<BucketInfo>> {
        report.begin("reading buckets", Some(found.len() as u64));
        let mut per_server: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (key, addr) in found {
            per_server.entry(addr).or_default().push(key);
        }
        let mut out = Vec::new();
        for (addr, keys) in per_server {
            for batch in keys.chunks(DESCRIBE_BATCH) {
                let cmds: Vec<Vec<&[u8]>> = batch.iter().flat_map(|k| figures_of(k)).collect();
                let replies = match self.pipeline(&addr, &cmds) {
                    Ok(r) => r,
                    Err(e) => {
                        log::debug!("{addr}: bucket figures read one by one: {e}");
                        let mut r = Vec::with_capacity(cmds.len());
                        for key in batch {
                            for c in figures_of(key) {
                                r.push(self.keyed(key, Access::Read, &c)?);
                            }
                        }
                        r
                    }
                };
                for (key, r) in batch.iter().zip(replies.chunks(3)) {
                    let ttl = int(&r[2], -1);
                    out.push(BucketInfo {
                        rows: int(&r[0], 0).max(0) as u64,
                        bytes: int(&r[1], 0).max(0) as u64,
                        ttl_ms: (ttl >= 0).then_some(ttl),
                        server: addr.clone(),
                        key: key.clone(),
                    });
                }
                report.advance(batch.len() as u64);
            }
        }
        report.finish();
        Ok(out)
    }

    fn describe(
        &self,
        prefix: Vec<u8>,
        (model_tag, name): (String, String),
        buckets: Vec<BucketInfo>,
    ) -> Result<TableInfo> {
        let recorded = layout_store::load(self.router(), self.retry(), &prefix)?;
        let spread = recorded.as_ref().is_some_and(|l| l.rule == Rule::Spread);
        let layout = if name.ends_with("-fused") {
            LayoutKind::Fused
        } else if spread && self.config().redis_connection_mode != ConnectionMode::Cluster {
            LayoutKind::Spread
        } else {
            LayoutKind::Tfra
        };
        let (key_bytes, row_bytes) = self.sample_sizes(&buckets)?;
        Ok(TableInfo {
            model_tag,
            name,
            prefix,
            layout,
            recorded_tags: recorded.map(|l| l.tags),
            spread,
            buckets,
            key_bytes,
            row_bytes,
        })
    }

    /// Key and row sizes of up to a page of rows from the first non-empty bucket: the key
    /// size `None` if the sample disagrees, the row size if it disagrees beyond [`usual`].
    fn sample_sizes(&self, buckets: &[BucketInfo]) -> Result<(Option<usize>, Option<usize>)> {
        let Some(b) = buckets.iter().find(|b| b.rows > 0) else {
            return Ok((None, None));
        };
        let reply = self.on(&b.server, &[b"HSCAN", &b.key, b"0", b"COUNT", b"16"])?;
        let items = match reply {
            Reply::Array(mut v) if v.len() == 2 => match v.pop() {
                Some(Reply::Array(items)) => items,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let len = |r: &Reply| match r {
            Reply::Bulk(b) => b.len(),
            _ => usize::MAX,
        };
        let keys = same(items.iter().step_by(2).map(len));
        let rows = usual(items.iter().skip(1).step_by(2).map(len));
        Ok((keys, rows))
    }
}

/// The one value every item has, `None` if they differ or there are none.
fn same(mut it: impl Iterator<Item = usize>) -> Option<usize> {
    let first = it.next()?;
    it.all(|l| l == first).then_some(first)
}

/// The value nearly every item has: all but at most a tenth (and at least one fewer than
/// have it), so a bad row in the sample does not hide the table's row size from `check`.
fn usual(it: impl Iterator<Item = usize>) -> Option<usize> {
    let mut counts = BTreeMap::<usize, usize>::new();
    it.for_each(|l| *counts.entry(l).or_default() += 1);
    let n: usize = counts.values().sum();
    let (&value, &most) = counts.iter().max_by_key(|(_, &c)| c)?;
    let others = n - most;
    (others < most && others <= (n / 10).max(1)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keys_split_into_prefix_and_tag() {
        assert_eq!(
            split_bucket(b"m:emb{3560}"),
            Some((b"m:emb".as_slice(), b"{3560}".as_slice()))
        );
        assert_eq!(split_bucket(b"m:emb"), None);
        assert_eq!(split_bucket(b"{3560}"), None);
        assert_eq!(split_bucket(b"m:emb{}"), None);
        assert_eq!(names_of(b"m:a:b"), Some(("m:a".into(), "b".into())));
        assert_eq!(names_of(b"session"), None, "not a table's");
        let digest = layout::prefix("m", "emb", true);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(names_of(&digest), Some(("".into(), format!("md5:{hex}"))));
        let named = Filter {
            model_tag: Some("m".into()),
            table: Some("emb".into()),
        };
        assert_eq!(named.select(&digest), Some(("m".into(), "emb".into())));
        assert_eq!(named.select(b"m:other"), None);
        assert_eq!(Filter::default().select(&digest).unwrap().0, "");
        assert_eq!(usual([16, 16, 12].into_iter()), Some(16));
        assert_eq!(usual([16, 12].into_iter()), None);
        assert_eq!(usual([16; 18].into_iter().chain([12, 8])), Some(16));
        assert_eq!(usual([16; 17].into_iter().chain([12, 8, 4])), None);
        let tag = |t: &str| Filter {
            model_tag: Some(t.into()),
            table: None,
        };
        assert_eq!(
            tag("a:b").select(b"a:b:emb"),
            Some(("a:b".into(), "emb".into()))
        );
        assert_eq!(tag("a:b").select(b"a:bc:emb"), None);
        assert_eq!(tag("a").select(b"a:b:emb"), None, "tag a:b is not tag a");
        assert_eq!(tag("a").select(b"a:emb"), Some(("a".into(), "emb".into())));
        assert_eq!(
            Filter::default().select(b"a:b:emb"),
            Some(("a:b".into(), "emb".into()))
        );
        assert_eq!(tag("a").select(b"ab:emb"), None);
    }
}
