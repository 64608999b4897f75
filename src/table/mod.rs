//! `Table`: one embedding table, on Redis or in this process ([`backend`]). On Redis
//! (`RedisTable`), each operation plans its keys (dedup, bucket, chunk), runs the pipelines on
//! pooled connections, and merges the replies by position; in memory ([`embedded`]), each
//! runs on the process's sharded store ([`crate::memory`]).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::cluster::dispatch::{self, Commands, Request, Retry};
use crate::cluster::layout::{self, display_bytes, Buckets};
use crate::cluster::layout_store::{self, Layout};
use crate::cluster::rehash::Mover;
use crate::cluster::route::{Access, Router};
use crate::codec::{KeyType, Keys, Rows, Storage, ValueType};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::exec;
use crate::plan::{Chunk, Plan};
use crate::resp::conn::Conn;
use crate::sync;

mod accum;
mod backend;
mod embedded;
mod embedded_io;
mod evict;
mod export;
mod files_io;
mod find;
mod memory_files;
mod persist;
mod remove;
mod scan;
pub mod stats;
pub(crate) mod train;
mod ttl;
mod write;

pub use backend::Table;
pub use export::ExportPlan;
use persist::copy_model_tag;

/// What a table holds: its name and dtypes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// TFRA's embedding name: the table name cut at the first `_mht_`.
    pub embedding_name: String,
    /// Key dtype.
    pub key_type: KeyType,
    /// Value dtype.
    pub value_type: ValueType,
    /// Elements per value row.
    pub dim: usize,
    /// Which device shard of a multi-device Variable this table is.
    pub shard: Shard,
}

impl TableSpec {
    /// A single-shard table.
    pub fn new(embedding_name: &str, key_type: KeyType, value_type: ValueType, dim: usize) -> Self {
        TableSpec {
            embedding_name: embedding_name.to_owned(),
            key_type,
            value_type,
            dim,
            shard: Shard::default(),
        }
    }
}

/// Shard `index` (1-based) of `count`, from a Variable's `<name>_mht_<index>of<count>` table
/// names. All shards of a Variable share one Redis prefix, so they share the same rows (as in
/// TFRA). To keep `Variable.size()` and `Variable.export()` right, only shard 1 reports the
/// shared rows; the others report none. `clear()` on any shard clears the shared rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl Shard {
    /// Validates `index` in `1..=count`.
    pub fn new(index: i64, count: i64) -> Result<Shard> {
        if count < 1 || index < 1 || index > count || count > i64::from(u32::MAX) {
            return Err(Error::invalid(format!(
                "shard_index {index} / shard_count {count}: expected 1 <= shard_index <= shard_count"
            )));
        }
        Ok(Shard {
            index: index as u32,
            count: count as u32,
        })
    }

    /// Whether this shard reports the rows that all shards share.
    pub fn reports_shared_rows(&self) -> bool {
        self.index == 1
    }
}

/// Decoded string rows: element `j` is `data[offsets[j]..offsets[j + 1]]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StrRows {
    /// Concatenated element bytes.
    pub data: Vec<u8>,
    /// Element boundaries, starting at 0.
    pub offsets: Vec<u64>,
}

impl StrRows {
    fn new() -> Self {
        StrRows {
            data: Vec::new(),
            offsets: vec![0],
        }
    }

    fn push_from(&mut self, src: &Rows<'_>, row: usize, dim: usize) {
        if let Rows::Str { data, offsets, .. } = *src {
            for j in row * dim..(row + 1) * dim {
                self.data
                    .extend_from_slice(&data[offsets[j] as usize..offsets[j + 1] as usize]);
                self.offsets.push(self.data.len() as u64);
            }
        }
    }
}

/// The whole table, as export returns it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Keys: fixed-width bytes, or string bytes split by `key_offsets`.
    pub keys: Vec<u8>,
    /// String key boundaries (`len + 1` entries); empty for numeric keys.
    pub key_offsets: Vec<u64>,
    /// Value rows for fixed-size types.
    pub values: Vec<u8>,
    /// Value elements for string values.
    pub str_values: StrRows,
    /// Number of rows.
    pub len: usize,
}

/// A raw output buffer that parallel pipelines write disjoint rows of. It borrows the buffer
/// for `'buf`, so the compiler checks that the buffer outlives every task holding a copy.
#[derive(Clone, Copy)]
struct Shared<'buf> {
    ptr: *mut u8,
    len: usize,
    _buf: PhantomData<&'buf mut [u8]>,
}

// SAFETY: every writer touches a disjoint byte range (one row per distinct key), and the
// borrow `'buf` keeps the buffer alive and unused elsewhere while copies exist.
unsafe impl Send for Shared<'_> {}
unsafe impl Sync for Shared<'_> {}

