//! Lookups: `find` (fixed-size rows, read straight into the output) and `find_strings`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::stats::Op;
use super::{check_find_args, check_find_strings_args, Found, RedisTable, Shared, StrRows, Window};
use crate::cluster::dispatch::{Kind, Request};
use crate::codec::{decode_str_row, Keys, Rows, Storage};
use crate::error::{Error, Result};
use crate::plan::{Chunk, Plan};
use crate::resp::conn::Conn;
use crate::stats;
use crate::sync;

impl RedisTable {
    /// [`Table::find`] without the table's statistics (the training ops count their own).
    pub(crate) fn find_untracked(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        exists: Option<&mut [u8]>,
    ) -> Result<Found> {
        let _timer = stats::CallTimer::start();
        if self.storage == Storage::Native {
            return self.find_rows(keys, defaults, out, exists);
        }
        // Compact storage: look up stored rows into a scratch buffer, then widen to float32.
        let (n, srow, trow) = (keys.len(), self.row, self.row * 2);
        if out.len() != n * trow {
            return Err(Error::invalid(format!(
                "output holds {} bytes, expected {n} rows of {trow}",
                out.len()
            )));
        }
        let dflt_rows = if defaults.len() == out.len() {
            n
        } else {
            1.min(defaults.len() / trow.max(1))
        };
        let mut dflt = Vec::with_capacity(dflt_rows * srow);
        for r in 0..dflt_rows {
            self.storage
                .encode(&defaults[r * trow..(r + 1) * trow], &mut dflt);
        }
        let mut scratch = vec![0u8; n * srow];
        let found = self.find_rows(keys, &dflt, &mut scratch, exists)?;
        for (o, s) in out.chunks_exact_mut(trow).zip(scratch.chunks_exact(srow)) {
            self.storage.decode(s, o);
        }
        Ok(found)
    }

    fn find_rows(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        mut exists: Option<&mut [u8]>,
    ) -> Result<Found> {
        let row = self.row;
        let per_key = check_find_args(
            &self.spec,
            row,
            keys.len(),
            defaults,
            out,
            exists.as_deref(),
        )?;
        let mut found = Found::default();
        self.each_window(keys, |w| {
            let (a, b) = (w.start, w.end);
            let to = Scatter {
                out: Shared::new(&mut out[a * row..b * row]),
                exists: exists.as_deref_mut().map(|e| Shared::new(&mut e[a..b])),
                defaults: if per_key {
                    &defaults[a * row..b * row]
                } else {
                    defaults
                },
                per_key,
                row,
            };
            let lookup = Lookup::new(self, w, to);
            self.dispatch(&w.plan.chunks, &lookup)?;
            self.touch(&[]);
            found += lookup.found();
            Ok(())
        })?;
        Ok(found)
    }

    /// The error for a stored value of `len` bytes read for `key` from the bucket of `ch`,
    /// where a row has `self.row`. Out of line: the decode loop only tests the length.
    #[cold]
    #[inline(never)]
    fn bad_row_len(&self, ch: &Chunk, key: &[u8], len: usize) -> Error {
        self.key_error(
            self.bucket_name(ch),
            key,
            format!(
                "stored value has {len} bytes, expected dim {} × {} = {}",
                self.spec.dim,
                self.spec.value_type.tf_name(),
                self.row
            ),
        )
    }

    /// Looks up string values. `defaults` holds one row per key or at least one row.
    /// Returns the `n × dim` elements and, per key, whether it was found.
    pub fn find_strings(&self, keys: &Keys<'_>, defaults: &Rows<'_>) -> Result<(StrRows, Vec<u8>)> {
        self.stats
            .track(Op::Find, || self.find_strings_rows(keys, defaults))
    }

    fn find_strings_rows(
        &self,
        keys: &Keys<'_>,
        defaults: &Rows<'_>,
    ) -> Result<(StrRows, Vec<u8>)> {
        let _timer = stats::CallTimer::start();
        let (n, dim) = (keys.len(), self.spec.dim);
        let mut rows = StrRows::new();
        let Some(per_key) = check_find_strings_args(self.row, n, dim, defaults)? else {
            return Ok((rows, Vec::new()));
        };
        let mut exists = vec![0u8; n];
        let (mut hits, mut read) = (0, 0);
        self.each_window(keys, |w| {
            let req = ReadRows::new(self, w, &w.plan.order, Kind::READ, None);
            self.dispatch(&w.plan.chunks, &req)?;
            let stored = req.into_rows();
            for (i, &d) in w.plan.of.iter().enumerate() {
                let p = w.start + i;
                match &stored[d as usize] {
                    Some(v) => {
                        decode_str_row(v, dim, &mut rows.data, &mut rows.offsets).map_err(
                            |why| {
                                let key = w.keys.get(i);
                                self.key_error(
                                    self.buckets.name(self.bucket_of(key)),
                                    key,
                                    format!("stored string value is malformed: {why}"),
                                )
                            },
                        )?;
                        exists[p] = 1;
                        hits += 1;
                    }
                    None => rows.push_from(defaults, if per_key { p } else { 0 }, dim),
                }
            }
            read += stored.iter().flatten().map(Vec::len).sum::<usize>();
            self.touch(&[]);
            Ok(())
        })?;
        self.stats.looked_up(n, hits, read);
        Ok((rows, exists))
    }
}

/// Reads the stored rows of distinct keys into memory, one HMGET per chunk: string rows
/// (any length), and accum's baseline (rows of a fixed length, read from the master).
pub(super) struct ReadRows<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
    /// The distinct keys the chunks are cut from: `plan.order`, or a part of the plan.
    order: &'a [u32],
    /// A read, or (accum's baseline) a read from the master.
    kind: Kind,
    /// The length every stored row must have and what its error adds, or None for any.
    expect: Option<(usize, &'static str)>,
    /// Per distinct key of the plan, its stored row (None if absent or not read).
    rows: Mutex<Vec<Option<Vec<u8>>>>,
}

