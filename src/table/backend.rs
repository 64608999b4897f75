//! [`Table`]: one embedding table on the backend its config names (`rde_backend`): Redis
//! ([`RedisTable`]) or this process ([`MemTable`]). Every op has the same arguments and
//! semantics on both; callers (the TF bridge, the trainer) never see which one runs.

use super::embedded::MemTable;
use super::{ExportPlan, Exported, RedisTable, StrRows, TableSpec};
use crate::cluster::layout::Buckets;
use crate::codec::{check_pair, Keys, Rows, Storage, ValueType};
use crate::config::{Backend, Config, StoreMode};
use crate::error::{Error, Result};

/// The backend a table runs on.
enum Engine {
    Redis(Box<RedisTable>),
    Memory(Box<MemTable>),
}

/// One embedding table, in Redis or (with `rde_backend: "memory"`) in this process.
pub struct Table(Engine);

/// Runs the same call on whichever backend the table has.
macro_rules! either {
    ($self:ident, $t:ident => $call:expr) => {
        match &$self.0 {
            Engine::Redis($t) => $call,
            Engine::Memory($t) => $call,
        }
    };
}

/// The value bytes of `rows` as given (what the memory backend counts as written).
fn rows_bytes(rows: &Rows<'_>) -> usize {
    match rows {
        Rows::Fixed { data, .. } => data.len(),
        Rows::Str { data, .. } => data.len(),
    }
}

/// Checks `spec` against `cfg`; returns the value type rows are stored as.
pub(super) fn check_spec(cfg: &Config, spec: &TableSpec) -> Result<ValueType> {
    check_pair(spec.key_type, spec.value_type)?;
    if spec.dim == 0 {
        return Err(Error::invalid(
            "value_shape must have at least one element (dim = 0)",
        ));
    }
    if spec.embedding_name.contains(':') {
        // `<model tag>:<name>` would be ambiguous: tag "a" with name "b:c" and tag "a:b" with
        // name "c" would share their buckets. TF names never hold ':'.
        return Err(Error::invalid(format!(
            "table name {:?} holds ':', which separates the model tag from the embedding name \
             in Redis keys (`<model tag>:<name>{{tag}}`); choose a name without ':'",
            spec.embedding_name
        )));
    }
    let storage = cfg.rde_value_storage;
    if storage != Storage::Native && spec.value_type != ValueType::F32 {
        return Err(Error::invalid(format!(
            "rde_value_storage {storage:?} applies to float32 tables only, not {}",
            spec.value_type.tf_name()
        )));
    }
    Ok(storage.stored_type(spec.value_type))
}

impl Table {
    /// Validates `spec` against `cfg` and opens the table: on Redis, connects and learns the
    /// topology and bucket layout; in memory, joins the process's table of that model tag and
    /// name (created empty).
    pub fn open(cfg: Config, spec: TableSpec) -> Result<Table> {
        let stored_vt = check_spec(&cfg, &spec)?;
        Ok(Table(match cfg.rde_backend {
            Backend::Redis => Engine::Redis(Box::new(RedisTable::open(cfg, spec)?)),
            Backend::Memory => Engine::Memory(Box::new(MemTable::open(cfg, spec, stored_vt)?)),
        }))
    }

    /// The table's spec.
    pub fn spec(&self) -> &TableSpec {
        either!(self, t => &t.spec)
    }

    /// The config the table runs with.
    pub fn config(&self) -> &Config {
        either!(self, t => &t.cfg)
    }

    /// The runtime bucket names (on the memory backend, the names it would have on Redis).
    pub fn buckets(&self) -> &Buckets {
        either!(self, t => &t.buckets)
    }

    /// Builds a key batch of this table's key type.
    pub fn keys<'a>(&self, data: &'a [u8], offsets: &'a [u64]) -> Result<Keys<'a>> {
        Keys::new(self.spec().key_type, data, offsets)
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
        let stats = self.stats();
        stats.track(super::stats::Op::Find, || {
            let found = match &self.0 {
                Engine::Redis(t) => t.find_untracked(keys, defaults, out, exists)?,
                Engine::Memory(t) => t.find(keys, defaults, out, exists)?,
            };
            stats.looked_up(keys.len(), found.hits, found.bytes);
            Ok(())
        })
    }