impl<'buf> Shared<'buf> {
    fn new(buf: &'buf mut [u8]) -> Self {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    /// # Safety
    /// No two live slices may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &'buf mut [u8] {
        assert!(at + len <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(at), len)
    }
}

/// One window of an op's keys (see [`RedisTable::each_window`]): the call's positions
/// `start..end`, their keys (window position `i` is call position `start + i`), and their
/// plan.
struct Window<'k> {
    start: usize,
    end: usize,
    keys: Keys<'k>,
    plan: Plan,
}

/// One embedding table stored in Redis.
struct RedisTable {
    cfg: Config,
    spec: TableSpec,
    buckets: Buckets,
    layout: Layout,
    /// Cluster slot of each bucket key.
    bucket_slots: Vec<usize>,
    router: Router,
    retry: Retry,
    /// Bytes per stored row for fixed-size value types; 0 for strings.
    row: usize,
    /// How float32 rows are stored (`rde_value_storage`).
    storage: Storage,
    /// The value type of stored rows (bfloat16/half for compact storage).
    stored_vt: ValueType,
    /// Whether each bucket is known to carry a TTL (see [`Table::touch`]).
    ttl_armed: Vec<std::sync::atomic::AtomicBool>,
    /// When every bucket's TTL was last pushed out.
    ttl_last: Mutex<std::time::Instant>,
    /// This table's counters and latency histograms.
    stats: stats::TableStats,
    /// The evicting servers `rde_allow_eviction` accepted, watched for the statistics.
    evictions: evict::Evictions,
}

impl RedisTable {
    /// Validates `spec` against `cfg`, connects, learns the topology and the bucket layout,
    /// and returns the table.
    pub fn open(cfg: Config, spec: TableSpec) -> Result<RedisTable> {
        let storage = cfg.rde_value_storage;
        let stored_vt = storage.stored_type(spec.value_type);
        let row = stored_vt.elem_size().map_or(0, |s| s * spec.dim);
        let retry = Retry {
            attempts: cfg.rde_max_retries,
            backoff: Duration::from_millis(cfg.rde_retry_backoff_ms),
        };
        let router = Router::open(&cfg, retry)?;
        let evictions = evict::check(&cfg, &router, &spec.embedding_name)?;
        let resolved = layout_store::resolve(&cfg, &spec.embedding_name, &router, retry)?;
        let layout = resolved.target;
        let mover = Mover {
            router: &router,
            retry,
            batch: cfg.keys_sending_size,
            numeric: spec.key_type != KeyType::Str,
            hashed: cfg.using_hash_storage_slice,
            name: &spec.embedding_name,
        };
        if let Some(source) = &resolved.source {
            mover.migrate("rehash", source, &layout, true)?;
        }
        if cfg.model_tag_import != cfg.model_tag_runtime {
            copy_model_tag(&cfg, &spec, &router, retry, &mover, &layout)?;
        }
        // Recorded only once the rows are in place, so an interrupted rehash resumes.
        let prefix = layout::prefix(
            &cfg.model_tag_runtime,
            &spec.embedding_name,
            cfg.using_md5_prefix_name,
        );
        if !resolved.recorded {
            layout_store::save(&router, retry, &prefix, &layout)?;
        }
        let buckets = layout.buckets.clone();
        let n_buckets = buckets.len();
        let bucket_slots = buckets
            .names()
            .iter()
            .map(|b| layout::key_slot(b))
            .collect();
        let t = RedisTable {
            cfg,
            spec,
            buckets,
            layout,
            bucket_slots,
            router,
            retry,
            row,
            storage,
            stored_vt,
            ttl_armed: (0..n_buckets).map(|_| Default::default()).collect(),
            ttl_last: Mutex::new(std::time::Instant::now()),
            stats: stats::TableStats::default(),
            evictions,
        };
        t.arm_ttl_on_open()?;
        log::debug!(
            "opened table {:?} ({} buckets) with {:?}",
            t.spec.embedding_name,
            n_buckets,
            t.cfg
        );
        Ok(t)
    }

    /// This table's statistics (see [`stats`]).
    fn stats(&self) -> &stats::TableStats {
        &self.stats
    }

    /// Keys evicted since the table opened by the servers it was allowed to open on although
    /// they can evict (0 when none can).
    fn evicted_keys(&self) -> u64 {
        self.evictions.seen(&self.router)
    }

