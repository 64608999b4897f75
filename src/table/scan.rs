//! Streaming the whole table out of Redis (export, save): reader tasks on the I/O pool each
//! take the next bucket and read it page by page, while the calling thread hands the rows of
//! finished pages to the consumer. A bounded channel between the two keeps at most a few pages
//! in memory and lets the server work on the next pages while the caller copies this one.

use rustc_hash::{FxHashMap, FxHashSet};

use super::RedisTable;
use crate::cluster::route::Access;
use crate::cluster::scan::{self, HashRead};
use crate::codec::{decode_str_row, le_word};
use crate::error::{Error, ErrorKind, Result};
use crate::exec;
use crate::handoff::{self, Feed};
use crate::resp::conn::FlatPage;

/// Buckets of at most this many rows are exported with one HGETALL.
const GETALL_MAX_ROWS: usize = 65_536;

/// Rows asked for per HSCAN page when exporting (at least; `keys_sending_size` if larger).
const SCAN_PAGE_ROWS: usize = 4_096;

/// One page of a bucket, read and checked to hold field/value pairs.
struct Page {
    bucket: usize,
    items: FlatPage,
    /// Read with HSCAN, which may return a field again while the hash is being resized.
    paged: bool,
    /// The bucket's last page.
    last: bool,
}

/// Keys already handed on from the HSCAN-paged buckets being read (HGETALL replies hold each
/// field once and need no such set).
#[derive(Default)]
struct Seen {
    /// Keys of up to 8 bytes, as (length, little-endian word): cheaper to hash than bytes.
    words: FxHashMap<usize, FxHashSet<(u8, u64)>>,
    bytes: FxHashMap<usize, FxHashSet<Vec<u8>>>,
}

impl Seen {
    /// Whether `key` of `bucket` is new (and now recorded).
    fn first(&mut self, bucket: usize, key: &[u8]) -> bool {
        if key.len() <= 8 {
            let entry = (key.len() as u8, le_word(key));
            self.words.entry(bucket).or_default().insert(entry)
        } else {
            self.bytes.entry(bucket).or_default().insert(key.to_vec())
        }
    }

    /// Forgets a finished bucket.
    fn done(&mut self, bucket: usize) {
        self.words.remove(&bucket);
        self.bytes.remove(&bucket);
    }
}

impl RedisTable {
    /// Calls `f(bucket, key, value)` once for every stored row. Buckets small enough are read
    /// whole with HGETALL (about half the server CPU of HSCAN per row, and atomic); larger
    /// ones are paged with HSCAN, whose repeats (while a hash is being resized) are dropped.
    pub(super) fn scan_rows(
        &self,
        mut f: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let lens = self.per_bucket(&self.all_buckets(), b"HLEN", &[], Access::Read)?;
        let todo: Vec<usize> = (0..lens.len()).filter(|&b| lens[b] > 0).collect();
        if todo.is_empty() {
            return Ok(());
        }
        // At most readers + 2 pages exist (one being read per reader, one queued, one being
        // handed on), and their buffers are reused.
        let mut seen = Seen::default();
        let result = handoff::read_ahead(
            |feed: &Feed<Page>| {
                self.each_bucket_in_parallel(&todo, |bucket| {
                    self.read_bucket(bucket, lens[bucket] as usize, feed)
                })
            },
            |page| {
                let bucket = self.buckets.name(page.bucket);
                let items = &page.items;
                (0..items.len()).step_by(2).try_for_each(|i| {
                    let (k, v) = (items.item(i), items.item(i + 1));
                    if page.paged && !seen.first(page.bucket, k) {
                        return Ok(());
                    }
                    self.check_stored(bucket, k, v)?;
                    f(bucket, k, v)
                })?;
                if page.paged && page.last {
                    seen.done(page.bucket);
                }
                Ok(())
            },
        );
        exec::trim_heap();
        result
    }

    /// Sends every page of `bucket` (holding `len` rows) to `feed`: all at once with HGETALL
    /// when small enough, else HSCAN page by page.
    fn read_bucket(&self, bucket: usize, len: usize, feed: &Feed<Page>) -> Result<()> {
        let whole = len <= GETALL_MAX_ROWS;
        let mut cursor = b"0".to_vec();
        loop {
            let reuse = feed.reuse().map(|p| p.items).unwrap_or_default();
            let (items, more) = self.read_page(bucket, whole, &cursor, reuse)?;
            let page = Page {
                bucket,
                items,
                paged: !whole,
                last: more.is_none(),
            };
            // A closed hand-off means the caller stopped on an error of its own, which is the
            // one reported; this one only ends the readers.
            if !feed.send(page) {
                return Err(Error::new(ErrorKind::Conflict, "the export stopped"));
            }
            match more {
                Some(c) => cursor = c,
                None => return Ok(()),
            }
        }
    }

    /// Reads one page of `bucket` (all of it when `whole`) starting at `cursor`; returns the
    /// items and the cursor of the next page, if any.
    fn read_page(
        &self,
        bucket: usize,
        whole: bool,
        cursor: &[u8],
        reuse: FlatPage,
    ) -> Result<(FlatPage, Option<Vec<u8>>)> {
        let what = if whole {
            HashRead::Whole
        } else {
            HashRead::Page {
                cursor,
                count: self.cfg.keys_sending_size.max(SCAN_PAGE_ROWS),
            }
        };
        let before = crate::stats::retries_here();
        let page = scan::read_page(
            &self.router,
            self.retry,
            self.buckets.name(bucket),
            what,
            reuse,
        );
        self.stats.retried(crate::stats::retries_here() - before);
        page
    }

    /// Checks a stored row against the table's key width and value layout.
    fn check_stored(&self, bucket: &[u8], k: &[u8], v: &[u8]) -> Result<()> {
        if self.spec.key_type.width().is_some_and(|w| w != k.len()) {
            return Err(self.key_error(
                bucket,
                k,
                format!(
                    "field has {} bytes, not a {:?} key",
                    k.len(),
                    self.spec.key_type
                ),
            ));
        }
        if self.row == 0 {
            let (mut d, mut o) = (Vec::new(), vec![0]);
            decode_str_row(v, self.spec.dim, &mut d, &mut o).map_err(|why| {
                self.key_error(
                    bucket,
                    k,
                    format!("stored string value is malformed: {why}"),
                )
            })?;
        } else if v.len() != self.row {
            return Err(self.key_error(
                bucket,
                k,
                format!("stored value has {} bytes, expected {}", v.len(), self.row),
            ));
        }
        Ok(())
    }
}
