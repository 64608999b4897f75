//! `Table`: one embedding table in Redis. Each operation plans its keys (dedup, bucket,
//! chunk), runs the pipelines on pooled connections, and merges the replies by position.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::accum;
use crate::codec::{check_pair, decode_str_row, KeyType, Keys, Rows, Storage, ValueType};
use crate::config::{Config, StoreMode};
use crate::conn::{Conn, Reply};
use crate::dispatch::{self, Retry};
use crate::error::{Error, ErrorKind, Result};
use crate::exec;
use crate::files;
use crate::layout::{self, display_bytes, Buckets};
use crate::layout_store::{self, Layout};
use crate::plan::{Chunk, Plan};
use crate::progress::Progress;
use crate::rdb;
use crate::rehash::Mover;
use crate::route::{Access, Router};
use crate::stats;
use crate::sync;

mod scan;

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

/// Keys per round of a call: larger batches are processed window by window, which bounds the
/// write buffers and the dedup map (and keeps TFRA's last-write-wins order across windows).
const WINDOW: usize = 65_536;

/// For a call of `n` keys over one window: `None`, the caller works on them at once. Else
/// `f(a, b)` runs on each window `[a, b)` in order (so a key repeated across windows keeps
/// TFRA's last-write-wins), stopping at the first error.
fn in_windows(n: usize, mut f: impl FnMut(usize, usize) -> Result<()>) -> Option<Result<()>> {
    (n > WINDOW).then(|| {
        (0..n)
            .step_by(WINDOW)
            .try_for_each(|a| f(a, (a + WINDOW).min(n)))
    })
}

/// How many rows ahead of the one being encoded are prefetched.
const PREFETCH_ROWS: usize = 8;

/// Buckets of at most this many rows are exported with one HGETALL.
const GETALL_MAX_ROWS: usize = 65_536;

/// Rows asked for per HSCAN page when exporting (at least; `keys_sending_size` if larger).
const SCAN_PAGE_ROWS: usize = 4_096;

/// Read-compute-CAS rounds an accum may take when other writers keep changing its keys.
const ACCUM_CAS_ROUNDS: usize = 64;

/// After this many lost CAS rounds, the remaining keys are accumulated by the server-side
/// script (for the value types it handles).
const CAS_ROUNDS_BEFORE_SCRIPT: usize = 3;

/// The raw bytes of fixed-size rows.
fn deltas_bytes<'a>(rows: &Rows<'a>) -> &'a [u8] {
    match *rows {
        Rows::Fixed { data, .. } => data,
        Rows::Str { data, .. } => data,
    }
}

/// Rows per insert while loading files (bounds the memory of a load).
const LOAD_BATCH_ROWS: usize = 65_536;

/// One embedding table stored in Redis.
pub struct Table {
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
}

