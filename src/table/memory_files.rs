//! `table_store_mode` 1 on the embedded backend. On Redis, mode 1 DUMPs each bucket to
//! `<model_lib_abs_dir>/<model_tag>/<bucket>.rdb`; a memory table has no buckets to DUMP, so it
//! keeps the same promise with its own files in the same directory: on a checkpoint save its
//! rows go to `<name>.rows-keys` / `-values` (TFRA's file format, [`crate::persist::files`])
//! under `model_tag_runtime`, and a restore replaces the table's rows with those under
//! `model_tag_import`. The checkpoint itself holds empty tensors, as on Redis.

use std::path::PathBuf;

use super::Table;
use crate::error::{Error, Result};
use crate::persist::rdb;

/// Rows buffered per write while saving (bounds the memory of a save).
const SAVE_BUFFER_ROWS: usize = 65_536;

impl Table {
    /// The directory and file name prefix of this table's mode-1 files for `model_tag`.
    fn memory_files(&self, model_tag: &str) -> Result<(PathBuf, String)> {
        let dir = rdb::dir(&self.config().model_lib_abs_dir, model_tag)?;
        let name = rdb::encode_name(self.spec().embedding_name.as_bytes());
        Ok((dir, format!("{name}.rows")))
    }

    /// Checkpoint save of a mode-1 memory table: its rows to its files (shard 1 only; the
    /// other shards share its rows).
    pub(super) fn save_memory_files(&self) -> Result<()> {
        if !self.spec().shard.reports_shared_rows() {
            return Ok(());
        }
        let (dir, name) = self.memory_files(&self.config().model_tag_runtime)?;
        let rows = self.save_to_files(&dir, &name, false, SAVE_BUFFER_ROWS)?;
        log::info!(
            "saved {rows} row(s) of memory table {} to {}",
            self.spec().embedding_name,
            dir.join(name).display()
        );
        Ok(())
    }

    /// Checkpoint restore of a mode-1 memory table: the rows become exactly those of its
    /// files (a missing file is NotFound naming it, and the table is then left as it was).
    /// The checkpoint's own tensors are ignored, as a mode-1 restore on Redis ignores them.
    pub(super) fn restore_memory_files(&self) -> Result<()> {
        if !self.spec().shard.reports_shared_rows() {
            return Ok(());
        }
        let (dir, name) = self.memory_files(&self.config().model_tag_import)?;
        let base = dir.join(&name);
        for suffix in ["-keys", "-values"] {
            let mut path = base.clone().into_os_string();
            path.push(suffix);
            let path = PathBuf::from(path);
            std::fs::metadata(&path)
                .map_err(|e| Error::file("table_store_mode 1 restore: cannot read", &path, e))?;
        }
        self.clear()?;
        self.load_from_files(&dir, &name, false, SAVE_BUFFER_ROWS)?;
        Ok(())
    }
}
