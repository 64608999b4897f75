//! The `cxx` bridge the C++ kernels call (feature `tf`). Every entry point takes raw tensor
//! bytes plus shapes, checks dtypes and shapes, runs the [`Table`] operation, and returns a
//! [`ffi::Status`] whose code is [`Error::tf_code`]: the one mapping from errors to TF codes.

use crate::codec::{KeyType, Rows, ValueType};
use crate::config::{resolve_path, Config};
use std::panic::AssertUnwindSafe;

use crate::error::{Error, ErrorKind, Result};
use crate::table::train::Trainer;
use crate::table::{ExportPlan, Exported, Shard, StrRows, Table, TableSpec};

mod train;

#[cxx::bridge(namespace = "rde")]
#[allow(clippy::module_inception, clippy::too_many_arguments)]
mod ffi {
    /// An operation's outcome: code 0 is OK, else an `absl::StatusCode`.
    struct Status {
        code: i32,
        message: String,
    }

    extern "Rust" {
        type TableBox;
        type ExportBox;
        type StrRowsBox;

        fn open_table(
            config_path: &[u8],
            config_env: &[u8],
            embedding_name: &[u8],
            key_dtype: i32,
            value_dtype: i32,
            dim: i64,
            shard_index: i64,
            shard_count: i64,
            status: &mut Status,
        ) -> Box<TableBox>;
        fn describe(self: &TableBox) -> String;
        /// This table's statistics (`crate::table::stats`), as names and values; none if
        /// the table failed to open.
        fn table_stats(self: &TableBox, names: &mut Vec<String>, values: &mut Vec<f64>);
        /// The process-wide counters of `crate::stats`, as names and values.
        fn stats_snapshot(names: &mut Vec<String>, values: &mut Vec<i64>);

        fn find(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            keys: &[u8],
            key_offsets: &[u64],
            key_dims: &[i64],
            defaults: &[u8],
            out: &mut [u8],
            exists: &mut [u8],
            want_exists: bool,
        ) -> Status;
        fn find_strings(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            keys: &[u8],
            key_offsets: &[u64],
            default_data: &[u8],
            default_offsets: &[u64],
            exists: &mut [u8],
            status: &mut Status,
        ) -> Box<StrRowsBox>;
        fn insert(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            keys: &[u8],
            key_offsets: &[u64],
            key_dims: &[i64],
            values: &[u8],
            value_offsets: &[u64],
            value_dims: &[i64],
            import: bool,
        ) -> Status;
        fn accum(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            keys: &[u8],
            key_offsets: &[u64],
            key_dims: &[i64],
            values: &[u8],
            value_offsets: &[u64],
            value_dims: &[i64],
            exists: &[u8],
        ) -> Status;
        fn remove(self: &TableBox, key_dtype: i32, keys: &[u8], key_offsets: &[u64]) -> Status;
        fn clear(self: &TableBox) -> Status;
        fn size(self: &TableBox, out: &mut i64) -> Status;
        /// The export op's first step: chooses how the rows reach the outputs and sets
        /// `rows`, how many rows to allocate (see `Table::export_plan`).
        fn export_begin(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            rows: &mut i64,
            status: &mut Status,
        ) -> Box<ExportBox>;
        /// The second step: writes fixed-size keys and values into the allocated buffers
        /// (empty for string tensors) and sets `rows`, how many were exported.
        fn export_fill(
            self: &TableBox,
            plan: &ExportBox,
            keys: &mut [u8],
            values: &mut [u8],
            rows: &mut i64,
        ) -> Status;
        fn save_to_file_system(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            dirpath: &[u8],
            file_name: &[u8],
            dirpath_env: &[u8],
            append: bool,
            buffer_size: i64,
        ) -> Status;
        fn load_from_file_system(
            self: &TableBox,
            key_dtype: i32,
            value_dtype: i32,
            dirpath: &[u8],
            file_name: &[u8],
            dirpath_env: &[u8],
            entire_dir: bool,
            buffer_size: i64,
        ) -> Status;

        fn train_configure(
            self: &TableBox,
            slot_names: &[u8],
            fused_slots: i64,
            slot_inits: &[f32],
        ) -> Status;
        fn train_lookup(
            self: &TableBox,
            key_dtype: i32,
            keys: &[u8],
            key_offsets: &[u64],
            init: &[u8],
            init_params: &[f32],
            seed: i64,
            fused_slots: i64,
            out: &mut [u8],
            exists: &mut [u8],
            remember: bool,
            ticket: &mut i64,
        ) -> Status;
        fn train_apply(
            self: &TableBox,
            ids: &[i64],
            grads: &[u8],
            optimizer: &[u8],
            hyper: &[f64],
            updated: &mut i64,
        ) -> Status;

        /// String keys (element i is `key_data[key_offsets[i]..key_offsets[i + 1]]`) and string
        /// values (likewise), for the caller to copy into its string tensors. Only read for a
        /// string tensor; empty when the rows were streamed.
        fn key_data(self: &ExportBox) -> &[u8];
        fn key_offsets(self: &ExportBox) -> &[u64];
        fn value_data(self: &ExportBox) -> &[u8];
        fn value_offsets(self: &ExportBox) -> &[u64];

        fn data(self: &StrRowsBox) -> &[u8];
        fn offsets(self: &StrRowsBox) -> &[u64];
    }
}