    /// [`Table::find`] without the table's statistics (the training ops count their own).
    pub(crate) fn find_untracked(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        exists: Option<&mut [u8]>,
    ) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.find_untracked(keys, defaults, out, exists).map(|_| ()),
            Engine::Memory(t) => t.find(keys, defaults, out, exists).map(|_| ()),
        }
    }

    /// [`Table::insert`] without the table's statistics.
    pub(crate) fn insert_untracked(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.insert_untracked(keys, values).map(|_| ()),
            Engine::Memory(t) => t.insert(keys, values),
        }
    }

    /// This table's statistics (see [`super::stats`]). On the memory backend `rows_written`
    /// counts key positions (a key given twice in one call counts twice; Redis counts it
    /// once) and `retries` stays 0.
    pub fn stats(&self) -> &super::stats::TableStats {
        match &self.0 {
            Engine::Redis(t) => t.stats(),
            Engine::Memory(t) => &t.stats,
        }
    }

    /// Every statistic by name ([`super::stats::TableStats::snapshot`]), then `evicted_keys`:
    /// keys evicted since the table opened by servers that `rde_allow_eviction` let it open
    /// on although they can evict (one `INFO stats` per such server; always 0 otherwise, and
    /// on the memory backend, which never evicts).
    pub fn stats_snapshot(&self) -> Vec<(String, f64)> {
        let mut out = self.stats().snapshot();
        let evicted = match &self.0 {
            Engine::Redis(t) => t.evicted_keys(),
            Engine::Memory(_) => 0,
        };
        out.push(("evicted_keys".to_owned(), evicted as f64));
        out
    }

    /// The Redis table behind this one, if it runs on Redis (the trainer's one-pipeline path
    /// needs its layout).
    pub(super) fn redis(&self) -> Option<&RedisTable> {
        match &self.0 {
            Engine::Redis(t) => Some(t),
            Engine::Memory(_) => None,
        }
    }

    /// Looks up string values. `defaults` holds one row per key or at least one row.
    /// Returns the `n × dim` elements and, per key, whether it was found.
    pub fn find_strings(&self, keys: &Keys<'_>, defaults: &Rows<'_>) -> Result<(StrRows, Vec<u8>)> {
        match &self.0 {
            Engine::Redis(t) => t.find_strings(keys, defaults),
            Engine::Memory(t) => t.stats.track(super::stats::Op::Find, || {
                let (rows, exists) = t.find_strings(keys, defaults)?;
                let hits = exists.iter().filter(|&&e| e != 0).count();
                t.stats.looked_up(keys.len(), hits, 0);
                Ok((rows, exists))
            }),
        }
    }

    /// Upserts rows. Within one call a duplicated key keeps its last row.
    pub fn insert(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.insert(keys, values),
            Engine::Memory(t) => t.stats.track(super::stats::Op::Insert, || {
                t.insert(keys, values)?;
                t.stats.wrote(keys.len(), rows_bytes(values));
                Ok(())
            }),
        }
    }

    /// TFRA's bp_v2 accumulate (see [`crate::accum`]): per key in input order, a present key
    /// with `exists` gets the delta added, an absent key without `exists` is inserted.
    pub fn accum(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.accum(keys, deltas, exists),
            Engine::Memory(t) => t.stats.track(super::stats::Op::Accum, || {
                t.accum(keys, deltas, exists)?;
                t.stats.wrote(keys.len(), rows_bytes(deltas));
                Ok(())
            }),
        }
    }

    /// Deletes keys; missing keys are ignored.
    pub fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.remove(keys),
            Engine::Memory(t) => t.stats.track(super::stats::Op::Remove, || t.remove(keys)),
        }
    }

    /// Deletes every row of the table (optimizer-slot tables are separate tables).
    pub fn clear(&self) -> Result<()> {
        either!(self, t => t.clear())
    }

    /// Number of rows (0 on shards other than the first, see [`Shard`](super::Shard)).
    pub fn size(&self) -> Result<i64> {
        either!(self, t => t.size())
    }

    /// Checkpoint save per `table_store_mode` (docs/config.md). Mode 1 writes files: Redis
    /// DUMPs per bucket, or a memory table's rows (`memory_files.rs`).
    pub fn export(&self) -> Result<Exported> {
        if self.keeps_memory_files() {
            self.save_memory_files()?;
            return Ok(Exported::empty(self.spec().key_type));
        }
        either!(self, t => t.export())
    }

    /// True for a memory table in `table_store_mode` 1 (its checkpoints are files of its own).
    fn keeps_memory_files(&self) -> bool {
        matches!(self.0, Engine::Memory(_)) && self.config().table_store_mode == StoreMode::RdbFiles
    }

    /// The export op's first step: stream fixed-size rows, or read the rows now. The caller
    /// then allocates [`ExportPlan::rows`] rows and calls [`Table::export_fill`].
    pub fn export_plan(&self) -> Result<ExportPlan> {
        if self.keeps_memory_files() {
            return Ok(ExportPlan::read(self.export()?));
        }
        either!(self, t => t.export_plan())
    }

    /// The export op's second step: fills buffers of [`ExportPlan::rows`] rows and returns
    /// the number of rows exported (string keys or values are copied by the caller from
    /// [`ExportPlan::exported`]).
    pub fn export_fill(
        &self,
        plan: &ExportPlan,
        keys_out: &mut [u8],
        values_out: &mut [u8],
    ) -> Result<usize> {
        either!(self, t => t.export_fill(plan, keys_out, values_out))
    }

    /// Room to allocate for [`Table::export_into`], or None when [`Table::export`] is used.
    pub fn export_capacity(&self) -> Result<Option<usize>> {
        either!(self, t => t.export_capacity())
    }

    /// Streams the whole table into caller-allocated buffers; returns the rows written.
    pub fn export_into(&self, keys_out: &mut [u8], values_out: &mut [u8]) -> Result<usize> {
        either!(self, t => t.export_into(keys_out, values_out))
    }

    /// Checkpoint restore per `table_store_mode` (mode 0 upserts the rows).
    pub fn import(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        if self.keeps_memory_files() {
            return self.restore_memory_files();
        }
        either!(self, t => t.import(keys, values))
    }

    /// How rows are stored: the storage, stored bytes per row (0 for strings) and bytes per
    /// row in tensors (float32 even when stored compact).
    pub(super) fn stored_form(&self) -> (Storage, usize, usize) {
        either!(self, t => (t.storage, t.row, t.tensor_row()))
    }

    /// Calls `f(key, stored value)` once for every stored row (on Redis, bucket by bucket).
    pub(super) fn for_each_stored(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        match &self.0 {
            Engine::Redis(t) => t.scan_rows(|_, k, v| f(k, v)),
            Engine::Memory(t) => t.store.for_each(f),
        }
    }

    /// Which backend the table runs on.
    pub fn backend(&self) -> Backend {
        match self.0 {
            Engine::Redis(_) => Backend::Redis,
            Engine::Memory(_) => Backend::Memory,
        }
    }
}
