//! Which buckets a table uses, and where its rows are now. A small layout record per table
//! (`rde-layout:<hex prefix>`) remembers the bucket names and the key→bucket rule the data
//! was written with. That keeps cluster bucket names stable when masters are added (TFRA
//! recomputes them from the topology and orphans the data), and tells when a change of
//! `storage_slice`, tags or rule needs a rehash. Without a record the data is assumed to be in
//! TFRA's layout for `storage_slice_import`.

use std::sync::Mutex;

use crate::cluster::dispatch::{self, Commands, Retry};
use crate::cluster::layout::{self, Buckets};
use crate::cluster::route::{Access, Router};
use crate::config::{Config, ConnectionMode};
use crate::error::{Error, Result};
use crate::plan::Chunk;
use crate::resp::conn::Reply;
use crate::sync;

const MAGIC: &str = "rde-layout v1";

/// How keys map to buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every key in bucket 0 (TFRA's standalone and sentinel modes).
    First,
    /// TFRA's bucket-of-key rule over all buckets (cluster mode, or opted in).
    Spread,
}

/// Bucket names plus the rule that assigns keys to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The key→bucket rule.
    pub rule: Rule,
    /// The bucket keys.
    pub buckets: Buckets,
    /// Their hash tags (with braces), as stored in the record.
    pub tags: Vec<String>,
}

impl Layout {
    fn new(prefix: &[u8], rule: Rule, tags: Vec<String>) -> Layout {
        Layout {
            rule,
            buckets: Buckets::new(prefix, &tags),
            tags,
        }
    }

    /// The bucket index of `key`.
    pub fn bucket_of(&self, key: &[u8], numeric: bool, hashed: bool) -> usize {
        match self.rule {
            Rule::First => 0,
            Rule::Spread => layout::bucket_of(key, numeric, hashed, self.buckets.len() as u32),
        }
    }
}

/// The record key of the table whose bucket prefix is `prefix`. It does not start with the
/// prefix, so TFRA's prefix scans never see it.
pub fn record_key(prefix: &[u8]) -> Vec<u8> {
    let hex: String = prefix.iter().map(|b| format!("{b:02x}")).collect();
    format!("rde-layout:{hex}").into_bytes()
}

fn encode(l: &Layout) -> String {
    let rule = match l.rule {
        Rule::First => "first",
        Rule::Spread => "spread",
    };
    let mut s = format!("{MAGIC}\nrule={rule}\n{}", l.tags.len());
    for t in &l.tags {
        s.push('\n');
        s.push_str(t);
    }
    s
}

fn decode(prefix: &[u8], record: &[u8]) -> Option<Layout> {
    let text = std::str::from_utf8(record).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != MAGIC {
        return None;
    }
    let rule = match lines.next()? {
        "rule=first" => Rule::First,
        "rule=spread" => Rule::Spread,
        _ => return None,
    };
    let n: usize = lines.next()?.parse().ok()?;
    let tags: Vec<String> = lines.map(str::to_owned).collect();
    (tags.len() == n && n > 0).then(|| Layout::new(prefix, rule, tags))
}

/// Runs one command on the node owning `key`, with redirects and retries handled.
pub fn call(
    router: &Router,
    retry: Retry,
    key: &[u8],
    access: Access,
    args: &[&[u8]],
) -> Result<Reply> {
    let reply = Mutex::new(None);
    let slot = layout::key_slot(key);
    let chunk = Chunk {
        bucket: 0,
        start: 0,
        end: 0,
    };
    let req = Commands::idempotent(
        access,
        |c, _| c.cmd(args),
        |c, _| {
            *sync::lock(&reply) = Some(c.read_reply()?);
            Ok(())
        },
    );
    dispatch::run(router, retry, &[chunk], |_| slot, &req)?;
    Ok(sync::into_inner(reply).unwrap_or(Reply::Nil))
}

/// The layout stored for `prefix`, if any.
pub fn load(router: &Router, retry: Retry, prefix: &[u8]) -> Result<Option<Layout>> {
    let key = record_key(prefix);
    match call(router, retry, &key, Access::Write, &[b"GET", &key])? {
        Reply::Nil => Ok(None),
        Reply::Bulk(b) => decode(prefix, &b).map(Some).ok_or_else(|| {
            Error::data(format!(
                "layout record {} is malformed",
                String::from_utf8_lossy(&key)
            ))
        }),
        other => Err(Error::data(format!(
            "layout record {} holds {other:?}",
            String::from_utf8_lossy(&key)
        ))),
    }
}

