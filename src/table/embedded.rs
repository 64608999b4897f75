//! The ops on the embedded backend (`rde_backend: "memory"`): the same arguments, checks and
//! semantics as the Redis ops, over a [`crate::memory::Store`]. Rows are stored as Redis holds
//! them (compact float32 storage included), so export and files are the same bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Found, Shared, StrRows, TableSpec};
use crate::accum;
use crate::cluster::layout::Buckets;
use crate::codec::{decode_str_row, Keys, Rows, Storage, ValueType};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::memory::{registry, Layout, Store};
use crate::{stats, sync};

/// One table on the embedded backend.
pub(super) struct MemTable {
    pub(super) cfg: Config,
    pub(super) spec: TableSpec,
    /// The bucket names the table would have on Redis (for its description only).
    pub(super) buckets: Buckets,
    /// Bytes per stored row for fixed-size value types; 0 for strings.
    pub(super) row: usize,
    pub(super) storage: Storage,
    stored_vt: ValueType,
    pub(super) store: Arc<Store>,
    /// Counters and latency per op, kept by [`super::Table`]'s public ops.
    pub(super) stats: super::stats::TableStats,
}

impl MemTable {
    /// Opens (or joins, by model tag and name) the table's store; nothing connects.
    pub(super) fn open(cfg: Config, spec: TableSpec, stored_vt: ValueType) -> Result<MemTable> {
        let layout = Layout {
            key: spec.key_type,
            value: stored_vt,
            dim: spec.dim,
        };
        let store = registry::open(
            &cfg.model_tag_runtime,
            &spec.embedding_name,
            layout,
            cfg.rde_memory_max_rows,
        )?;
        log::debug!(
            "opened memory table {:?} (model tag {:?}); the TTL and model_tag_import do not apply",
            spec.embedding_name,
            cfg.model_tag_runtime
        );
        Ok(MemTable {
            buckets: Buckets::runtime(&cfg, &spec.embedding_name),
            row: layout.row().unwrap_or(0),
            storage: cfg.rde_value_storage,
            stored_vt,
            store,
            cfg,
            spec,
            stats: Default::default(),
        })
    }

    /// Bytes of one value row in tensors (float32 even when stored compact); 0 for strings.
    pub(super) fn tensor_row(&self) -> usize {
        match self.storage {
            Storage::Native => self.row,
            Storage::Bf16 | Storage::F16 => self.row * 2,
        }
    }

