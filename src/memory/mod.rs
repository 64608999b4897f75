//! The embedded backend's store (`rde_backend: "memory"`): a table's rows in 64 shards, each
//! behind a read-write lock, shared per process by model tag, embedding name and layout
//! ([`registry`]). Batches are grouped by shard (input order kept within a shard, so the last
//! occurrence of a key wins) and large ones run shard groups in parallel. Values are the bytes
//! Redis would hold; what they mean is the table's business. No I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::accum;
use crate::codec::{KeyType, Keys, Rows, ValueType};
use crate::error::{Error, ErrorKind, Result};
use crate::{exec, sync};

pub mod registry;
mod shard;

use shard::Shard;

/// Shards per table.
const SHARDS: usize = 64;
/// Keys whose rows a lookup starts loading before it copies the first of them.
const PREFETCH_BLOCK: usize = 16;
/// Batches smaller than this run on the calling thread.
const PARALLEL_MIN_KEYS: usize = 4096;

/// What a table stores: its key type, the value type of stored rows, and elements per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Key dtype.
    pub key: KeyType,
    /// Stored value dtype (bfloat16/half for compact float32 storage).
    pub value: ValueType,
    /// Elements per row.
    pub dim: usize,
}

impl Layout {
    /// Bytes of a stored row; None for string values.
    pub fn row(&self) -> Option<usize> {
        self.value.elem_size().map(|s| s * self.dim)
    }
}

/// One table's rows.
pub struct Store {
    name: String,
    layout: Layout,
    shards: Box<[RwLock<Shard>]>,
    rows: AtomicU64,
    max_rows: Option<u64>,
}

/// Which shard a key lives in (a mix independent of the shard's own hash).
#[inline]
fn shard_of(key: &[u8], numeric: bool) -> usize {
    let h = if numeric {
        shard::num(key)
    } else {
        key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    // splitmix64's finalizer.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) % SHARDS as u64) as usize
}

impl Store {
    /// An empty store for table `name`; inserts past `max_rows` rows fail.
    pub fn new(name: &str, layout: Layout, max_rows: Option<u64>) -> Store {
        let numeric = layout.key != KeyType::Str;
        Store {
            name: name.to_owned(),
            layout,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(Shard::new(numeric, layout.row())))
                .collect(),
            rows: AtomicU64::new(0),
            max_rows,
        }
    }

    /// Rows held.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Counts one more row, unless that would pass the cap.
    fn admit(&self) -> Result<()> {
        let Some(max) = self.max_rows else {
            self.rows.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        self.rows
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!(
                        "memory table {:?} is full: it holds rde_memory_max_rows = {max} rows; \
                         raise the cap or remove rows (rows are never evicted)",
                        self.name
                    ),
                )
            })
    }

    /// Runs `work(shard, positions)` for each shard that `keys` touch, with the positions of
    /// its keys in input order; in parallel for large batches.
    fn each_shard(
        &self,
        keys: &Keys<'_>,
        work: impl Fn(usize, &[u32]) -> Result<()> + Sync,
    ) -> Result<()> {
        let n = keys.len();
        let numeric = self.layout.key != KeyType::Str;
        let of: Vec<u8> = (0..n)
            .map(|i| shard_of(keys.get(i), numeric) as u8)
            .collect();
        let mut starts = [0usize; SHARDS + 1];
        for &s in &of {
            starts[s as usize + 1] += 1;
        }
        for s in 0..SHARDS {
            starts[s + 1] += starts[s];
        }
        let mut order = vec![0u32; n];
        let mut next = starts;
        for (i, &s) in of.iter().enumerate() {
            order[next[s as usize]] = i as u32;
            next[s as usize] += 1;
        }
        let group = |s: usize| {
            let (a, b) = (starts[s], starts[s + 1]);
            if a == b {
                return Ok(());
            }
            work(s, &order[a..b])
        };
        if n < PARALLEL_MIN_KEYS {
            return (0..SHARDS).try_for_each(group);
        }
        // CPU-bound work: never more workers than cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = exec::parallelism().min(cores).min(SHARDS);
        exec::run_all(workers, |w| {
            (w..SHARDS).step_by(workers).try_for_each(group)
        })
    }

    /// Calls `found(position, stored row or None)` for every key (duplicates included), from
    /// several threads for large batches.
    pub fn get(&self, keys: &Keys<'_>, found: impl Fn(usize, Option<&[u8]>) + Sync) -> Result<()> {
        self.each_shard(keys, |s, pos| {
            let shard = sync::read(&self.shards[s]);
            // Per block: find the slots and start loading their rows, then hand them out.
            let mut slots = [None; PREFETCH_BLOCK];
            for block in pos.chunks(PREFETCH_BLOCK) {
                for (slot, &p) in slots.iter_mut().zip(block) {
                    *slot = shard.slot(keys.get(p as usize));
                    if let Some(s) = *slot {
                        shard.prefetch(s);
                    }
                }
                for (slot, &p) in slots.iter().zip(block) {
                    found(p as usize, slot.map(|s| shard.value(s)));
                }
            }
            Ok(())
        })
    }

    /// Upserts row `i` of `rows` (already in stored form) under key `i`; a duplicated key
    /// keeps its last row.
    pub fn put(&self, keys: &Keys<'_>, rows: &Rows<'_>) -> Result<()> {
        self.each_shard(keys, |s, pos| {
            let mut shard = sync::write(&self.shards[s]);
            sync::panic_point("memory_shard");
            let mut buf = Vec::new();
            for &p in pos {
                let p = p as usize;
                let value = match *rows {
                    Rows::Fixed { data, row } => &data[p * row..(p + 1) * row],
                    Rows::Str { .. } => {
                        buf.clear();
                        rows.encode(p, &mut buf);
                        &buf[..]
                    }
                };
                shard.put(keys.get(p), value, || self.admit())?;
            }
            Ok(())
        })
    }

    /// TFRA's accum, per key in input order under the shard's lock: a present key with
    /// `exists` gets `delta` added (in the stored type's arithmetic), an absent key without
    /// `exists` is inserted with it, anything else is left. `deltas` are stored-form rows.
    pub fn accum(&self, keys: &Keys<'_>, deltas: &[u8], exists: &[u8]) -> Result<()> {
        let row = self.layout.row().unwrap_or(0);
        let vt = self.layout.value;
        self.each_shard(keys, |s, pos| {
            let mut shard = sync::write(&self.shards[s]);
            for &p in pos {
                let (p, key) = (p as usize, keys.get(p as usize));
                let delta = &deltas[p * row..(p + 1) * row];
                match (shard.get_mut(key), exists[p] != 0) {
                    (Some(stored), true) => accum::add_row(vt, stored, delta),
                    (None, false) => {
                        shard.put(key, delta, || self.admit())?;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// Deletes the keys; missing ones are ignored.
    pub fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        self.each_shard(keys, |s, pos| {
            let mut shard = sync::write(&self.shards[s]);
            for &p in pos {
                if shard.remove(keys.get(p as usize)) {
                    self.rows.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    }

    /// Deletes every row (and frees the shards' memory).
    pub fn clear(&self) {
        let (numeric, row) = (self.layout.key != KeyType::Str, self.layout.row());
        for s in self.shards.iter() {
            let mut shard = sync::write(s);
            self.rows.fetch_sub(shard.len() as u64, Ordering::Relaxed);
            *shard = Shard::new(numeric, row);
        }
    }

    /// Calls `f(key, stored value)` for every row, shard by shard (each read-locked while it
    /// is walked).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let width = self.layout.key.width().unwrap_or(0);
        for s in self.shards.iter() {
            sync::read(s).for_each(width, &mut f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
