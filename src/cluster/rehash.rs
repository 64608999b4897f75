//! Moving rows between layouts: the rehash after `storage_slice`, tags or the bucket rule
//! change, and the copy of a model version to a new model tag.
//!
//! Rows are streamed one HSCAN page at a time (bounded memory). A rehash first copies every row
//! to its new bucket, then scans again and deletes a row from its old bucket only once the new
//! bucket holds it. Both passes are idempotent, so a run that dies at any point is finished by
//! the next open. Progress (rows done of total, rate) goes to the log.

use rustc_hash::FxHashMap;

use crate::cluster::dispatch::Retry;
use crate::cluster::layout::display_bytes;
use crate::cluster::layout_store::{call, Layout};
use crate::cluster::route::{Access, Router};
use crate::cluster::scan::{self, HashRead};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::resp::conn::{FlatPage, Reply};

/// A (field, value) pair borrowed from a scanned page.
type Row<'a> = (&'a [u8], &'a [u8]);

/// The (field, value) pairs of a page.
fn pairs(items: &FlatPage) -> impl Iterator<Item = Row<'_>> {
    (0..items.len())
        .step_by(2)
        .map(|i| (items.item(i), items.item(i + 1)))
}

/// What the migration needs to know about the table.
pub struct Mover<'a> {
    /// The router of the table.
    pub router: &'a Router,
    /// Retry policy for each command.
    pub retry: Retry,
    /// Rows per HSCAN page and per write command.
    pub batch: usize,
    /// Whether keys are numbers (for the bucket rule).
    pub numeric: bool,
    /// `using_hash_storage_slice`.
    pub hashed: bool,
    /// Table name, for progress lines.
    pub name: &'a str,
}

/// Test-only failpoint (feature `failpoints`): `RDE_FAILPOINT_MIGRATE_ABORT_AFTER=<rows>`
/// makes a migration fail after copying that many rows, as if the process had died there.
#[cfg(feature = "failpoints")]
fn failpoint(copied: u64) -> Result<()> {
    match std::env::var("RDE_FAILPOINT_MIGRATE_ABORT_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(limit) if copied >= limit => Err(Error::new(
            ErrorKind::Connection,
            format!("failpoint: migration aborted after {copied} rows"),
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_copied: u64) -> Result<()> {
    Ok(())
}

impl Mover<'_> {
    fn hlen(&self, bucket: &[u8]) -> Result<u64> {
        match call(
            self.router,
            self.retry,
            bucket,
            Access::Read,
            &[b"HLEN", bucket],
        )? {
            Reply::Int(n) => Ok(n.max(0) as u64),
            other => Err(Error::new(
                ErrorKind::Server,
                format!("HLEN replied {other:?}"),
            )),
        }
    }

    /// Total rows in `layout`'s buckets.
    pub fn count(&self, layout: &Layout) -> Result<u64> {
        layout.buckets.names().iter().map(|b| self.hlen(b)).sum()
    }

    /// Calls `f` with the field/value items of each HSCAN page of `bucket`.
    fn scan(&self, bucket: &[u8], mut f: impl FnMut(&FlatPage) -> Result<()>) -> Result<()> {
        let mut cursor = b"0".to_vec();
        let mut items = FlatPage::default();
        loop {
            let what = HashRead::Page {
                cursor: &cursor,
                count: self.batch,
            };
            let (page, next) = scan::read_page(self.router, self.retry, bucket, what, items)?;
            f(&page)?;
            match next {
                Some(c) => cursor = c,
                None => return Ok(()),
            }
            items = page;
        }
    }

    fn hset(&self, bucket: &[u8], rows: &[Row<'_>]) -> Result<()> {
        for part in rows.chunks(self.batch.max(1)) {
            let mut args: Vec<&[u8]> = vec![b"HSET", bucket];
            for (k, v) in part {
                args.push(k);
                args.push(v);
            }
            call(self.router, self.retry, bucket, Access::Write, &args)?;
        }
        Ok(())
    }

    /// Copies every row of `src` into its bucket of `dst`. With `delete_moved`, a second pass
    /// deletes each moved row from its old bucket once the new bucket holds it.
    pub fn migrate(
        &self,
        what: &str,
        src: &Layout,
        dst: &Layout,
        delete_moved: bool,
    ) -> Result<u64> {
        let total = self.count(src)?;
        if total == 0 {
            return Ok(0);
        }
        log::info!(
            "{what} {}: {total} rows from {} bucket(s) into {} bucket(s)",
            self.name,
            src.buckets.len(),
            dst.buckets.len()
        );
        let mut progress = Progress::new(format!("{what} {}", self.name), total);
        let mut copied = 0u64;
        for sb in src.buckets.names() {
            self.scan(sb, |items| {
                let mut by_dst: FxHashMap<usize, Vec<Row<'_>>> = FxHashMap::default();
                for (k, v) in pairs(items) {
                    let d = dst.bucket_of(k, self.numeric, self.hashed);
                    if dst.buckets.name(d) != sb.as_slice() {
                        by_dst.entry(d).or_default().push((k, v));
                    }
                }
                for (d, part) in by_dst {
                    self.hset(dst.buckets.name(d), &part)?;
                    copied += part.len() as u64;
                    failpoint(copied)?;
                }
                progress.add((items.len() / 2) as u64, 0);
                Ok(())
            })?;
        }
        progress.log();
        if delete_moved {
            for sb in src.buckets.names() {
                self.delete_moved(sb, dst)?;
            }
        }
        Ok(total)
    }

    /// Deletes from `sb` every row that `dst` places elsewhere and that is present there.
    fn delete_moved(&self, sb: &[u8], dst: &Layout) -> Result<()> {
        self.scan(sb, |items| {
            let mut by_dst: FxHashMap<usize, Vec<&[u8]>> = FxHashMap::default();
            for (k, _) in pairs(items) {
                let d = dst.bucket_of(k, self.numeric, self.hashed);
                if dst.buckets.name(d) != sb {
                    by_dst.entry(d).or_default().push(k);
                }
            }
            for (d, keys) in by_dst {
                let db = dst.buckets.name(d);
                let mut args: Vec<&[u8]> = vec![b"HMGET", db];
                args.extend(keys.iter().copied());
                let Reply::Array(present) = call(self.router, self.retry, db, Access::Write, &args)? else {
                    return Err(Error::new(ErrorKind::Server, "HMGET replied with a non-array"));
                };
                for (k, p) in keys.iter().zip(&present) {
                    if matches!(p, Reply::Nil) {
                        return Err(Error::data(format!(
                            "rehash: row {} of bucket {} is missing from its new bucket {}; nothing was deleted for it",
                            display_bytes(k),
                            display_bytes(sb),
                            display_bytes(db)
                        )));
                    }
                }
                let mut del: Vec<&[u8]> = vec![b"HDEL", sb];
                del.extend(keys.iter().copied());
                call(self.router, self.retry, sb, Access::Write, &del)?;
            }
            Ok(())
        })
    }
}
