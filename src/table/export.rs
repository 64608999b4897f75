//! Checkpoint save as tensors: `export` (per `table_store_mode`) and `export_into` (straight
//! into caller-allocated buffers), and the choice between them that the export op makes
//! ([`Table::export_plan`], [`Table::export_fill`]). The rows are streamed by [`super::scan`].

use std::time::Instant;

use super::stats::Op;
use super::{Exported, RedisTable, StrRows, TableSpec};
use crate::codec::{decode_str_row, KeyType, Storage};
use crate::config::StoreMode;
use crate::error::{Error, ErrorKind, Result};

/// How an export reaches the op's output buffers, as [`Table::export_plan`] chose it, and
/// when the export started (the table's statistics time both steps as one export).
#[derive(Debug)]
pub struct ExportPlan {
    way: Way,
    started: Instant,
}

#[derive(Debug)]
enum Way {
    /// Fixed-size keys and values: the rows stream straight into the caller's buffers (the
    /// outputs are then the filled prefix of them).
    Stream {
        /// Rows to allocate: the row count plus headroom for rows added meanwhile.
        capacity: usize,
    },
    /// The rows, already read ([`Table::export`]): string keys or values, or the empty export
    /// of `table_store_mode` 1 and 2 and of shards other than the first.
    Rows(Exported),
}

impl Exported {
    /// No rows, for keys of `key_type`.
    pub(super) fn empty(key_type: KeyType) -> Exported {
        Exported {
            key_offsets: if key_type == KeyType::Str {
                vec![0]
            } else {
                Vec::new()
            },
            str_values: StrRows::new(),
            ..Default::default()
        }
    }

    /// Appends one stored row of a table of `spec`, widened to its tensor form. `form` is the
    /// storage, the stored bytes per row (0 for string values) and the tensor bytes per row.
    pub(super) fn push_stored(
        &mut self,
        spec: &TableSpec,
        form: (Storage, usize, usize),
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let (storage, row, tensor_row) = form;
        if row == 0 {
            decode_str_row(
                value,
                spec.dim,
                &mut self.str_values.data,
                &mut self.str_values.offsets,
            )
            .map_err(Error::data)?;
        } else {
            let at = self.values.len();
            self.values.resize(at + tensor_row, 0);
            storage.decode(value, &mut self.values[at..]);
        }
        self.keys.extend_from_slice(key);
        if spec.key_type.width().is_none() {
            self.key_offsets.push(self.keys.len() as u64);
        }
        self.len += 1;
        Ok(())
    }
}

impl ExportPlan {
    /// A plan that streams `capacity` rows into the caller's buffers.
    pub(super) fn streaming(capacity: usize) -> ExportPlan {
        ExportPlan {
            way: Way::Stream { capacity },
            started: Instant::now(),
        }
    }

    /// A plan holding rows already read.
    pub(super) fn read(rows: Exported) -> ExportPlan {
        ExportPlan {
            way: Way::Rows(rows),
            started: Instant::now(),
        }
    }

    /// How many rows the caller allocates before [`Table::export_fill`].
    pub fn rows(&self) -> usize {
        match &self.way {
            Way::Stream { capacity } => *capacity,
            Way::Rows(ex) => ex.len,
        }
    }

    /// The rows read ahead, if the plan holds them (string keys and values are copied out of
    /// them by the caller, which owns the string tensors).
    pub fn exported(&self) -> Option<&Exported> {
        match &self.way {
            Way::Stream { .. } => None,
            Way::Rows(ex) => Some(ex),
        }
    }
}

impl RedisTable {
    /// The export op's first step: streams when keys and values have fixed sizes and the
    /// export returns rows ([`Table::export_capacity`]), else reads the rows now
    /// ([`Table::export`]). The caller then allocates [`ExportPlan::rows`] rows and calls
    /// [`Table::export_fill`].
    pub fn export_plan(&self) -> Result<ExportPlan> {
        let started = Instant::now();
        let way = self.export_capacity().and_then(|cap| {
            Ok(match cap {
                Some(capacity) => Way::Stream { capacity },
                None => Way::Rows(self.export()?),
            })
        });
        match way {
            Ok(way) => Ok(ExportPlan { way, started }),
            Err(e) => {
                self.stats.record(Op::Export, started.elapsed(), false);
                Err(e)
            }
        }
    }

