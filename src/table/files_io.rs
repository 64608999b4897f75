//! `save_to_file_system` / `load_from_file_system` for both backends: TFRA's `-keys` /
//! `-values` files ([`crate::persist::files`]) written from every stored row, and read back
//! through `insert`, so a table moves between Redis and memory through them.

use std::path::Path;

use super::Table;
use crate::codec::{Rows, Storage};
use crate::error::Result;
use crate::persist::files;
use crate::progress::Progress;

/// Rows per insert while loading files (bounds the memory of a load).
const LOAD_BATCH_ROWS: usize = 65_536;

impl Table {
    /// Writes the table to `<dir>/<file_name>-keys` and `-values` (TFRA's layout; see
    /// [`crate::persist::files`]), appending or replacing them atomically. Shards other than
    /// the first write empty files (they share the first shard's rows). Returns the rows
    /// written.
    pub fn save_to_files(
        &self,
        dir: &Path,
        file_name: &str,
        append: bool,
        buffer_rows: usize,
    ) -> Result<u64> {
        let spec = self.spec();
        let (storage, row, tensor_row) = self.stored_form();
        let row_hint = if row > 0 { row } else { 64 * spec.dim };
        let mut w =
            files::Writer::create(dir, file_name, append, spec.key_type, row_hint, buffer_rows)?;
        let mut rows = 0u64;
        if spec.shard.reports_shared_rows() {
            let total = self.size()?.max(0) as u64;
            let what = format!(
                "save {} to {}",
                spec.embedding_name,
                dir.join(file_name).display()
            );
            let mut progress = Progress::new(what, total);
            let mut wide = vec![0u8; tensor_row];
            self.for_each_stored(|k, v| {
                if storage == Storage::Native {
                    w.row(k, v)?;
                } else {
                    storage.decode(v, &mut wide);
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
        dir: &Path,
        file_name: &str,
        entire_dir: bool,
        buffer_rows: usize,
    ) -> Result<u64> {
        let spec = self.spec();
        let (_, _, tensor_row) = self.stored_form();
        let mut rows = 0u64;
        for base in files::load_paths(dir, file_name, entire_dir)? {
            let what = format!("load {} from {}", spec.embedding_name, base.display());
            let mut keys_file = base.as_os_str().to_owned();
            keys_file.push("-keys");
            let total = match (spec.key_type.width(), std::fs::metadata(&keys_file)) {
                (Some(w), Ok(m)) => m.len() / w as u64,
                _ => 0,
            };
            let mut progress = Progress::new(what, total);
            rows += files::read_pair(
                &base,
                spec.key_type,
                spec.dim,
                tensor_row,
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
}