use ffi::Status;

fn status(r: Result<()>) -> Status {
    match r {
        Ok(()) => Status {
            code: 0,
            message: String::new(),
        },
        Err(e) => {
            crate::stats::add(crate::stats::Counter::OpErrors, 1);
            Status {
                code: e.tf_code(),
                message: e.to_string(),
            }
        }
    }
}

fn stats_snapshot(names: &mut Vec<String>, values: &mut Vec<i64>) {
    // Reads atomics only; guarded all the same, so that no entry point can unwind into C++.
    let _ = guarded("stats", || {
        for (n, v) in crate::stats::stats() {
            names.push(n.to_owned());
            values.push(i64::try_from(v).unwrap_or(i64::MAX));
        }
        Ok(())
    });
}

/// Runs the body of the bridge entry point `op`. A panic (a bug) becomes an `Internal` error
/// naming the op instead of unwinding into C++, where cxx would abort the whole training
/// process. Locks held at the time stay usable (`crate::sync`), so the next op runs normally.
fn guarded<T>(op: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        failpoint(op);
        body()
    }))
    .unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic with no message");
        Err(Error::new(
            ErrorKind::Internal,
            format!(
                "redis table op {op} failed on a bug in redis-embedding (please report it): {what}"
            ),
        ))
    })
}

/// With the `failpoints` feature (tests only), `RDE_FAILPOINT_PANIC=<op>` makes that op panic
/// inside [`guarded`], to show that a panic never reaches TensorFlow.
#[cfg(feature = "failpoints")]
fn failpoint(op: &str) {
    if std::env::var("RDE_FAILPOINT_PANIC").is_ok_and(|v| v == op) {
        panic!("failpoint RDE_FAILPOINT_PANIC={op}");
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_op: &str) {}

/// A table, or nothing if opening it failed (the status says why), and its training state.
pub struct TableBox(Option<Table>, Trainer);

/// An export in progress: the plan [`Table::export_plan`] chose (`None` if it failed).
pub struct ExportBox(Option<ExportPlan>);

/// String value rows produced by a lookup.
pub struct StrRowsBox(StrRows);

fn utf8<'a>(what: &str, b: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(b)
        .map_err(|_| Error::invalid(format!("op attribute {what} is not valid UTF-8")))
}

