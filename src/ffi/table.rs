//! The table's entry points: open, describe and statistics, find, insert/import, accum,
//! remove, clear, size. Each checks what the op passed against the table (dtypes, the value
//! shape) and calls one [`Table`] operation.

use super::{boxed, guarded, utf8, OpenArgs, RowsOut, Status, StrRowsBox, TableBox, TensorView};
use crate::codec::{KeyType, Keys, Rows, ValueType};
use crate::config::{resolve_path, Config};
use crate::error::{Error, Result};
use crate::table::train::Trainer;
use crate::table::{Shard, Table, TableSpec};

pub(super) fn stats_snapshot(names: &mut Vec<String>, values: &mut Vec<i64>) {
    // Reads atomics only; guarded all the same, so that no entry point can unwind into C++.
    let _ = guarded("stats", || {
        for (n, v) in crate::stats::stats() {
            names.push(n.to_owned());
            values.push(i64::try_from(v).unwrap_or(i64::MAX));
        }
        Ok(())
    });
}

pub(super) fn open_table(a: &OpenArgs, st: &mut Status) -> Box<TableBox> {
    crate::logging::init();
    let name = String::from_utf8_lossy(a.embedding_name).into_owned();
    let opened = guarded("open", || {
        let (config_path, config_env) = (
            utf8("redis_config_abs_dir", a.config_path)?,
            utf8("redis_config_abs_dir_env", a.config_env)?,
        );
        let spec = TableSpec {
            embedding_name: utf8("embedding_name", a.embedding_name)?.to_owned(),
            key_type: KeyType::from_tf(a.key_dtype)?,
            value_type: ValueType::from_tf(a.value_dtype)?,
            dim: usize::try_from(a.dim)
                .map_err(|_| Error::invalid("value_shape must be fully defined"))?,
            shard: Shard::new(a.shard_index, a.shard_count)?,
        };
        let cfg = Config::from_file(&resolve_path(config_path, config_env)?)?;
        Table::open(cfg, spec)
    })
    .map_err(|e| e.context(format!("cannot open redis table {name:?}")));
    boxed(opened, st, |t| TableBox(t, Trainer::default()))
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
    pub(super) fn table_stats(&self, names: &mut Vec<String>, values: &mut Vec<f64>) {
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

    pub(super) fn describe(&self) -> String {
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
    pub(super) fn typed(&self, key_dtype: i32, value_dtype: i32) -> Result<&Table> {
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

    /// [`TableBox::run`] on the table checked against the key and value tensors' dtypes,
    /// with the keys read: the start of every op that takes keys and values.
    fn run_kv(
        &self,
        op: &str,
        keys: &TensorView,
        values: &TensorView,
        body: impl FnOnce(&Table, &Keys) -> Result<()>,
    ) -> Status {
        self.run(op, |_| {
            let t = self.typed(keys.dtype, values.dtype)?;
            body(t, &t.keys(keys.data, keys.offsets)?)
        })
    }

    /// `out.exists` is written only when it is not empty (the op has that output).
    pub(super) fn find(&self, keys: &TensorView, defaults: &TensorView, out: RowsOut) -> Status {
        let exists = (!out.exists.is_empty()).then_some(out.exists);
        self.run_kv("find", keys, defaults, |t, k| {
            t.find(k, defaults.data, out.values, exists)
        })
    }

    pub(super) fn find_strings(
        &self,
        keys: &TensorView,
        defaults: &TensorView,
        exists: &mut [u8],
        st: &mut Status,
    ) -> Box<StrRowsBox> {
        let mut rows = None;
        *st = self.run_kv("find", keys, defaults, |t, k| {
            let (r, found) = t.find_strings(k, &rows_of(t, defaults))?;
            if exists.len() == found.len() {
                exists.copy_from_slice(&found);
            }
            rows = Some(r);
            Ok(())
        });
        Box::new(StrRowsBox(rows.unwrap_or_default()))
    }

    pub(super) fn insert(&self, keys: &TensorView, values: &TensorView, import: bool) -> Status {
        self.run_kv("insert", keys, values, |t, k| {
            check_value_shape(keys.dims, values.dims, t.spec().dim)?;
            let rows = rows_of(t, values);
            if import {
                t.import(k, &rows)
            } else {
                t.insert(k, &rows)
            }
        })
    }

    pub(super) fn accum(&self, keys: &TensorView, values: &TensorView, exists: &[u8]) -> Status {
        self.run_kv("accum", keys, values, |t, k| {
            check_value_shape(keys.dims, values.dims, t.spec().dim)?;
            t.accum(k, &rows_of(t, values), exists)
        })
    }

    pub(super) fn remove(&self, keys: &TensorView) -> Status {
        self.run("remove", |t| t.remove(&checked_keys(t, keys)?))
    }

    pub(super) fn clear(&self) -> Status {
        self.run("clear", Table::clear)
    }

    pub(super) fn size(&self, out: &mut i64) -> Status {
        self.run("size", |t| t.size().map(|n| *out = n))
    }
}

/// The keys of an op that takes no values tensor, checked against the table's key type.
pub(super) fn checked_keys<'a>(t: &Table, keys: &TensorView<'a>) -> Result<Keys<'a>> {
    let got = KeyType::from_tf(keys.dtype)?;
    if got != t.spec().key_type {
        return Err(Error::invalid(format!(
            "dtype mismatch: the table's keys are {:?}, the op got {got:?}",
            t.spec().key_type
        )));
    }
    t.keys(keys.data, keys.offsets)
}

impl StrRowsBox {
    pub(super) fn data(&self) -> &[u8] {
        &self.0.data
    }
    pub(super) fn offsets(&self) -> &[u64] {
        &self.0.offsets
    }
}

/// A values tensor as the table's rows.
fn rows_of<'a>(t: &Table, values: &TensorView<'a>) -> Rows<'a> {
    match t.spec().value_type.elem_size() {
        Some(s) => Rows::Fixed {
            data: values.data,
            row: s * t.spec().dim,
        },
        None => Rows::Str {
            data: values.data,
            offsets: values.offsets,
            dim: t.spec().dim,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::check_value_shape;

    #[test]
    fn value_shape_rule_matches_tf_message() {
        assert!(check_value_shape(&[2], &[2, 3], 3).is_ok());
        let e = check_value_shape(&[2], &[2, 4], 3).unwrap_err();
        assert_eq!(e.message(), "Expected shape [2,3] for value, got [2,4]");
        assert!(check_value_shape(&[0], &[0], 3).is_err());
    }
}