impl Table {
    /// Validates `spec` against `cfg`, connects, learns the topology and the bucket layout,
    /// and returns the table.
    pub fn open(cfg: Config, spec: TableSpec) -> Result<Table> {
        check_pair(spec.key_type, spec.value_type)?;
        if spec.dim == 0 {
            return Err(Error::invalid(
                "value_shape must have at least one element (dim = 0)",
            ));
        }
        let storage = cfg.rde_value_storage;
        if storage != Storage::Native && spec.value_type != ValueType::F32 {
            return Err(Error::invalid(format!(
                "rde_value_storage {storage:?} applies to float32 tables only, not {}",
                spec.value_type.tf_name()
            )));
        }
        let stored_vt = storage.stored_type(spec.value_type);
        let row = stored_vt.elem_size().map_or(0, |s| s * spec.dim);
        let router = Router::open(&cfg)?;
        let retry = Retry {
            attempts: cfg.rde_max_retries,
            backoff: Duration::from_millis(cfg.rde_retry_backoff_ms),
        };
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
        let t = Table {
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

    /// The table's spec.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// The config the table runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The runtime bucket names.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// Builds a key batch of this table's key type.
    pub fn keys<'a>(&self, data: &'a [u8], offsets: &'a [u64]) -> Result<Keys<'a>> {
        Keys::new(self.spec.key_type, data, offsets)
    }

    fn plan(&self, keys: &Keys<'_>) -> Plan {
        if self.layout.rule == layout_store::Rule::First {
            // TFRA's standalone and sentinel modes keep every row in bucket 0.
            return Plan::new(keys, 1, self.cfg.keys_sending_size, |_| 0);
        }
        let numeric = self.spec.key_type != KeyType::Str;
        let hashed = self.cfg.using_hash_storage_slice;
        Plan::new(keys, self.buckets.len(), self.cfg.keys_sending_size, |k| {
            self.layout.bucket_of(k, numeric, hashed)
        })
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

    /// Sends one command per chunk (built by `encode`, reply read by `decode`) to the
    /// servers owning the chunks' buckets; see [`crate::dispatch`].
    fn dispatch<E, D>(
        &self,
        chunks: &[Chunk],
        access: Access,
        idempotent: bool,
        encode: E,
        decode: D,
    ) -> Result<()>
    where
        E: Fn(&mut Conn, &Chunk) + Sync,
        D: Fn(&mut Conn, &Chunk) -> Result<()> + Sync,
    {
        dispatch::run(
            &self.router,
            chunks,
            |c| self.bucket_slots[c.bucket],
            access,
            idempotent,
            self.retry,
            encode,
            decode,
        )
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

    /// Looks up fixed-size values. `out` is `n × row` bytes; `defaults` is either one row per
    /// key (same size as `out`) or at least one row used for every missing key.
    pub fn find(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        exists: Option<&mut [u8]>,
    ) -> Result<()> {
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
        self.find_rows(keys, &dflt, &mut scratch, exists)?;
        for (o, s) in out.chunks_exact_mut(trow).zip(scratch.chunks_exact(srow)) {
            self.storage.decode(s, o);
        }
        Ok(())
    }

    fn find_rows(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        mut exists: Option<&mut [u8]>,
    ) -> Result<()> {
        let (n, row) = (keys.len(), self.row);
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
        if exists.as_ref().is_some_and(|e| e.len() != n) {
            return Err(Error::invalid("exists output must have one entry per key"));
        }
        if n == 0 {
            return Ok(());
        }
        let per_key = defaults.len() == out.len();
        if !per_key && defaults.len() < row {
            return Err(Error::invalid(format!(
                "default_value has {} elements; it needs at least dim = {} (or one row per key)",
                defaults.len() / self.spec.value_type.elem_size().unwrap_or(1),
                self.spec.dim
            )));
        }
        let windowed = in_windows(n, |a, b| {
            let d = if per_key {
                &defaults[a * row..b * row]
            } else {
                defaults
            };
            let e = exists.as_deref_mut().map(|e| &mut e[a..b]);
            self.find_rows(&keys.sub(a, b), d, &mut out[a * row..b * row], e)
        });
        if let Some(done) = windowed {
            return done;
        }
        let plan = self.plan(keys);
        let out_sh = Shared::new(out);
        let exists_sh = exists.map(Shared::new);
        self.dispatch(
            &plan.chunks,
            Access::Read,
            true,
            |c, ch| self.encode_hmget(c, ch, &plan.order, &plan, keys),
            |c, ch| {
                self.read_hmget_header(c, ch)?;
                // Each reply is scattered to every position of its key as it is read, so the
                // copies for duplicate keys and defaults overlap the server's work on the
                // next commands instead of following the last reply.
                // SAFETY (every `slice` below): the rows and flags written belong to the
                // occurrences of this chunk's distinct keys only, and each chunk is decoded
                // by one task at a time.
                for &d in &plan.order[ch.start..ch.end] {
                    let pos = plan.first[d as usize] as usize;
                    let hit = match c.read_bulk_len()? {
                        None => false,
                        Some(len) if len == row => true,
                        Some(len) => {
                            return Err(self.key_error(
                                self.bucket_name(ch),
                                keys.get(pos),
                                format!(
                                    "stored value has {len} bytes, expected dim {} × {} = {row}",
                                    self.spec.dim,
                                    self.spec.value_type.tf_name()
                                ),
                            ))
                        }
                    };
                    let found: Option<&[u8]> = if hit {
                        let dst = unsafe { out_sh.slice(pos * row, row) };
                        c.payload(dst)?;
                        Some(dst)
                    } else {
                        None
                    };
                    for p in plan.positions(d as usize) {
                        let from = match found {
                            Some(_) if p == pos => None, // read in place
                            Some(r) => Some(r),
                            None if per_key => Some(&defaults[p * row..(p + 1) * row]),
                            None => Some(&defaults[..row]),
                        };
                        if let Some(from) = from {
                            let dst = unsafe { out_sh.slice(p * row, row) };
                            dst.copy_from_slice(from);
                        }
                        if let Some(e) = &exists_sh {
                            let flag = unsafe { e.slice(p, 1) };
                            flag[0] = hit as u8;
                        }
                    }
                }
                Ok(())
            },
        )?;
        self.touch(&[]);
        Ok(())
    }

    /// Looks up string values. `defaults` holds one row per key or at least one row.
    /// Returns the `n × dim` elements and, per key, whether it was found.
    pub fn find_strings(&self, keys: &Keys<'_>, defaults: &Rows<'_>) -> Result<(StrRows, Vec<u8>)> {
        let _timer = stats::CallTimer::start();
        let (n, dim) = (keys.len(), self.spec.dim);
        if self.row != 0 {
            return Err(Error::invalid("fixed-size values are looked up with find"));
        }
        let mut rows = StrRows::new();
        if n == 0 {
            return Ok((rows, Vec::new()));
        }
        let drows = defaults.len();
        let per_key = drows == n;
        if drows == 0 {
            return Err(Error::invalid(format!(
                "default_value needs at least dim = {dim} elements"
            )));
        }
        let plan = self.plan(keys);
        // Each distinct key's stored row, with the bucket it was read from.
        type Stored = Option<(usize, Vec<u8>)>;
        let stored: Mutex<Vec<Stored>> = Mutex::new(vec![None; plan.distinct()]);
        self.dispatch(
            &plan.chunks,
            Access::Read,
            true,
            |c, ch| self.encode_hmget(c, ch, &plan.order, &plan, keys),
            |c, ch| {
                self.read_hmget_header(c, ch)?;
                for &d in &plan.order[ch.start..ch.end] {
                    let v = match c.read_bulk_len()? {
                        Some(len) => Some((ch.bucket, c.bulk(len)?)),
                        None => None,
                    };
                    sync::lock(&stored)[d as usize] = v;
                }
                Ok(())
            },
        )?;
        let stored = sync::into_inner(stored);
        let mut exists = vec![0u8; n];
        for (i, &d) in plan.of.iter().enumerate() {
            match &stored[d as usize] {
                Some((bucket, v)) => {
                    decode_str_row(v, dim, &mut rows.data, &mut rows.offsets).map_err(|why| {
                        self.key_error(
                            self.buckets.name(*bucket),
                            keys.get(i),
                            format!("stored string value is malformed: {why}"),
                        )
                    })?;
                    exists[i] = 1;
                }
                None => rows.push_from(defaults, if per_key { i } else { 0 }, dim),
            }
        }
        self.touch(&[]);
        Ok((rows, exists))
    }

    /// Upserts rows. Within one call a duplicated key keeps its last row.
    pub fn insert(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        match self.compact(values, keys.len(), "values")? {
            Some(stored) => self.insert_rows(
                keys,
                &Rows::Fixed {
                    data: &stored,
                    row: self.row,
                },
            ),
            None => self.insert_rows(keys, values),
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

    fn insert_rows(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        let n = keys.len();
        self.check_rows(values, n, "values")?;
        if n == 0 {
            return Ok(());
        }
        if let Some(done) = in_windows(n, |a, b| {
            self.insert_rows(&keys.sub(a, b), &values.sub(a, b))
        }) {
            return done;
        }
        let plan = self.plan(keys);
        self.dispatch(
            &plan.chunks,
            Access::Write,
            true,
            |c, ch| {
                c.begin(2 + 2 * (ch.end - ch.start));
                c.arg(b"HSET");
                c.arg(self.bucket_name(ch));
                let order = &plan.order[ch.start..ch.end];
                for (j, &d) in order.iter().enumerate() {
                    if let Some(&ahead) = order.get(j + PREFETCH_ROWS) {
                        values.prefetch(plan.last[ahead as usize] as usize);
                    }
                    let p = plan.last[d as usize] as usize;
                    c.arg(keys.get(p));
                    c.arg_header(values.encoded_len(p));
                    values.encode(p, c.buf());
                    c.arg_end();
                }
            },
            |c, _| c.read_int().map(|_| ()),
        )?;
        self.touch(&plan.chunks);
        Ok(())
    }

    /// TFRA's bp_v2 accumulate, atomic per command on the server (see [`crate::accum`]).
    pub fn accum(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<()> {
        let _timer = stats::CallTimer::start();
        match self.compact(deltas, keys.len(), "values_or_deltas")? {
            Some(stored) => self.accum_rows(
                keys,
                &Rows::Fixed {
                    data: &stored,
                    row: self.row,
                },
                exists,
            ),
            None => self.accum_rows(keys, deltas, exists),
        }
    }

    fn accum_rows(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<()> {
        let n = keys.len();
        let vt = self.stored_vt;
        if !accum::supports(vt) {
            return Err(Error::invalid(format!(
                "accum does not support {} values (supported: float, double, half, bfloat16, int8, int32, int64)",
                vt.tf_name()
            )));
        }
        self.check_rows(deltas, n, "values_or_deltas")?;
        if exists.len() != n {
            return Err(Error::invalid(format!(
                "exists has {} entries but there are {n} keys",
                exists.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        if let Some(done) = in_windows(n, |a, b| {
            self.accum_rows(&keys.sub(a, b), &deltas.sub(a, b), &exists[a..b])
        }) {
            return done;
        }
        let plan = self.plan(keys);
        let row = self.row;
        let kss = self.cfg.keys_sending_size;
        let mut todo = vec![true; plan.distinct()];
        for attempt in 0..=ACCUM_CAS_ROUNDS {
            if attempt >= CAS_ROUNDS_BEFORE_SCRIPT && accum::script_supports(vt) {
                // Contended keys: apply them inside the server, which always makes progress.
                self.accum_by_script(keys, deltas, exists, &plan, &todo)?;
                break;
            }
            if attempt > 0 {
                // Let the writers that won the last round get out of the way.
                std::thread::sleep(std::time::Duration::from_micros(200 * attempt as u64));
            }
            // 1. Read the current rows (from the master: they are the CAS baseline).
            let (order, chunks) = plan.subset(&todo, kss);
            if chunks.is_empty() {
                break;
            }
            let stored: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; plan.distinct()]);
            self.dispatch(
                &chunks,
                Access::Write,
                true,
                |c, ch| self.encode_hmget(c, ch, &order, &plan, keys),
                |c, ch| {
                    self.read_hmget_header(c, ch)?;
                    for &d in &order[ch.start..ch.end] {
                        let v = match c.read_bulk_len()? {
                            Some(len) if len == row => {
                                let mut v = vec![0u8; len];
                                c.payload(&mut v)?;
                                Some(v)
                            }
                            Some(len) => {
                                return Err(self.key_error(
                                    self.bucket_name(ch),
                                    keys.get(plan.first[d as usize] as usize),
                                    format!("stored value has {len} bytes, expected {row}; nothing was accumulated for it"),
                                ))
                            }
                            None => None,
                        };
                        sync::lock(&stored)[d as usize] = v;
                    }
                    Ok(())
                },
            )?;
            // 2. Fold each key's occurrences into its row, client-side.
            let stored = sync::into_inner(stored);
            let mut updates: Vec<Option<Vec<u8>>> = vec![None; plan.distinct()];
            let delta_bytes = deltas_bytes(deltas);
            for &d in &order {
                let d = d as usize;
                let ops = plan
                    .positions(d)
                    .map(|p| (exists[p] != 0, &delta_bytes[p * row..(p + 1) * row]));
                updates[d] = accum::fold(vt, stored[d].as_deref(), ops);
                todo[d] = updates[d].is_some();
            }
            // 3. Write each new row only if the key still holds what it was computed from.
            let (cas_order, cas_chunks) = plan.subset(&todo, kss);
            if cas_chunks.is_empty() {
                break;
            }
            let lost: Mutex<Vec<u32>> = Mutex::new(Vec::new());
            // Not idempotent: a CAS whose connection failed after sending may have applied, so
            // it is reported, never resent. Redirected or refused commands are resent.
            self.dispatch(
                &cas_chunks,
                Access::Write,
                false,
                |c, ch| {
                    c.begin(4 + 3 * (ch.end - ch.start));
                    c.arg(b"EVAL");
                    c.arg(accum::CAS_SCRIPT.as_bytes());
                    c.arg(b"1");
                    c.arg(self.bucket_name(ch));
                    for &d in &cas_order[ch.start..ch.end] {
                        let d = d as usize;
                        c.arg(keys.get(plan.first[d] as usize));
                        match &stored[d] {
                            Some(old) => {
                                c.arg_header(1 + old.len());
                                c.buf().push(1);
                                c.buf().extend_from_slice(old);
                                c.arg_end();
                            }
                            None => c.arg(&[0]),
                        }
                        c.arg(updates[d].as_deref().unwrap_or_default());
                    }
                },
                |c, ch| {
                    let Reply::Array(failed) = c.read_reply()? else {
                        return Err(Error::new(
                            ErrorKind::Server,
                            "accum: the CAS script replied with a non-array",
                        ));
                    };
                    let mut lost = sync::lock(&lost);
                    for f in failed {
                        if let Reply::Int(i) = f {
                            if let Some(&d) =
                                cas_order.get(ch.start + (i as usize).saturating_sub(1))
                            {
                                lost.push(d);
                            }
                        }
                    }
                    Ok(())
                },
            )?;
            // Keys that lost a race are read and recomputed in the next round.
            todo.iter_mut().for_each(|t| *t = false);
            let lost = sync::into_inner(lost);
            if lost.is_empty() {
                break;
            }
            for d in lost {
                todo[d as usize] = true;
            }
            if attempt == ACCUM_CAS_ROUNDS {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "accum on {}: some keys kept changing under concurrent writers for {ACCUM_CAS_ROUNDS} rounds; the rest were applied",
                        self.spec.embedding_name
                    ),
                ));
            }
        }
        self.touch(&plan.chunks);
        Ok(())
    }

    /// Applies the occurrences of the keys marked in `todo` with [`accum::ADD_SCRIPT`].
    fn accum_by_script(
        &self,
        keys: &Keys<'_>,
        deltas: &Rows<'_>,
        exists: &[u8],
        plan: &Plan,
        todo: &[bool],
    ) -> Result<()> {
        let vt = self.stored_vt;
        let (order, chunks) = plan.subset(todo, self.cfg.keys_sending_size);
        let occurrences = |d: u32| plan.positions(d as usize);
        self.dispatch(
            &chunks,
            Access::Write,
            false,
            |c, ch| {
                let ds = &order[ch.start..ch.end];
                let flags: Vec<u8> = ds
                    .iter()
                    .flat_map(|&d| occurrences(d).map(|p| (exists[p] != 0) as u8))
                    .collect();
                let pairs = flags.len();
                c.begin(6 + 2 * pairs);
                c.arg(b"EVAL");
                c.arg(accum::ADD_SCRIPT.as_bytes());
                c.arg(b"1");
                c.arg(self.bucket_name(ch));
                c.arg(vt.tf_name().as_bytes());
                c.arg(&flags);
                for &d in ds {
                    for p in occurrences(d) {
                        c.arg(keys.get(p));
                        c.arg_header(deltas.encoded_len(p));
                        deltas.encode(p, c.buf());
                        c.arg_end();
                    }
                }
            },
            |c, ch| {
                let reply = c.read_reply()?;
                let (pair, len) = match accum::script_result(&reply) {
                    Some(accum::ScriptResult::Applied) => return Ok(()),
                    Some(accum::ScriptResult::WrongLength { pair, len }) => (pair, len),
                    None => return Err(c.protocol(format!("the accum script replied {reply:?}"))),
                };
                let p = order[ch.start..ch.end].iter().flat_map(|&d| occurrences(d)).nth(pair.wrapping_sub(1));
                match p {
                    Some(p) => Err(self.key_error(
                        self.bucket_name(ch),
                        keys.get(p),
                        format!("stored value has {len} bytes, expected {}; the command holding this key was not applied", self.row),
                    )),
                    None => Err(c.protocol(format!("the accum script named pair {pair}, beyond the command"))),
                }
            },
        )
    }

    /// Deletes keys; missing keys are ignored.
    pub fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(done) = in_windows(keys.len(), |a, b| self.remove(&keys.sub(a, b))) {
            return done;
        }
        let plan = self.plan(keys);
        self.dispatch(
            &plan.chunks,
            Access::Write,
            true,
            |c, ch| {
                c.begin(2 + ch.end - ch.start);
                c.arg(b"HDEL");
                c.arg(self.bucket_name(ch));
                for &d in &plan.order[ch.start..ch.end] {
                    c.arg(keys.get(plan.first[d as usize] as usize));
                }
            },
            |c, _| c.read_int().map(|_| ()),
        )?;
        self.touch(&[]);
        Ok(())
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
        self.dispatch(
            &chunks,
            access,
            true,
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
        )?;
        Ok(sync::into_inner(replies))
    }

    fn all_buckets(&self) -> Vec<usize> {
        (0..self.buckets.len()).collect()
    }

    /// Applies `expire_model_tag_in_seconds` when the table opens: a positive value arms a
    /// TTL on this table's own buckets (never a prefix glob), anything else removes it.
    fn arm_ttl_on_open(&self) -> Result<()> {
        let secs = self.cfg.expire_model_tag_in_seconds;
        let all = self.all_buckets();
        if secs > 0 {
            let r = self.per_bucket(
                &all,
                b"EXPIRE",
                &[secs.to_string().as_bytes()],
                Access::Write,
            )?;
            self.note_armed(&all, &r);
        } else {
            // Only buckets that carry a TTL are changed, so a read-only (serving) user with
            // TTLs off can open the table.
            let ttl = self.per_bucket(&all, b"TTL", &[], Access::Write)?;
            let expiring: Vec<usize> = all.iter().copied().filter(|&b| ttl[b] >= 0).collect();
            if !expiring.is_empty() {
                match self.per_bucket(&expiring, b"PERSIST", &[], Access::Write) {
                    // A serving user may read but not change TTLs: the rows keep the TTL
                    // their writer gave them, which is the writer's decision to make.
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => log::warn!(
                        "table {:?}: expire_model_tag_in_seconds <= 0 asks to remove the TTL of {} bucket(s), but {e}; they keep their TTL",
                        self.spec.embedding_name,
                        expiring.len()
                    ),
                    r => {
                        r?;
                    }
                }
            }
        }
        *sync::lock(&self.ttl_last) = std::time::Instant::now();
        Ok(())
    }

    fn note_armed(&self, which: &[usize], replies: &[i64]) {
        for &b in which {
            self.ttl_armed[b].store(replies[b] == 1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Keeps the TTL rolling while the table is used: after a write, buckets that have no TTL
    /// yet (created by that write) get one; and every `min(ttl / 4, 60 s)` all buckets are
    /// pushed out again. A process that dies therefore leaves data that expires `ttl` seconds
    /// after its last use, with no clean shutdown needed.
    fn touch(&self, written: &[Chunk]) {
        let secs = self.cfg.expire_model_tag_in_seconds;
        if secs <= 0 {
            return;
        }
        let arg = secs.to_string();
        let every = std::time::Duration::from_secs((secs as u64 / 4).clamp(1, 60));
        let due = {
            let mut last = sync::lock(&self.ttl_last);
            let due = last.elapsed() >= every;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        let mut which: Vec<usize> = if due {
            self.all_buckets()
        } else {
            written
                .iter()
                .map(|c| c.bucket)
                .filter(|&b| !self.ttl_armed[b].load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        };
        which.sort_unstable();
        which.dedup();
        if which.is_empty() {
            return;
        }
        match self.per_bucket(&which, b"EXPIRE", &[arg.as_bytes()], Access::Write) {
            Ok(r) => self.note_armed(&which, &r),
            Err(e) => log::warn!(
                "could not refresh the TTL of {}: {e}",
                self.spec.embedding_name
            ),
        }
    }

    /// Deletes every runtime bucket of this table (optimizer-slot tables are separate tables).
    pub fn clear(&self) -> Result<()> {
        self.per_bucket(&self.all_buckets(), b"UNLINK", &[], Access::Write)?;
        self.note_armed(&self.all_buckets(), &vec![0; self.buckets.len()]);
        Ok(())
    }

    /// Number of rows over all runtime buckets (0 on shards other than the first, see
    /// [`Shard`]).
    pub fn size(&self) -> Result<i64> {
        if !self.spec.shard.reports_shared_rows() {
            return Ok(0);
        }
        Ok(self
            .per_bucket(&self.all_buckets(), b"HLEN", &[], Access::Read)?
            .iter()
            .sum())
    }

    /// Checkpoint save. Mode 0: the whole table (shard 1 only, see [`Shard`]). Mode 1: each
    /// bucket DUMPed to its file (see [`crate::rdb`]) and empty tensors. Mode 2: empty tensors.
    pub fn export(&self) -> Result<Exported> {
        let shared = self.spec.shard.reports_shared_rows();
        match self.cfg.table_store_mode {
            StoreMode::Tensors if shared => self.export_rows(),
            StoreMode::RdbFiles if shared => {
                self.dump_buckets()?;
                Ok(self.empty_export())
            }
            _ => Ok(self.empty_export()),
        }
    }

    fn dump_buckets(&self) -> Result<()> {
        let dir = rdb::dir(&self.cfg.model_lib_abs_dir, &self.cfg.model_tag_runtime)?;
        // One bucket's file is written while the server dumps the next; each worker holds
        // one bucket's payload.
        self.each_bucket_in_parallel(&self.all_buckets(), |i| {
            let b = self.buckets.name(i);
            let payload =
                match layout_store::call(&self.router, self.retry, b, Access::Read, &[b"DUMP", b])?
                {
                    Reply::Bulk(p) => p,
                    Reply::Nil => Vec::new(), // an empty bucket: an empty file
                    other => {
                        return Err(Error::new(
                            ErrorKind::Server,
                            format!("DUMP of {} replied {other:?}", display_bytes(b)),
                        ))
                    }
                };
            rdb::write_file(&dir.join(rdb::file_name(b)), &payload)
        })?;
        exec::trim_heap();
        log::info!(
            "saved {} bucket(s) of {} to {}",
            self.buckets.len(),
            self.spec.embedding_name,
            dir.display()
        );
        Ok(())
    }

    /// Mode 1 restore: every import bucket's file is RESTOREd (REPLACE) into the runtime
    /// bucket of the same tag; when the import and runtime layouts differ, into a staging
    /// bucket that is then rehashed into the runtime layout. An empty file empties its bucket.
    fn restore_buckets(&self) -> Result<()> {
        let cfg = &self.cfg;
        let dir = rdb::dir(&cfg.model_lib_abs_dir, &cfg.model_tag_import)?;
        let name = &self.spec.embedding_name;
        let import = layout_store::import_layout(cfg, name, &self.router, self.retry)?;
        let runtime_prefix =
            layout::prefix(&cfg.model_tag_runtime, name, cfg.using_md5_prefix_name);
        // The import buckets under the runtime prefix: the runtime layout itself when the tags
        // and rule agree, else a staging layout to rehash from.
        let staging = Layout {
            buckets: Buckets::new(&runtime_prefix, &import.tags),
            ..import.clone()
        };
        let direct = staging.buckets == self.buckets && staging.rule == self.layout.rule;
        if !direct {
            self.per_bucket(&self.all_buckets(), b"UNLINK", &[], Access::Write)?;
        }
        for (src, dst) in import.buckets.names().iter().zip(staging.buckets.names()) {
            let payload = rdb::read_file(&dir.join(rdb::file_name(src)))?;
            if payload.is_empty() {
                layout_store::call(
                    &self.router,
                    self.retry,
                    dst,
                    Access::Write,
                    &[b"UNLINK", dst],
                )?;
            } else {
                layout_store::call(
                    &self.router,
                    self.retry,
                    dst,
                    Access::Write,
                    &[b"RESTORE", dst, b"0", &payload, b"REPLACE"],
                )
                .map_err(|e| {
                    e.context(format!(
                        "restoring {} from {}",
                        display_bytes(dst),
                        dir.display()
                    ))
                })?;
            }
        }
        if !direct {
            let mover = Mover {
                router: &self.router,
                retry: self.retry,
                batch: cfg.keys_sending_size,
                numeric: self.spec.key_type != KeyType::Str,
                hashed: cfg.using_hash_storage_slice,
                name,
            };
            mover.migrate("rehash after restore", &staging, &self.layout, true)?;
        }
        self.note_armed(&self.all_buckets(), &vec![0; self.buckets.len()]);
        self.touch(&self.bucket_chunks());
        Ok(())
    }

    fn empty_export(&self) -> Exported {
        Exported {
            key_offsets: self.empty_key_offsets(),
            str_values: StrRows::new(),
            ..Default::default()
        }
    }

    fn empty_key_offsets(&self) -> Vec<u64> {
        if self.spec.key_type == KeyType::Str {
            vec![0]
        } else {
            Vec::new()
        }
    }

    /// Streams every row of the table, one HSCAN page per bucket per round (all buckets side
    /// by side), checking each row's key width and value length before handing it to `f`.
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

    fn export_rows(&self) -> Result<Exported> {
        let mut ex = self.empty_export();
        let width = self.spec.key_type.width();
        self.scan_rows(|_, k, v| {
            if self.row == 0 {
                decode_str_row(
                    v,
                    self.spec.dim,
                    &mut ex.str_values.data,
                    &mut ex.str_values.offsets,
                )
                .map_err(Error::data)?;
            } else {
                let at = ex.values.len();
                ex.values.resize(at + self.tensor_row(), 0);
                self.storage.decode(v, &mut ex.values[at..]);
            }
            ex.keys.extend_from_slice(k);
            if width.is_none() {
                ex.key_offsets.push(ex.keys.len() as u64);
            }
            ex.len += 1;
            Ok(())
        })?;
        Ok(ex)
    }

    /// Room to allocate for [`Table::export_into`]: `Some(rows)` (the row count plus headroom
    /// for rows added meanwhile) when keys and values have fixed sizes and the export returns
    /// rows; `None` when [`Table::export`] must be used instead.
    pub fn export_capacity(&self) -> Result<Option<usize>> {
        let streamable = self.cfg.table_store_mode == StoreMode::Tensors
            && self.spec.shard.reports_shared_rows()
            && self.row > 0
            && self.spec.key_type.width().is_some();
        if !streamable {
            return Ok(None);
        }
        let n = self.size()?.max(0) as usize;
        Ok(Some(n + n / 100 + 1024))
    }

    /// Streams the whole table straight into caller-allocated key and value buffers (no
    /// intermediate copy) and returns the number of rows written. Fails with
    /// [`ErrorKind::Conflict`] if the table grew past the buffers meanwhile.
    pub fn export_into(&self, keys_out: &mut [u8], values_out: &mut [u8]) -> Result<usize> {
        let width = self
            .spec
            .key_type
            .width()
            .ok_or_else(|| Error::invalid("export_into needs fixed-size keys"))?;
        let row = self.tensor_row();
        if row == 0 {
            return Err(Error::invalid("export_into needs fixed-size values"));
        }
        let cap = (keys_out.len() / width).min(values_out.len() / row);
        let mut n = 0usize;
        self.scan_rows(|_, k, v| {
            if n == cap {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "table {} grew past {cap} rows while it was exported; retry the export",
                        self.spec.embedding_name
                    ),
                ));
            }
            keys_out[n * width..(n + 1) * width].copy_from_slice(k);
            self.storage
                .decode(v, &mut values_out[n * row..(n + 1) * row]);
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Writes the table to `<dir>/<file_name>-keys` and `-values` (TFRA's layout; see
    /// [`crate::files`]), appending or replacing them atomically. Shards other than the first
    /// write empty files (they share the first shard's rows). Returns the rows written.
    pub fn save_to_files(
        &self,
        dir: &std::path::Path,
        file_name: &str,
        append: bool,
        buffer_rows: usize,
    ) -> Result<u64> {
        let row_hint = if self.row > 0 {
            self.row
        } else {
            64 * self.spec.dim
        };
        let mut w = files::Writer::create(
            dir,
            file_name,
            append,
            self.spec.key_type,
            row_hint,
            buffer_rows,
        )?;
        let mut rows = 0u64;
        let mut wide = Vec::new();
        if self.spec.shard.reports_shared_rows() {
            let total = self.size()?.max(0) as u64;
            let what = format!(
                "save {} to {}",
                self.spec.embedding_name,
                dir.join(file_name).display()
            );
            let mut progress = Progress::new(what, total);
            self.scan_rows(|_, k, v| {
                if self.storage == Storage::Native {
                    w.row(k, v)?;
                } else {
                    wide.resize(self.tensor_row(), 0);
                    self.storage.decode(v, &mut wide);
                    w.row(k, &wide)?;
                }
                rows += 1;
                progress.add(1, (k.len() + v.len()) as u64);
                Ok(())
            })?;
            progress.log();
        }
        w.finish()?;
        Ok(rows)
    }

    /// Upserts the rows of `<dir>/<file_name>-keys`/`-values` (or, with `entire_dir`, of every
    /// file pair in `dir` sharing the name up to `_mht_`), `buffer_rows` rows at a time.
    pub fn load_from_files(
        &self,
        dir: &std::path::Path,
        file_name: &str,
        entire_dir: bool,
        buffer_rows: usize,
    ) -> Result<u64> {
        let mut rows = 0u64;
        for base in files::load_paths(dir, file_name, entire_dir)? {
            let what = format!("load {} from {}", self.spec.embedding_name, base.display());
            let mut keys_file = base.as_os_str().to_owned();
            keys_file.push("-keys");
            let total = match (self.spec.key_type.width(), std::fs::metadata(&keys_file)) {
                (Some(w), Ok(m)) => m.len() / w as u64,
                _ => 0,
            };
            let mut progress = Progress::new(what, total);
            rows += files::read_pair(
                &base,
                self.spec.key_type,
                self.spec.dim,
                self.tensor_row(),
                buffer_rows.min(LOAD_BATCH_ROWS),
                |k, r| {
                    self.insert(k, r)?;
                    let bytes = match r {
                        Rows::Fixed { data, .. } => data.len(),
                        Rows::Str { data, .. } => data.len(),
                    };
                    progress.add(k.len() as u64, bytes as u64);
                    Ok(())
                },
            )?;
            progress.log();
        }
        Ok(rows)
    }

    /// Checkpoint restore. Mode 0 upserts the rows (the table is not cleared first, as in
    /// TFRA); mode 1 restores the bucket files; mode 2 keeps what is in Redis. A model-tag copy
    /// (model_tag_import ≠ model_tag_runtime) happens when the table opens.
    pub fn import(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        match self.cfg.table_store_mode {
            StoreMode::Tensors => self.insert(keys, values),
            StoreMode::RdbFiles if self.spec.shard.reports_shared_rows() => self.restore_buckets(),
            _ => Ok(()),
        }
    }
}

/// Copies the model version `model_tag_import` into this table's runtime buckets when the
/// runtime version is empty (or an earlier copy was interrupted). The source is left as is.
fn copy_model_tag(
    cfg: &Config,
    spec: &TableSpec,
    router: &Router,
    retry: Retry,
    mover: &Mover<'_>,
    target: &Layout,
) -> Result<()> {
    let source = layout_store::import_layout(cfg, &spec.embedding_name, router, retry)?;
    let runtime_prefix = layout::prefix(
        &cfg.model_tag_runtime,
        &spec.embedding_name,
        cfg.using_md5_prefix_name,
    );
    let mut marker = b"rde-copy:".to_vec();
    marker.extend(layout_store::record_key(&runtime_prefix));
    let interrupted = !matches!(
        layout_store::call(router, retry, &marker, Access::Write, &[b"GET", &marker])?,
        Reply::Nil
    );
    if !interrupted && mover.count(target)? > 0 {
        return Ok(());
    }
    let n_src = mover.count(&source)?;
    if n_src == 0 {
        return Ok(());
    }
    layout_store::call(
        router,
        retry,
        &marker,
        Access::Write,
        &[b"SET", &marker, cfg.model_tag_import.as_bytes()],
    )?;
    mover.migrate("model-tag copy", &source, target, false)?;
    let n_dst = mover.count(target)?;
    if n_dst < n_src {
        return Err(Error::data(format!(
            "model-tag copy {:?} → {:?} of {:?}: {n_src} rows in the source but only {n_dst} in the copy",
            cfg.model_tag_import, cfg.model_tag_runtime, spec.embedding_name
        )));
    }
    layout_store::call(router, retry, &marker, Access::Write, &[b"DEL", &marker])?;
    Ok(())
}
