//! Moving a table's rows out and in: the export op (two steps, so the kernel allocates
//! the outputs between them) and the file-system save and load.

use super::{boxed, guarded, utf8, ExportBox, FileArgs, Status, TableBox};
use crate::error::{Error, Result};
use crate::table::{ExportPlan, Exported};

impl TableBox {
    pub(super) fn export_begin(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        rows: &mut i64,
        st: &mut Status,
    ) -> Box<ExportBox> {
        let r = guarded("export", || {
            self.typed(key_dtype, value_dtype)?.export_plan()
        });
        *rows = r.as_ref().map_or(0, |p| p.rows() as i64);
        boxed(r, st, ExportBox)
    }

    pub(super) fn export_fill(
        &self,
        plan: &ExportBox,
        keys: &mut [u8],
        values: &mut [u8],
        rows: &mut i64,
    ) -> Status {
        self.run("export", |t| {
            let plan = plan
                .0
                .as_ref()
                .ok_or_else(|| Error::invalid("the export failed to start"))?;
            *rows = t.export_fill(plan, keys, values)? as i64;
            Ok(())
        })
    }

    pub(super) fn file_system(&self, load: bool, a: &FileArgs) -> Status {
        let op = if load {
            "load_from_file_system"
        } else {
            "save_to_file_system"
        };
        self.run(op, |_| {
            let t = self.typed(a.key_dtype, a.value_dtype)?;
            let (dir, name) = file_target(a)?;
            let rows = buffer_rows(a.buffer_size)?;
            if load {
                t.load_from_files(&dir, &name, a.flag, rows).map(|_| ())
            } else {
                t.save_to_files(&dir, &name, a.flag, rows).map(|_| ())
            }
        })
    }
}

/// The directory and file name of a file-system save or load.
fn file_target(a: &FileArgs) -> Result<(std::path::PathBuf, String)> {
    let dir = crate::persist::files::resolve_dir(
        utf8("dirpath", a.dirpath)?,
        utf8("dirpath_env", a.dirpath_env)?,
    );
    let name = utf8("file_name", a.file_name)?;
    if name.is_empty() {
        return Err(Error::invalid("file_name must not be empty"));
    }
    Ok((dir, name.to_owned()))
}

fn buffer_rows(buffer_size: i64) -> Result<usize> {
    usize::try_from(buffer_size)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| Error::invalid(format!("buffer_size must be >= 1, got {buffer_size}")))
}

impl ExportBox {
    /// A part of the rows read ahead; empty when the rows were streamed.
    fn read_ahead<T>(&self, part: impl Fn(&Exported) -> &[T]) -> &[T] {
        self.0
            .as_ref()
            .and_then(ExportPlan::exported)
            .map_or(&[], part)
    }
    pub(super) fn key_data(&self) -> &[u8] {
        self.read_ahead(|e| &e.keys)
    }
    pub(super) fn key_offsets(&self) -> &[u64] {
        self.read_ahead(|e| &e.key_offsets)
    }
    pub(super) fn value_data(&self) -> &[u8] {
        self.read_ahead(|e| &e.str_values.data)
    }
    pub(super) fn value_offsets(&self) -> &[u64] {
        self.read_ahead(|e| &e.str_values.offsets)
    }
}