impl<'a> ReadRows<'a> {
    pub(super) fn new(
        table: &'a RedisTable,
        w: &'a Window<'a>,
        order: &'a [u32],
        kind: Kind,
        expect: Option<(usize, &'static str)>,
    ) -> Self {
        ReadRows {
            table,
            keys: &w.keys,
            plan: &w.plan,
            order,
            kind,
            expect,
            rows: Mutex::new(vec![None; w.plan.distinct()]),
        }
    }

    /// The rows read, indexed by distinct key.
    pub(super) fn into_rows(self) -> Vec<Option<Vec<u8>>> {
        sync::into_inner(self.rows)
    }
}

impl Request for ReadRows<'_> {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        (self.table).encode_hmget(c, ch, self.order, self.plan, self.keys);
    }

    fn decode(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let t = self.table;
        t.read_hmget_header(c, ch)?;
        for &d in &self.order[ch.start..ch.end] {
            let v = match (c.read_bulk_len()?, self.expect) {
                (None, _) => None,
                (Some(len), Some((row, note))) if len != row => {
                    return Err(t.key_error(
                        t.bucket_name(ch),
                        self.keys.get(self.plan.first[d as usize] as usize),
                        format!("stored value has {len} bytes, expected {row}{note}"),
                    ))
                }
                (Some(len), _) => Some(c.bulk(len)?),
            };
            sync::lock(&self.rows)[d as usize] = v;
        }
        Ok(())
    }
}

/// A lookup as a [`Request`]: one HMGET per chunk of distinct keys, each reply read straight
/// into the output and scattered to every position of its key.
struct Lookup<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
    /// Positions found, and the stored bytes read for them.
    hits: AtomicUsize,
    bytes: AtomicUsize,
    to: Scatter<'a>,
}

impl<'a> Lookup<'a> {
    fn new(table: &'a RedisTable, w: &'a Window<'a>, to: Scatter<'a>) -> Self {
        Lookup {
            table,
            keys: &w.keys,
            plan: &w.plan,
            hits: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            to,
        }
    }

    /// What the lookup found, once it has run.
    fn found(&self) -> Found {
        Found {
            hits: self.hits.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Request for Lookup<'_> {
    fn kind(&self) -> Kind {
        Kind::READ
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        let plan = self.plan;
        self.table.encode_hmget(c, ch, &plan.order, plan, self.keys);
    }

    fn decode(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let (t, plan, to) = (self.table, self.plan, &self.to);
        t.read_hmget_header(c, ch)?;
        // Each reply is scattered to every position of its key as it is read, so the copies
        // for duplicate keys and defaults overlap the server's work on the next commands
        // instead of following the last reply. This loop runs once per key: keep it lean
        // (examples/client_cost.rs counts its instructions).
        // SAFETY (both calls): the rows and flags written belong to the occurrences of this
        // chunk's distinct keys only, and each chunk is decoded by one task at a time.
        let (row, mut hits, mut bytes) = (to.row, 0, 0);
        for &d in &plan.order[ch.start..ch.end] {
            let first = plan.first[d as usize] as usize;
            let hit = match c.read_bulk_len()? {
                None => false,
                Some(len) if len == row => {
                    c.payload(unsafe { to.out.slice(first * row, row) })?;
                    true
                }
                Some(len) => return Err(t.bad_row_len(ch, self.keys.get(first), len)),
            };
            let positions = unsafe { to.fill(plan, first, hit) };
            if hit {
                hits += positions;
                bytes += row;
            }
        }
        // Added once the whole reply is decoded, so a chunk cut off and resent counts once.
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// Where a lookup's rows go: the output rows and found flags, and the defaults for misses.
struct Scatter<'a> {
    out: Shared<'a>,
    exists: Option<Shared<'a>>,
    defaults: &'a [u8],
    /// Whether `defaults` holds one row per key (else its first row serves every miss).
    per_key: bool,
    row: usize,
}

impl Scatter<'_> {
    /// Completes every position of the key first seen at `first`, whose stored row was read
    /// in place there when `hit`: the later positions get a copy of it, or on a miss every
    /// position gets its default row; each gets its found flag. Returns the number of
    /// positions.
    ///
    /// # Safety
    /// No other task may write these positions meanwhile.
    #[inline(always)]
    unsafe fn fill(&self, plan: &Plan, first: usize, hit: bool) -> usize {
        let row = self.row;
        if !hit {
            self.out
                .slice(first * row, row)
                .copy_from_slice(self.default_row(first));
        }
        self.flag(first, hit);
        let mut n = 1;
        for p in plan.repeats(first) {
            let from = if hit {
                &*self.out.slice(first * row, row)
            } else {
                self.default_row(p)
            };
            self.out.slice(p * row, row).copy_from_slice(from);
            self.flag(p, hit);
            n += 1;
        }
        n
    }

    /// The default row of position `p`.
    fn default_row(&self, p: usize) -> &[u8] {
        let row = self.row;
        if self.per_key {
            &self.defaults[p * row..(p + 1) * row]
        } else {
            &self.defaults[..row]
        }
    }

    /// Sets the found flag of position `p`, if flags are wanted.
    ///
    /// # Safety
    /// As for [`Scatter::fill`].
    unsafe fn flag(&self, p: usize, hit: bool) {
        if let Some(e) = &self.exists {
            e.slice(p, 1)[0] = hit as u8;
        }
    }
}
