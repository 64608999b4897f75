//! Export and import on the embedded backend: checkpoints per `table_store_mode` 0 and 2
//! (mode 1, files of the table's own, is `memory_files.rs`, run by `Table` before these). TFRA's `save_to_file_system` files are written for both
//! backends by `files_io.rs`.

use super::embedded::MemTable;
use super::export::{copy_exact, rows_into};
use super::{ExportPlan, Exported};
use crate::codec::{Keys, Rows};
use crate::config::StoreMode;
use crate::error::Result;

impl MemTable {
    /// Checkpoint save: the rows in mode 0 (shard 1 only), nothing in mode 2.
    pub(super) fn export(&self) -> Result<Exported> {
        let mut ex = Exported::empty(self.spec.key_type);
        match self.cfg.table_store_mode {
            StoreMode::Tensors if self.spec.shard.reports_shared_rows() => {}
            _ => return Ok(ex),
        }
        let form = (self.storage, self.row, self.tensor_row());
        self.store
            .for_each(|k, v| ex.push_stored(&self.spec, form, k, v))?;
        Ok(ex)
    }

    /// Room for [`MemTable::export_into`], or None when [`MemTable::export`] is used.
    pub(super) fn export_capacity(&self) -> Result<Option<usize>> {
        let streamable = self.cfg.table_store_mode == StoreMode::Tensors
            && self.spec.shard.reports_shared_rows()
            && self.row > 0
            && self.spec.key_type.width().is_some();
        let n = self.store.rows() as usize;
        Ok(streamable.then_some(n + n / 100 + 1024))
    }

    /// The export op's first step (see [`super::Table::export_plan`]).
    pub(super) fn export_plan(&self) -> Result<ExportPlan> {
        Ok(match self.export_capacity()? {
            Some(capacity) => ExportPlan::streaming(capacity),
            None => ExportPlan::read(self.export()?),
        })
    }

    /// The export op's second step (see [`super::Table::export_fill`]).
    pub(super) fn export_fill(
        &self,
        plan: &ExportPlan,
        keys_out: &mut [u8],
        values_out: &mut [u8],
    ) -> Result<usize> {
        let Some(ex) = plan.exported() else {
            return self.export_into(keys_out, values_out);
        };
        if self.spec.key_type.width().is_some() {
            copy_exact("key", &ex.keys, keys_out)?;
        }
        if self.row > 0 {
            copy_exact("value", &ex.values, values_out)?;
        }
        Ok(ex.len)
    }

    /// Every row straight into the caller's buffers; Conflict if they are too small.
    pub(super) fn export_into(&self, keys_out: &mut [u8], values_out: &mut [u8]) -> Result<usize> {
        let form = (&self.spec, self.storage, self.tensor_row());
        rows_into(form, keys_out, values_out, |f| self.store.for_each(f))
    }

    /// Checkpoint restore: mode 0 upserts (the table is not cleared first, as in TFRA), mode 2
    /// keeps what the process holds.
    pub(super) fn import(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        match self.cfg.table_store_mode {
            StoreMode::Tensors => self.insert(keys, values),
            _ => Ok(()),
        }
    }
}