#[allow(clippy::too_many_arguments)]
fn open_table(
    config_path: &[u8],
    config_env: &[u8],
    embedding_name: &[u8],
    key_dtype: i32,
    value_dtype: i32,
    dim: i64,
    shard_index: i64,
    shard_count: i64,
    st: &mut Status,
) -> Box<TableBox> {
    crate::logging::init();
    let name = String::from_utf8_lossy(embedding_name).into_owned();
    let opened = guarded("open", || {
        let (config_path, config_env) = (
            utf8("redis_config_abs_dir", config_path)?,
            utf8("redis_config_abs_dir_env", config_env)?,
        );
        let embedding_name = utf8("embedding_name", embedding_name)?;
        let spec = TableSpec {
            embedding_name: embedding_name.to_owned(),
            key_type: KeyType::from_tf(key_dtype)?,
            value_type: ValueType::from_tf(value_dtype)?,
            dim: usize::try_from(dim)
                .map_err(|_| Error::invalid("value_shape must be fully defined"))?,
            shard: Shard::new(shard_index, shard_count)?,
        };
        let cfg = Config::from_file(&resolve_path(config_path, config_env)?)?;
        Table::open(cfg, spec)
    });
    match opened {
        Ok(t) => {
            *st = status(Ok(()));
            Box::new(TableBox(Some(t), Trainer::default()))
        }
        Err(e) => {
            *st = status(Err(e.context(format!("cannot open redis table {name:?}"))));
            Box::new(TableBox(None, Trainer::default()))
        }
    }
}

/// TF's insert shape rule: values.shape must equal keys.shape + [dim].
fn check_value_shape(key_dims: &[i64], value_dims: &[i64], dim: usize) -> Result<()> {
    let mut want: Vec<i64> = key_dims.to_vec();
    want.push(dim as i64);
    if value_dims != want.as_slice() {
        let show = |d: &[i64]| {
            format!(
                "[{}]",
                d.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            )
        };
        return Err(Error::invalid(format!(
            "Expected shape {} for value, got {}",
            show(&want),
            show(value_dims)
        )));
    }
    Ok(())
}