    /// The export op's second step: writes the fixed-size keys and values of `plan` into
    /// buffers of [`ExportPlan::rows`] rows and returns the number of rows exported. String keys
    /// or values are not written here (the buffer for them is empty): the caller copies them
    /// from [`ExportPlan::exported`]. A fixed-size buffer of the wrong length is a bug, reported
    /// as [`ErrorKind::Internal`] rather than truncated.
    pub fn export_fill(
        &self,
        plan: &ExportPlan,
        keys_out: &mut [u8],
        values_out: &mut [u8],
    ) -> Result<usize> {
        let r = self.fill(plan, keys_out, values_out);
        self.stats
            .record(Op::Export, plan.started.elapsed(), r.is_ok());
        if let Ok(rows) = r {
            self.stats.read(match plan.exported() {
                Some(ex) if self.row == 0 => ex.str_values.data.len(),
                _ => rows * self.row,
            });
        }
        r
    }

    fn fill(&self, plan: &ExportPlan, keys_out: &mut [u8], values_out: &mut [u8]) -> Result<usize> {
        let ex = match &plan.way {
            Way::Stream { .. } => return self.export_into(keys_out, values_out),
            Way::Rows(ex) => ex,
        };
        if self.spec.key_type.width().is_some() {
            copy_exact("key", &ex.keys, keys_out)?;
        }
        if self.row > 0 {
            copy_exact("value", &ex.values, values_out)?;
        }
        Ok(ex.len)
    }

    /// Checkpoint save. Mode 0: the whole table (shard 1 only, see [`Shard`](super::Shard)).
    /// Mode 1: each bucket DUMPed to its file (see [`crate::persist::rdb`]) and empty tensors.
    /// Mode 2: empty tensors.
    pub fn export(&self) -> Result<Exported> {
        let shared = self.spec.shard.reports_shared_rows();
        match self.cfg.table_store_mode {
            StoreMode::Tensors if shared => self.export_rows(),
            StoreMode::RdbFiles if shared => {
                self.dump_buckets()?;
                Ok(Exported::empty(self.spec.key_type))
            }
            _ => Ok(Exported::empty(self.spec.key_type)),
        }
    }

    fn export_rows(&self) -> Result<Exported> {
        let mut ex = Exported::empty(self.spec.key_type);
        let form = (self.storage, self.row, self.tensor_row());
        self.scan_rows(|_, k, v| ex.push_stored(&self.spec, form, k, v))?;
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
        let row = self.tensor_row();
        let form = (&self.spec, self.storage, row);
        rows_into(form, keys_out, values_out, |f| {
            self.scan_rows(|_, k, v| f(k, v))
        })
    }
}

/// Copies exported bytes into an output buffer that must hold exactly them.
pub(super) fn copy_exact(what: &str, from: &[u8], to: &mut [u8]) -> Result<()> {
    if from.len() != to.len() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "exported {what} bytes ({}) do not match the {what} output ({} bytes)",
                from.len(),
                to.len()
            ),
        ));
    }
    to.copy_from_slice(from);
    Ok(())
}

/// The rows `each` calls back with (key, stored value), copied into caller-allocated buffers
/// for a table of `spec` with `storage` and `row` tensor bytes per row (both backends'
/// `export_into`). Returns the rows written; [`ErrorKind::Conflict`] if they outgrow the
/// buffers.
pub(super) fn rows_into(
    (spec, storage, row): (&TableSpec, Storage, usize),
    keys_out: &mut [u8],
    values_out: &mut [u8],
    each: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()>,
) -> Result<usize> {
    let width = spec
        .key_type
        .width()
        .ok_or_else(|| Error::invalid("export_into needs fixed-size keys"))?;
    if row == 0 {
        return Err(Error::invalid("export_into needs fixed-size values"));
    }
    let cap = (keys_out.len() / width).min(values_out.len() / row);
    let mut n = 0usize;
    each(&mut |k, v| {
        if n == cap {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "table {} grew past {cap} rows while it was exported; retry the export",
                    spec.embedding_name
                ),
            ));
        }
        keys_out[n * width..(n + 1) * width].copy_from_slice(k);
        storage.decode(v, &mut values_out[n * row..(n + 1) * row]);
        n += 1;
        Ok(())
    })?;
    Ok(n)
}
