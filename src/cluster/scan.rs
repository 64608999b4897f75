//! The one reader of a bucket hash's rows, page by page: the export and file save
//! (`table/scan.rs`) and the rehash and model-tag copy (`rehash.rs`) both read through it.

use std::sync::Mutex;

use crate::cluster::dispatch::{self, Commands, Retry};
use crate::cluster::layout::{self, display_bytes};
use crate::cluster::route::{Access, Router};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::Chunk;
use crate::resp::conn::FlatPage;
use crate::sync;

/// How much of a hash one read takes.
#[derive(Debug, Clone, Copy)]
pub enum HashRead<'a> {
    /// All of it, with HGETALL (atomic, and about half the server CPU of HSCAN per row).
    Whole,
    /// One HSCAN page from `cursor`, asking for `count` fields. A field may come again in a
    /// later page while the hash is being resized.
    Page {
        /// `0` for the first page, else the cursor the previous page returned.
        cursor: &'a [u8],
        /// The COUNT hint.
        count: usize,
    },
}

/// Reads `what` of the hash `bucket` into `into` (its buffers reused) from the node owning
/// it, with redirects and retries (a retry resends the same page). Returns the field/value
/// items, checked to be pairs, and the cursor of the next page if there is one.
pub fn read_page(
    router: &Router,
    retry: Retry,
    bucket: &[u8],
    what: HashRead<'_>,
    into: FlatPage,
) -> Result<(FlatPage, Option<Vec<u8>>)> {
    let count = match what {
        HashRead::Page { count, .. } => count.to_string(),
        HashRead::Whole => String::new(),
    };
    let chunk = Chunk {
        bucket: 0,
        start: 0,
        end: 0,
    };
    let slot = layout::key_slot(bucket);
    let page = Mutex::new((into, None));
    let req = Commands::idempotent(
        Access::Read,
        |c, _| match what {
            HashRead::Whole => c.cmd(&[b"HGETALL", bucket]),
            HashRead::Page { cursor, .. } => {
                c.cmd(&[b"HSCAN", bucket, cursor, b"COUNT", count.as_bytes()]);
            }
        },
        |c, _| {
            let mut out = sync::lock(&page);
            let (items, more) = &mut *out;
            *more = match what {
                HashRead::Whole => {
                    c.read_getall(items)?;
                    None
                }
                HashRead::Page { .. } => {
                    let next = c.read_scan_page(items)?;
                    (next != b"0").then_some(next)
                }
            };
            Ok(())
        },
    );
    dispatch::run(router, retry, std::slice::from_ref(&chunk), |_| slot, &req)?;
    let (items, more) = sync::into_inner(page);
    if items.len() % 2 != 0 {
        return Err(Error::new(
            ErrorKind::Server,
            format!(
                "reading {} returned an odd number of items",
                display_bytes(bucket)
            ),
        ));
    }
    Ok((items, more))
}