/// Stores `layout` as the record for `prefix`.
pub fn save(router: &Router, retry: Retry, prefix: &[u8], layout: &Layout) -> Result<()> {
    let key = record_key(prefix);
    call(
        router,
        retry,
        &key,
        Access::Write,
        &[b"SET", &key, encode(layout).as_bytes()],
    )?;
    Ok(())
}

fn rule_for(cfg: &Config) -> Rule {
    if cfg.redis_connection_mode == ConnectionMode::Cluster || cfg.rde_standalone_buckets {
        Rule::Spread
    } else {
        Rule::First
    }
}

/// TFRA's tags for `slices` buckets: explicit ones if there are exactly `slices`, else from
/// the cluster topology (cluster without hypodispersion), else evenly spread.
fn tfra_tags(
    cfg: &Config,
    router: &Router,
    slices: u32,
    explicit: &[String],
) -> Result<Vec<String>> {
    if explicit.len() == slices as usize
        || cfg.redis_connection_mode != ConnectionMode::Cluster
        || cfg.redis_hash_tags_hypodispersion
    {
        return Ok(layout::hash_tags(slices, explicit));
    }
    Ok(layout::topology_tags(&router.cluster_nodes()?, slices))
}

/// Where TFRA would have put the rows of `prefix` for `slices` buckets.
pub fn tfra_layout(
    cfg: &Config,
    router: &Router,
    prefix: &[u8],
    slices: u32,
    explicit: &[String],
) -> Result<Layout> {
    let rule = if cfg.redis_connection_mode == ConnectionMode::Cluster {
        Rule::Spread
    } else {
        Rule::First
    };
    Ok(Layout::new(
        prefix,
        rule,
        tfra_tags(cfg, router, slices, explicit)?,
    ))
}

/// What `open` found: the layout to run with, the layout the data is in now (if it differs),
/// and the record (if any).
pub struct Resolved {
    /// The layout the table will use.
    pub target: Layout,
    /// Where the rows are now, when that is not `target`: a rehash is due.
    pub source: Option<Layout>,
    /// The stored record already says `target` (nothing to write: read-only users can open).
    pub recorded: bool,
}

/// Decides the runtime layout of `name` and whether its data must be rehashed into it.
pub fn resolve(cfg: &Config, name: &str, router: &Router, retry: Retry) -> Result<Resolved> {
    let prefix = layout::prefix(&cfg.model_tag_runtime, name, cfg.using_md5_prefix_name);
    let rule = rule_for(cfg);
    let record = load(router, retry, &prefix)?;
    let s = cfg.storage_slice;
    let explicit = &cfg.redis_hash_tags_runtime;
    // A recorded cluster layout with the same bucket count keeps its names across topology
    // changes; anything else is derived as TFRA would.
    let tags = match &record {
        Some(r)
            if r.tags.len() == s as usize
                && explicit.len() != s as usize
                && cfg.redis_connection_mode == ConnectionMode::Cluster
                && !cfg.redis_hash_tags_hypodispersion =>
        {
            r.tags.clone()
        }
        _ => tfra_tags(cfg, router, s, explicit)?,
    };
    let target = Layout::new(&prefix, rule, tags);
    let recorded = record.as_ref() == Some(&target);
    let source = match record {
        Some(r) => (r != target).then_some(r),
        None => {
            // No record: the rows (if any) are where TFRA put them for storage_slice_import.
            let si = cfg.storage_slice_import;
            let old = tfra_layout(cfg, router, &prefix, si, &cfg.redis_hash_tags_import)?;
            (old != target).then_some(old)
        }
    };
    Ok(Resolved {
        target,
        source,
        recorded,
    })
}

/// The layout of the model version `model_tag_import` of `embedding_name`: its stored record,
/// else TFRA's layout from the `*_import` fields.
pub fn import_layout(
    cfg: &Config,
    embedding_name: &str,
    router: &Router,
    retry: Retry,
) -> Result<Layout> {
    let prefix = layout::prefix(
        &cfg.model_tag_import,
        embedding_name,
        cfg.using_md5_prefix_name,
    );
    match load(router, retry, &prefix)? {
        Some(l) => Ok(l),
        None => tfra_layout(
            cfg,
            router,
            &prefix,
            cfg.storage_slice_import,
            &cfg.redis_hash_tags_import,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let l = Layout::new(b"t:e", Rule::Spread, vec!["{3560}".into(), "{8209}".into()]);
        assert_eq!(decode(b"t:e", encode(&l).as_bytes()), Some(l));
        assert_eq!(decode(b"t:e", b"rde-layout v1\nrule=first\n3\n{1}"), None);
        assert_eq!(decode(b"t:e", b"something else"), None);
        assert_eq!(record_key(b"t:e"), b"rde-layout:743a65");
    }
}