    fn plan(&self, keys: &Keys<'_>) -> Plan {
        if self.layout.rule == layout_store::Rule::First {
            // TFRA's standalone and sentinel modes keep every row in bucket 0.
            return Plan::new(keys, 1, self.cfg.keys_sending_size, |_| 0);
        }
        Plan::new(keys, self.buckets.len(), self.cfg.keys_sending_size, |k| {
            self.bucket_of(k)
        })
    }

    /// The bucket `key` is stored in (as [`RedisTable::plan`] places it).
    fn bucket_of(&self, key: &[u8]) -> usize {
        if self.layout.rule == layout_store::Rule::First {
            return 0;
        }
        let numeric = self.spec.key_type != KeyType::Str;
        (self.layout).bucket_of(key, numeric, self.cfg.using_hash_storage_slice)
    }

    fn bucket_name(&self, c: &Chunk) -> &[u8] {
        self.buckets.name(c.bucket)
    }

    /// Reads the array header of an HMGET reply to `ch`, which must hold one value per field.
    fn read_hmget_header(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let (got, sent) = (c.read_array_header()?, ch.end - ch.start);
        if got != sent {
            return Err(Error::new(
                ErrorKind::Server,
                format!(
                    "HMGET on bucket {} returned {got} values for {sent} fields",
                    display_bytes(self.bucket_name(ch))
                ),
            ));
        }
        Ok(())
    }

    fn key_error(&self, bucket: &[u8], key: &[u8], what: String) -> Error {
        Error::data(format!(
            "bucket {} key {}: {what}",
            display_bytes(bucket),
            self.spec.key_type.display(key)
        ))
    }

