//! The `cxx` bridge the C++ kernels call (feature `bridge`; `tf` also compiles `cc/`). Every
//! entry point takes raw tensor bytes ([`ffi::TensorView`]), checks dtypes and shapes, runs the
//! [`Table`] operation, and returns a [`ffi::Status`] whose code is [`Error::tf_code`]: the one
//! mapping from errors to TF codes. The bridge is declared here (`build.rs`, Bazel and `cc/`
//! name the generated `src/ffi.rs.h`); the entry points are in `ffi/`: `table.rs` (open, find,
//! write, remove, size, stats), `files.rs` (export, file-system save and load) and `train.rs`.
//! Each runs inside [`guarded`] through [`TableBox::run`] or [`boxed`], so no panic reaches C++.

use std::panic::AssertUnwindSafe;

use crate::error::{Error, ErrorKind, Result};
use crate::table::train::Trainer;
use crate::table::{ExportPlan, StrRows, Table};

mod files;
mod table;
mod train;

#[cxx::bridge(namespace = "rde")]
#[allow(clippy::module_inception, clippy::too_many_arguments)]
mod ffi {
    /// An operation's outcome: code 0 is OK, else an `absl::StatusCode`.
    struct Status {
        code: i32,
        message: String,
    }

    /// An input tensor: its dtype, its bytes (the buffer of numbers, or the strings
    /// concatenated: element i is `data[offsets[i]..offsets[i + 1]]`; `offsets` is empty for
    /// numbers) and its shape.
    struct TensorView<'a> {
        dtype: i32,
        data: &'a [u8],
        offsets: &'a [u64],
        dims: &'a [i64],
    }

    /// The table-creating op's attributes.
    struct OpenArgs<'a> {
        config_path: &'a [u8],
        config_env: &'a [u8],
        embedding_name: &'a [u8],
        key_dtype: i32,
        value_dtype: i32,
        dim: i64,
        shard_index: i64,
        shard_count: i64,
    }

    /// A file-system save's or load's attributes and its two string inputs; `flag` is
    /// `append_to_file` for a save, `load_entire_dir` for a load.
    struct FileArgs<'a> {
        key_dtype: i32,
        value_dtype: i32,
        dirpath: &'a [u8],
        file_name: &'a [u8],
        dirpath_env: &'a [u8],
        flag: bool,
        buffer_size: i64,
    }

    /// Where a lookup writes: the rows (the output tensor's bytes) and one byte per key, set
    /// to 1 if the key was found (empty when the op has no `exists` output).
    struct RowsOut<'a> {
        values: &'a mut [u8],
        exists: &'a mut [u8],
    }

    /// `TFRA>RdeTrainLookup`'s attributes.
    struct TrainLookupArgs<'a> {
        init: &'a [u8],
        init_params: &'a [f32],
        seed: i64,
        fused_slots: i64,
        remember: bool,
    }

    extern "Rust" {
        type TableBox;
        type ExportBox;
        type StrRowsBox;

        fn open_table(args: &OpenArgs, status: &mut Status) -> Box<TableBox>;
        fn describe(self: &TableBox) -> String;
        /// This table's statistics (`crate::table::stats`), as names and values; none if
        /// the table failed to open.
        fn table_stats(self: &TableBox, names: &mut Vec<String>, values: &mut Vec<f64>);
        /// The process-wide counters of `crate::stats`, as names and values.
        fn stats_snapshot(names: &mut Vec<String>, values: &mut Vec<i64>);

        fn find(self: &TableBox, keys: &TensorView, defaults: &TensorView, out: RowsOut) -> Status;
        fn find_strings(
            self: &TableBox,
            keys: &TensorView,
            defaults: &TensorView,
            exists: &mut [u8],
            status: &mut Status,
        ) -> Box<StrRowsBox>;
        fn insert(self: &TableBox, keys: &TensorView, values: &TensorView, import: bool) -> Status;
        fn accum(self: &TableBox, keys: &TensorView, values: &TensorView, exists: &[u8]) -> Status;
        fn remove(self: &TableBox, keys: &TensorView) -> Status;
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
        /// `save_to_file_system` (`load` false) or `load_from_file_system`.
        fn file_system(self: &TableBox, load: bool, args: &FileArgs) -> Status;

        fn train_configure(
            self: &TableBox,
            slot_names: &[u8],
            fused_slots: i64,
            slot_inits: &[f32],
        ) -> Status;
        /// `ticket` is set to the lookup's ticket (0 unless `remember`).
        fn train_lookup(
            self: &TableBox,
            keys: &TensorView,
            args: &TrainLookupArgs,
            out: RowsOut,
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
        /// `sq_norm` is set to the squared norm of the gradient `train_apply` would apply.
        fn train_grad_norm(
            self: &TableBox,
            ids: &[i64],
            grads: &[u8],
            optimizer: &[u8],
            hyper: &[f64],
            sq_norm: &mut f64,
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

use ffi::{FileArgs, OpenArgs, RowsOut, Status, TensorView, TrainLookupArgs};
use table::{open_table, stats_snapshot};

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

/// The shape of an entry point that returns a box besides its status: the outcome goes to
/// `st`, and the box holds what `wrap` makes of the value (`None` if the op failed).
fn boxed<T, B>(r: Result<T>, st: &mut Status, wrap: impl FnOnce(Option<T>) -> B) -> Box<B> {
    let (r, value) = match r {
        Ok(v) => (Ok(()), Some(v)),
        Err(e) => (Err(e), None),
    };
    *st = status(r);
    Box::new(wrap(value))
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

impl TableBox {
    fn table(&self) -> Result<&Table> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::invalid("the redis table failed to open"))
    }

    /// The shape every table entry point shares: `body` runs on the open table inside
    /// [`guarded`] (as op `op`, which the failpoint names), and its outcome becomes the status.
    fn run(&self, op: &str, body: impl FnOnce(&Table) -> Result<()>) -> Status {
        status(guarded(op, || body(self.table()?)))
    }
}

fn utf8<'a>(what: &str, b: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(b)
        .map_err(|_| Error::invalid(format!("op attribute {what} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
