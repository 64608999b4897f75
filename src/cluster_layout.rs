//! Stable bucket names in cluster mode. TFRA derives a table's hash tags from the masters'
//! first slots at the time the table is opened, so adding a master or resharding renames the
//! buckets and orphans the data. We derive the tags the same way the first time (so data
//! written by TFRA on the same topology is found), then persist them in a layout record and
//! reuse them on every later open, whatever the topology has become.

use std::sync::Mutex;

use crate::config::Config;
use crate::conn::Reply;
use crate::dispatch::{self, Retry};
use crate::error::{Error, Result};
use crate::layout::{self, Buckets};
use crate::plan::Chunk;
use crate::route::{Access, Router};

const MAGIC: &str = "rde-layout v1";

/// The key holding the layout of the table whose bucket prefix is `prefix`. It does not
/// start with the prefix, so TFRA's prefix scans never see it.
pub fn record_key(prefix: &[u8]) -> Vec<u8> {
    let hex: String = prefix.iter().map(|b| format!("{b:02x}")).collect();
    format!("rde-layout:{hex}").into_bytes()
}

fn encode(tags: &[String]) -> String {
    let mut s = format!("{MAGIC}\n{}", tags.len());
    for t in tags {
        s.push('\n');
        s.push_str(t);
    }
    s
}

fn decode(record: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(record).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != MAGIC {
        return None;
    }
    let n: usize = lines.next()?.parse().ok()?;
    let tags: Vec<String> = lines.map(str::to_owned).collect();
    (tags.len() == n).then_some(tags)
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
    dispatch::run(
        router,
        &[Chunk {
            bucket: 0,
            start: 0,
            end: 0,
        }],
        |_| slot,
        access,
        true,
        retry,
        |c, _| c.cmd(args),
        |c, _| {
            *reply.lock().unwrap() = Some(c.read_reply()?);
            Ok(())
        },
    )?;
    Ok(reply.into_inner().unwrap().unwrap_or(Reply::Nil))
}

/// The runtime buckets of `name` in a cluster: explicit or hypodispersed tags as configured,
/// else the persisted layout, else TFRA's topology-derived tags (then persisted).
pub fn runtime_buckets(cfg: &Config, name: &str, router: &Router, retry: Retry) -> Result<Buckets> {
    let prefix = layout::prefix(&cfg.model_tag_runtime, name, cfg.using_md5_prefix_name);
    let s = cfg.storage_slice;
    if cfg.redis_hash_tags_runtime.len() == s as usize || cfg.redis_hash_tags_hypodispersion {
        return Ok(Buckets::new(
            &prefix,
            &layout::hash_tags(s, &cfg.redis_hash_tags_runtime),
        ));
    }
    let key = record_key(&prefix);
    let stored = |reply: Reply| -> Result<Option<Vec<String>>> {
        match reply {
            Reply::Nil => Ok(None),
            Reply::Bulk(b) => decode(&b).map(Some).ok_or_else(|| {
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
    };
    let tags = match stored(call(router, retry, &key, Access::Write, &[b"GET", &key])?)? {
        Some(tags) => tags,
        None => {
            let fresh = layout::topology_tags(&router.cluster_nodes()?, s);
            // Several workers may open the table at once: the first record written wins.
            call(
                router,
                retry,
                &key,
                Access::Write,
                &[b"SET", &key, encode(&fresh).as_bytes(), b"NX"],
            )?;
            stored(call(router, retry, &key, Access::Write, &[b"GET", &key])?)?.unwrap_or(fresh)
        }
    };
    if tags.len() != s as usize {
        return Err(Error::invalid(format!(
            "table {name:?} was laid out with storage_slice = {} (record {}), but the config says {s}; changing storage_slice needs a rehash, which this version does not do",
            tags.len(),
            String::from_utf8_lossy(&key)
        )));
    }
    Ok(Buckets::new(&prefix, &tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let tags = vec!["{3560}".to_string(), "{8209}".to_string()];
        assert_eq!(decode(encode(&tags).as_bytes()), Some(tags));
        assert_eq!(decode(b"rde-layout v1\n3\n{1}"), None);
        assert_eq!(decode(b"something else"), None);
        assert_eq!(record_key(b"t:e"), b"rde-layout:743a65");
    }
}