impl TableBox {
    fn table(&self) -> Result<&Table> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::invalid("the redis table failed to open"))
    }

    fn table_stats(&self, names: &mut Vec<String>, values: &mut Vec<f64>) {
        // Atomics and histograms, plus one INFO per server that may evict (statistics never
        // fail); guarded so that nothing unwinds into C++.
        let _ = guarded("table_stats", || {
            if let Some(t) = &self.0 {
                for (n, v) in t.stats_snapshot() {
                    names.push(n);
                    values.push(v);
                }
            }
            Ok(())
        });
    }

    fn describe(&self) -> String {
        guarded("describe", || Ok(self.description()))
            .unwrap_or_else(|e| format!("RedisEmbeddingTable(<{e}>)"))
    }

    fn description(&self) -> String {
        match &self.0 {
            Some(t) => format!(
                "RedisEmbeddingTable({}, {} buckets, dim {})",
                crate::cluster::layout::display_bytes(t.buckets().name(0)),
                t.buckets().len(),
                t.spec().dim
            ),
            None => "RedisEmbeddingTable(<failed to open>)".into(),
        }
    }

    /// Checks the op's key/value dtypes against the table's.
    fn typed(&self, key_dtype: i32, value_dtype: i32) -> Result<&Table> {
        let t = self.table()?;
        let (k, v) = (
            KeyType::from_tf(key_dtype)?,
            ValueType::from_tf(value_dtype)?,
        );
        if k != t.spec().key_type || v != t.spec().value_type {
            return Err(Error::invalid(format!(
                "dtype mismatch: the table holds ({:?}, {}) but the op got ({:?}, {})",
                t.spec().key_type,
                t.spec().value_type.tf_name(),
                k,
                v.tf_name()
            )));
        }
        Ok(t)
    }

    fn rows<'a>(t: &Table, values: &'a [u8], offsets: &'a [u64]) -> Rows<'a> {
        match t.spec().value_type.elem_size() {
            Some(s) => Rows::Fixed {
                data: values,
                row: s * t.spec().dim,
            },
            None => Rows::Str {
                data: values,
                offsets,
                dim: t.spec().dim,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn find(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        keys: &[u8],
        key_offsets: &[u64],
        _key_dims: &[i64],
        defaults: &[u8],
        out: &mut [u8],
        exists: &mut [u8],
        want_exists: bool,
    ) -> Status {
        status(guarded("find", || {
            let t = self.typed(key_dtype, value_dtype)?;
            let k = t.keys(keys, key_offsets)?;
            t.find(&k, defaults, out, want_exists.then_some(exists))
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn find_strings(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        keys: &[u8],
        key_offsets: &[u64],
        default_data: &[u8],
        default_offsets: &[u64],
        exists: &mut [u8],
        st: &mut Status,
    ) -> Box<StrRowsBox> {
        let r = guarded("find", || {
            let t = self.typed(key_dtype, value_dtype)?;
            let k = t.keys(keys, key_offsets)?;
            let defaults = Self::rows(t, default_data, default_offsets);
            let (rows, found) = t.find_strings(&k, &defaults)?;
            if exists.len() == found.len() {
                exists.copy_from_slice(&found);
            }
            Ok(rows)
        });
        match r {
            Ok(rows) => {
                *st = status(Ok(()));
                Box::new(StrRowsBox(rows))
            }
            Err(e) => {
                *st = status(Err(e));
                Box::new(StrRowsBox(StrRows::default()))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        keys: &[u8],
        key_offsets: &[u64],
        key_dims: &[i64],
        values: &[u8],
        value_offsets: &[u64],
        value_dims: &[i64],
        import: bool,
    ) -> Status {
        status(guarded("insert", || {
            let t = self.typed(key_dtype, value_dtype)?;
            check_value_shape(key_dims, value_dims, t.spec().dim)?;
            let k = t.keys(keys, key_offsets)?;
            let rows = Self::rows(t, values, value_offsets);
            if import {
                t.import(&k, &rows)
            } else {
                t.insert(&k, &rows)
            }
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn accum(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        keys: &[u8],
        key_offsets: &[u64],
        key_dims: &[i64],
        values: &[u8],
        value_offsets: &[u64],
        value_dims: &[i64],
        exists: &[u8],
    ) -> Status {
        status(guarded("accum", || {
            let t = self.typed(key_dtype, value_dtype)?;
            check_value_shape(key_dims, value_dims, t.spec().dim)?;
            let k = t.keys(keys, key_offsets)?;
            t.accum(&k, &Self::rows(t, values, value_offsets), exists)
        }))
    }

    fn remove(&self, key_dtype: i32, keys: &[u8], key_offsets: &[u64]) -> Status {
        status(guarded("remove", || {
            let t = self.table()?;
            if KeyType::from_tf(key_dtype)? != t.spec().key_type {
                return Err(Error::invalid(format!(
                    "keys must be {:?} for this table",
                    t.spec().key_type
                )));
            }
            t.remove(&t.keys(keys, key_offsets)?)
        }))
    }

    fn clear(&self) -> Status {
        status(guarded("clear", || self.table().and_then(Table::clear)))
    }

    fn size(&self, out: &mut i64) -> Status {
        status(guarded("size", || {
            self.table().and_then(Table::size).map(|n| *out = n)
        }))
    }

    fn export_begin(
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
        let (r, plan) = match r {
            Ok(p) => (Ok(()), Some(p)),
            Err(e) => (Err(e), None),
        };
        *st = status(r);
        Box::new(ExportBox(plan))
    }

    fn export_fill(
        &self,
        plan: &ExportBox,
        keys: &mut [u8],
        values: &mut [u8],
        rows: &mut i64,
    ) -> Status {
        status(guarded("export", || {
            let plan = plan
                .0
                .as_ref()
                .ok_or_else(|| Error::invalid("the export failed to start"))?;
            let n = self.table()?.export_fill(plan, keys, values)?;
            *rows = n as i64;
            Ok(())
        }))
    }
}

/// The directory and file name of a file-system save or load.
fn file_target(
    dirpath: &[u8],
    file_name: &[u8],
    dirpath_env: &[u8],
) -> Result<(std::path::PathBuf, String)> {
    let dir = crate::persist::files::resolve_dir(
        utf8("dirpath", dirpath)?,
        utf8("dirpath_env", dirpath_env)?,
    );
    let name = utf8("file_name", file_name)?;
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

impl TableBox {
    #[allow(clippy::too_many_arguments)]
    fn save_to_file_system(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        dirpath: &[u8],
        file_name: &[u8],
        dirpath_env: &[u8],
        append: bool,
        buffer_size: i64,
    ) -> Status {
        status(guarded("save_to_file_system", || {
            let t = self.typed(key_dtype, value_dtype)?;
            let (dir, name) = file_target(dirpath, file_name, dirpath_env)?;
            t.save_to_files(&dir, &name, append, buffer_rows(buffer_size)?)
                .map(|_| ())
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn load_from_file_system(
        &self,
        key_dtype: i32,
        value_dtype: i32,
        dirpath: &[u8],
        file_name: &[u8],
        dirpath_env: &[u8],
        entire_dir: bool,
        buffer_size: i64,
    ) -> Status {
        status(guarded("load_from_file_system", || {
            let t = self.typed(key_dtype, value_dtype)?;
            let (dir, name) = file_target(dirpath, file_name, dirpath_env)?;
            t.load_from_files(&dir, &name, entire_dir, buffer_rows(buffer_size)?)
                .map(|_| ())
        }))
    }
}

impl ExportBox {
    /// A part of the rows read ahead; empty when the rows were streamed.
    fn read_ahead<T>(&self, part: impl Fn(&Exported) -> &[T]) -> &[T] {
        self.0
            .as_ref()
            .and_then(ExportPlan::exported)
            .map_or(&[], part)
    }
    fn key_data(&self) -> &[u8] {
        self.read_ahead(|e| &e.keys)
    }
    fn key_offsets(&self) -> &[u64] {
        self.read_ahead(|e| &e.key_offsets)
    }
    fn value_data(&self) -> &[u8] {
        self.read_ahead(|e| &e.str_values.data)
    }
    fn value_offsets(&self) -> &[u64] {
        self.read_ahead(|e| &e.str_values.offsets)
    }
}

impl StrRowsBox {
    fn data(&self) -> &[u8] {
        &self.0.data
    }
    fn offsets(&self) -> &[u64] {
        &self.0.offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_shape_rule_matches_tf_message() {
        assert!(check_value_shape(&[2], &[2, 3], 3).is_ok());
        let e = check_value_shape(&[2], &[2, 4], 3).unwrap_err();
        assert_eq!(e.message(), "Expected shape [2,3] for value, got [2,4]");
        assert!(check_value_shape(&[0], &[0], 3).is_err());
    }

    #[test]
    fn a_panic_becomes_an_internal_error_naming_the_op() {
        let e = guarded::<()>("find", || panic!("index out of bounds")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.tf_code(), 13);
        assert!(e.message().contains("op find"), "{e}");
        assert!(e.message().contains("index out of bounds"), "{e}");
        let e = guarded::<()>("insert", || panic!("{} rows", 3)).unwrap_err();
        assert!(
            e.message().contains("op insert") && e.message().contains("3 rows"),
            "{e}"
        );
        assert_eq!(guarded("size", || Ok(7)).unwrap(), 7);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn the_panic_failpoint_fires_only_for_its_op() {
        std::env::set_var("RDE_FAILPOINT_PANIC", "remove");
        assert_eq!(guarded("find", || Ok(1)).unwrap(), 1);
        let e = guarded("remove", || Ok(1)).unwrap_err();
        std::env::remove_var("RDE_FAILPOINT_PANIC");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("failpoint"), "{e}");
    }
}