    /// `rows` checked against `n` keys, in stored form (converted for compact storage).
    fn stored<'a>(
        &self,
        rows: &Rows<'a>,
        n: usize,
        what: &str,
        buf: &'a mut Vec<u8>,
    ) -> Result<Rows<'a>> {
        let ok = match *rows {
            Rows::Fixed { data, row } => row == self.tensor_row() && data.len() == n * row,
            Rows::Str { offsets, dim, .. } => dim == self.spec.dim && offsets.len() == n * dim + 1,
        };
        if !ok {
            let vt = if self.storage == Storage::Native {
                self.spec.value_type
            } else {
                ValueType::F32
            };
            return Err(Error::invalid(format!(
                "{what} must hold {n} rows of {} {} elements",
                self.spec.dim,
                vt.tf_name()
            )));
        }
        match (*rows, self.storage) {
            (Rows::Fixed { data, row }, Storage::Bf16 | Storage::F16) => {
                buf.clear();
                for r in data.chunks_exact(row) {
                    self.storage.encode(r, buf);
                }
                Ok(Rows::Fixed {
                    data: buf,
                    row: self.row,
                })
            }
            _ => Ok(*rows),
        }
    }

    /// Looks up fixed-size values; see [`super::Table::find`].
    pub(super) fn find(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        exists: Option<&mut [u8]>,
    ) -> Result<Found> {
        let _timer = stats::CallTimer::start();
        let (n, row) = (keys.len(), self.tensor_row());
        let per_key = super::check_find_args(&self.spec, row, n, defaults, out, exists.as_deref())?;
        let (to, flags) = (Shared::new(out), exists.map(Shared::new));
        let (hits, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        self.store.get(keys, |p, stored| {
            // SAFETY: each position is written by exactly one call.
            let o = unsafe { to.slice(p * row, row) };
            match stored {
                Some(s) => {
                    hits.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(s.len(), Ordering::Relaxed);
                    self.storage.decode(s, o)
                }
                None if per_key => o.copy_from_slice(&defaults[p * row..(p + 1) * row]),
                None => o.copy_from_slice(&defaults[..row]),
            }
            if let Some(f) = &flags {
                unsafe { f.slice(p, 1)[0] = stored.is_some() as u8 };
            }
        })?;
        Ok(Found {
            hits: hits.into_inner(),
            bytes: bytes.into_inner(),
        })
    }

    /// Looks up string values; see [`super::Table::find_strings`].
    pub(super) fn find_strings(
        &self,
        keys: &Keys<'_>,
        defaults: &Rows<'_>,
    ) -> Result<(StrRows, Vec<u8>)> {
        let _timer = stats::CallTimer::start();
        let (n, dim) = (keys.len(), self.spec.dim);
        let mut rows = StrRows::new();
        let Some(per_key) = super::check_find_strings_args(self.row, n, dim, defaults)? else {
            return Ok((rows, Vec::new()));
        };
        let stored: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; n]);
        self.store
            .get(keys, |p, v| sync::lock(&stored)[p] = v.map(<[u8]>::to_vec))?;
        let mut exists = vec![0u8; n];
        for (i, v) in sync::into_inner(stored).into_iter().enumerate() {
            match v {
                Some(v) => {
                    decode_str_row(&v, dim, &mut rows.data, &mut rows.offsets).map_err(|why| {
                        Error::data(format!(
                            "memory table {:?} key {}: stored string value is malformed: {why}",
                            self.spec.embedding_name,
                            self.spec.key_type.display(keys.get(i))
                        ))
                    })?;
                    exists[i] = 1;
                }
                None => rows.push_from(defaults, if per_key { i } else { 0 }, dim),
            }
        }
        Ok((rows, exists))
    }

    /// Upserts rows; a duplicated key keeps its last row.
    pub(super) fn insert(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        let mut buf = Vec::new();
        let rows = self.stored(values, keys.len(), "values", &mut buf)?;
        self.store.put(keys, &rows)
    }

    /// TFRA's bp_v2 accumulate, atomic per key (see [`crate::memory::Store::accum`]).
    pub(super) fn accum(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<()> {
        let _timer = stats::CallTimer::start();
        let n = keys.len();
        if !accum::supports(self.stored_vt) {
            return Err(Error::invalid(format!(
                "accum does not support {} values (supported: float, double, half, bfloat16, int8, int32, int64)",
                self.stored_vt.tf_name()
            )));
        }
        let mut buf = Vec::new();
        let rows = self.stored(deltas, n, "values_or_deltas", &mut buf)?;
        if exists.len() != n {
            return Err(Error::invalid(format!(
                "exists has {} entries but there are {n} keys",
                exists.len()
            )));
        }
        let Rows::Fixed { data, .. } = rows else {
            return Err(Error::invalid("accum needs fixed-size values"));
        };
        self.store.accum(keys, data, exists)
    }

    /// Deletes keys; missing keys are ignored.
    pub(super) fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        self.store.remove(keys)
    }

    /// Deletes every row of the table (and of the tables sharing its name and tag).
    pub(super) fn clear(&self) -> Result<()> {
        self.store.clear();
        Ok(())
    }

    /// Number of rows (0 on shards other than the first, see [`super::Shard`]).
    pub(super) fn size(&self) -> Result<i64> {
        Ok(if self.spec.shard.reports_shared_rows() {
            self.store.rows() as i64
        } else {
            0
        })
    }
}
