//! Operator commands behind the `redis-embedding` CLI (`src/bin/redis-embedding/`): listing
//! tables, server and table figures, moving tables between files and deployments, dropping and
//! checking them. Everything here works on the stored rows as bytes, so it needs no TensorFlow
//! and no knowledge of a table's dtypes beyond what it can read from Redis.
//!
//! Invariant: this layer reaches Redis only through `cluster` (the router's pools, the
//! executor, the page reader), like `table/`, and never writes a row itself: imports and copies
//! go through [`crate::Table`]'s ops, so bucket rules and layouts stay the table's.

mod catalog;
mod check;
mod copy;
mod drop;
mod export;
mod import;
mod report;
mod resume;
mod server;
mod shape;
mod stream;
mod verify;

use std::time::Duration;

use crate::cluster::dispatch::Retry;
use crate::cluster::layout_store;
use crate::cluster::route::{Access, Router};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::Reply;

pub use catalog::{BucketInfo, Filter, LayoutKind, TableInfo};
pub use check::{CheckReport, Finding, FindingKind};
pub use copy::CopyOptions;
pub use drop::DropPlan;
pub use export::{export_base, ExportOptions, EXPORT_STATE};
pub use import::{find_pairs, import, pair_shape, FilePair, ImportOptions};
pub use report::{Quiet, Report};
pub use server::{Replica, ServerStats};
pub use shape::{Shape, ShapeHint};
pub use stream::Moved;

/// A connection to one deployment (the config's standalone server, sentinel master or
/// cluster) for operator commands.
pub struct Admin {
    cfg: Config,
    router: Router,
    retry: Retry,
}

impl Admin {
    /// Connects to the deployment `cfg` describes (with the config's retries). A config for
    /// the memory backend is refused: its tables live inside a training process.
    pub fn open(cfg: Config) -> Result<Admin> {
        if cfg.rde_backend == crate::config::Backend::Memory {
            return Err(Error::invalid(
                "rde_backend is \"memory\": those tables live inside the training process, \
                 not in Redis; point --config at a Redis deployment",
            ));
        }
        let retry = Retry {
            attempts: cfg.rde_max_retries,
            backoff: Duration::from_millis(cfg.rde_retry_backoff_ms),
        };
        let router = Router::open(&cfg, retry)?;
        Ok(Admin { cfg, router, retry })
    }

    /// The config this admin connection was opened with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The masters holding data (`host:port`), in a stable order.
    pub fn servers(&self) -> Vec<String> {
        let mut m = self.router.masters();
        m.sort();
        m
    }

    /// Runs `cmds` as one pipeline on `addr` and returns the replies in order. An error reply
    /// fails the whole call, naming the server.
    pub(crate) fn pipeline(&self, addr: &str, cmds: &[Vec<&[u8]>]) -> Result<Vec<Reply>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        self.router
            .pool(addr)
            .with(|c| {
                for args in cmds {
                    c.cmd(args);
                }
                c.flush()?;
                cmds.iter().map(|_| c.read_reply()).collect()
            })
            .map_err(|e| at(addr, e))
    }

    /// One command on `addr`.
    pub(crate) fn on(&self, addr: &str, args: &[&[u8]]) -> Result<Reply> {
        Ok(self
            .pipeline(addr, &[args.to_vec()])?
            .pop()
            .unwrap_or(Reply::Nil))
    }

    /// One command on whichever server owns `key` (redirects and retries handled).
    pub(crate) fn keyed(&self, key: &[u8], access: Access, args: &[&[u8]]) -> Result<Reply> {
        layout_store::call(&self.router, self.retry, key, access, args)
    }

    /// Every key on `addr` matching `pattern` (SCAN, so the server never blocks), with `f`
    /// called per page.
    pub(crate) fn scan_keys(
        &self,
        addr: &str,
        pattern: &[u8],
        mut f: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self.on(
                addr,
                &[b"SCAN", &cursor, b"MATCH", pattern, b"COUNT", b"1000"],
            )?;
            let (next, keys) = scan_reply(addr, reply)?;
            f(keys)?;
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    pub(crate) fn retry(&self) -> Retry {
        self.retry
    }
}

/// Names the server in an error that does not already.
fn at(addr: &str, e: Error) -> Error {
    if e.message().contains(addr) {
        e
    } else {
        e.context(addr)
    }
}

/// `(cursor, keys)` from a SCAN reply.
fn scan_reply(addr: &str, reply: Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    if let Reply::Array(mut v) = reply {
        if v.len() == 2 {
            if let (Reply::Array(items), Reply::Bulk(cursor)) = (v.pop().unwrap(), v.pop().unwrap())
            {
                let keys = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Reply::Bulk(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                return Ok((cursor, keys));
            }
        }
    }
    Err(Error::new(
        ErrorKind::Server,
        format!("{addr}: SCAN replied with something other than [cursor, keys]"),
    ))
}

/// An integer reply (`default` for nil).
pub(crate) fn int(reply: &Reply, default: i64) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        Reply::Bulk(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
        _ => default,
    }
}