    /// Runs an op on `keys`: window by window ([`dispatch::in_windows`]: in order, stopping
    /// at the first error), each window's keys planned (dedup, bucket, chunk), and `op` runs
    /// the window's request on the plan's chunks with [`RedisTable::dispatch`] (accum runs
    /// several, on parts of the plan). Nothing runs for no keys.
    fn each_window(
        &self,
        keys: &Keys<'_>,
        mut op: impl FnMut(&Window<'_>) -> Result<()>,
    ) -> Result<()> {
        dispatch::in_windows(keys.len(), |start, end| {
            let keys = keys.sub(start, end);
            let plan = self.plan(&keys);
            op(&Window {
                start,
                end,
                keys,
                plan,
            })
        })
    }

    /// Runs `req`, one command per chunk, on the servers owning the chunks' buckets; see
    /// [`crate::cluster::dispatch`].
    fn dispatch(&self, chunks: &[Chunk], req: &impl Request) -> Result<()> {
        let before = crate::stats::retries_here();
        let r = dispatch::run(
            &self.router,
            self.retry,
            chunks,
            |c| self.bucket_slots[c.bucket],
            req,
        );
        self.stats.retried(crate::stats::retries_here() - before);
        r
    }

    /// Runs `work(bucket)` for every one of `buckets`, each taken by the next free worker: two
    /// workers per server owning them (one bucket's result is handled while that server works
    /// on the next), at most `RDE_IO_THREADS`. Stops at the first error.
    fn each_bucket_in_parallel(
        &self,
        buckets: &[usize],
        work: impl Fn(usize) -> Result<()> + Sync,
    ) -> Result<()> {
        let servers: rustc_hash::FxHashSet<String> = buckets
            .iter()
            .filter_map(|&b| {
                self.router
                    .addr_for(self.bucket_slots[b], Access::Read)
                    .ok()
            })
            .collect();
        let workers = exec::parallelism()
            .min(2 * servers.len().max(1))
            .min(buckets.len());
        let next = AtomicUsize::new(0);
        exec::run_all(workers, |_| loop {
            let Some(&b) = buckets.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            work(b)?;
        })
    }

    /// One chunk per bucket, for per-bucket admin commands.
    fn bucket_chunks(&self) -> Vec<Chunk> {
        (0..self.buckets.len())
            .map(|b| Chunk {
                bucket: b,
                start: 0,
                end: 0,
            })
            .collect()
    }

    fn check_rows(&self, rows: &Rows<'_>, n: usize, what: &str) -> Result<()> {
        let ok = match *rows {
            Rows::Fixed { data, row } => row == self.row && data.len() == n * row,
            Rows::Str { offsets, dim, .. } => dim == self.spec.dim && offsets.len() == n * dim + 1,
        };
        if !ok {
            return Err(Error::invalid(format!(
                "{what} must hold {n} rows of {} {} elements",
                self.spec.dim,
                self.spec.value_type.tf_name()
            )));
        }
        Ok(())
    }

    /// Encodes one HMGET of the chunk's distinct keys, listed by `order`.
    fn encode_hmget(&self, c: &mut Conn, ch: &Chunk, order: &[u32], plan: &Plan, keys: &Keys<'_>) {
        c.begin(2 + ch.end - ch.start);
        c.arg(b"HMGET");
        c.arg(self.bucket_name(ch));
        for &d in &order[ch.start..ch.end] {
            c.arg(keys.get(plan.first[d as usize] as usize));
        }
    }

    /// Bytes of one value row in tensors (float32 even when stored compact); 0 for strings.
    fn tensor_row(&self) -> usize {
        match self.storage {
            Storage::Native => self.row,
            Storage::Bf16 | Storage::F16 => self.row * 2,
        }
    }

    /// For compact storage, float32 `rows` converted to the stored form.
    fn compact(&self, rows: &Rows<'_>, n: usize, what: &str) -> Result<Option<Vec<u8>>> {
        if self.storage == Storage::Native {
            return Ok(None);
        }
        let trow = self.row * 2;
        let Rows::Fixed { data, row } = *rows else {
            return Err(Error::invalid(format!("{what} must be float32 rows")));
        };
        if row != trow || data.len() != n * trow {
            return Err(Error::invalid(format!(
                "{what} must hold {n} rows of {} float32 elements",
                self.spec.dim
            )));
        }
        let mut stored = Vec::with_capacity(n * self.row);
        for r in data.chunks_exact(trow) {
            self.storage.encode(r, &mut stored);
        }
        Ok(Some(stored))
    }

    /// Runs `cmd <bucket> <extra…>` for each bucket in `which` and returns the integer replies
    /// (indexed by bucket; 0 for buckets not in `which`).
    fn per_bucket(
        &self,
        which: &[usize],
        cmd: &[u8],
        extra: &[&[u8]],
        access: Access,
    ) -> Result<Vec<i64>> {
        let replies = Mutex::new(vec![0i64; self.buckets.len()]);
        let chunks: Vec<Chunk> = which
            .iter()
            .map(|&b| Chunk {
                bucket: b,
                start: 0,
                end: 0,
            })
            .collect();
        let req = Commands::idempotent(
            access,
            |c, ch| {
                c.begin(2 + extra.len());
                c.arg(cmd);
                c.arg(self.bucket_name(ch));
                for a in extra {
                    c.arg(a);
                }
            },
            |c, ch| {
                let n = c.read_int()?;
                sync::lock(&replies)[ch.bucket] = n;
                Ok(())
            },
        );
        self.dispatch(&chunks, &req)?;
        Ok(sync::into_inner(replies))
    }

    fn all_buckets(&self) -> Vec<usize> {
        (0..self.buckets.len()).collect()
    }
}

/// Checks a lookup's buffers against `n` keys of `row` tensor bytes each (both backends);
/// returns whether `defaults` holds one row per key (else its first row serves every miss).
pub(super) fn check_find_args(
    spec: &TableSpec,
    row: usize,
    n: usize,
    defaults: &[u8],
    out: &[u8],
    exists: Option<&[u8]>,
) -> Result<bool> {
    if row == 0 {
        return Err(Error::invalid(
            "string values are looked up with find_strings",
        ));
    }
    if out.len() != n * row {
        return Err(Error::invalid(format!(
            "output holds {} bytes, expected {n} rows of {row}",
            out.len()
        )));
    }
    if exists.is_some_and(|e| e.len() != n) {
        return Err(Error::invalid("exists output must have one entry per key"));
    }
    let per_key = defaults.len() == out.len();
    if n > 0 && !per_key && defaults.len() < row {
        return Err(Error::invalid(format!(
            "default_value has {} elements; it needs at least dim = {} (or one row per key)",
            defaults.len() / (row / spec.dim),
            spec.dim
        )));
    }
    Ok(per_key)
}

/// What a lookup found: key positions, and stored value bytes read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) hits: usize,
    pub(crate) bytes: usize,
}

impl std::ops::AddAssign for Found {
    fn add_assign(&mut self, w: Found) {
        self.hits += w.hits;
        self.bytes += w.bytes;
    }
}

/// Checks a string lookup's arguments (both backends): `Ok(None)` for no keys, else whether
/// `defaults` holds one row per key.
pub(super) fn check_find_strings_args(
    row: usize,
    n: usize,
    dim: usize,
    defaults: &Rows<'_>,
) -> Result<Option<bool>> {
    if row != 0 {
        return Err(Error::invalid("fixed-size values are looked up with find"));
    }
    if n == 0 {
        return Ok(None);
    }
    if defaults.is_empty() {
        return Err(Error::invalid(format!(
            "default_value needs at least dim = {dim} elements"
        )));
    }
    Ok(Some(defaults.len() == n))
}
