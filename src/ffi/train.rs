//! The training entry points of the bridge (`TFRA>RdeTrainConfigure`, `TrainLookup`,
//! `TrainApply`): attribute parsing and dispatch to the table's
//! [`Trainer`](crate::table::train::Trainer).

use std::borrow::Cow;

use super::table::checked_keys;
use super::{utf8, RowsOut, Status, TableBox, TensorView, TrainLookupArgs};
use crate::error::{Error, Result};
use crate::optim::{Init, Optimizer};
use crate::table::train::{LookupOut, Slots, Starts};
use crate::table::Table;

impl TableBox {
    /// [`TableBox::run`] for the two ops of a training step, whose errors name the table: a
    /// step fails inside `model.fit`, far from where the layer was made.
    fn run_step(&self, op: &str, body: impl FnOnce(&Table) -> Result<()>) -> Status {
        self.run(op, |t| {
            body(t).map_err(|e| {
                e.context(format!(
                    "training step on table {:?}",
                    t.spec().embedding_name
                ))
            })
        })
    }

    pub(super) fn train_configure(
        &self,
        slot_names: &[u8],
        fused_slots: i64,
        slot_inits: &[f32],
    ) -> Status {
        self.run("train_configure", |t| {
            let names = names("slot_names", slot_names)?;
            self.1.configure(t, slots(&names, fused_slots)?, slot_inits)
        })
    }

    pub(super) fn train_lookup(
        &self,
        keys: &TensorView,
        a: &TrainLookupArgs,
        out: RowsOut,
        ticket: &mut i64,
    ) -> Status {
        self.run_step("train_lookup", |t| {
            let k = checked_keys(t, keys)?;
            let [p, q] = a.init_params else {
                return Err(Error::invalid("init_params must hold two numbers"));
            };
            let starts = Starts {
                init: Init::parse(utf8("init", a.init)?, *p, *q)?,
                seed: a.seed as u64,
            };
            let out = LookupOut {
                values: out.values,
                exists: out.exists,
                remember: a.remember,
            };
            let fused = count("fused_slots", a.fused_slots)?;
            *ticket = i64::from(self.1.lookup(t, &k, starts, fused, out)?);
            Ok(())
        })
    }

    pub(super) fn train_apply(
        &self,
        ids: &[i64],
        grads: &[u8],
        optimizer: &[u8],
        hyper: &[f64],
        updated: &mut i64,
    ) -> Status {
        self.run_step("train_apply", |t| {
            let (opt, step) = Optimizer::parse(utf8("optimizer", optimizer)?, hyper)?;
            let grads = floats(grads);
            *updated = self.1.apply(t, ids, &grads, &opt, step)? as i64;
            Ok(())
        })
    }

    pub(super) fn train_grad_norm(
        &self,
        ids: &[i64],
        grads: &[u8],
        optimizer: &[u8],
        hyper: &[f64],
        sq_norm: &mut f64,
    ) -> Status {
        self.run_step("train_grad_norm", |t| {
            let (_, step) = Optimizer::parse(utf8("optimizer", optimizer)?, hyper)?;
            *sq_norm = self.1.grad_sq_norm(t, ids, &floats(grads), step)?;
            Ok(())
        })
    }
}

/// A newline-separated list attribute (slot table names) as strings.
fn names(what: &str, joined: &[u8]) -> Result<Vec<String>> {
    let joined = utf8(what, joined)?;
    Ok(if joined.is_empty() {
        Vec::new()
    } else {
        joined.split('\n').map(str::to_owned).collect()
    })
}

/// A float32 tensor's bytes as floats: borrowed when aligned (TF's buffers are), else copied.
fn floats(bytes: &[u8]) -> Cow<'_, [f32]> {
    // SAFETY: `align_to` only yields a middle part of whole, aligned f32s; every bit pattern
    // is a valid f32; the tensor is little-endian on every platform TF supports here.
    let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
    if head.is_empty() && tail.is_empty() {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

/// A non-negative count attribute.
fn count(what: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{what} must not be negative, got {v}")))
}

/// The slot layout: `fused_slots` > 0 means fused rows (and no slot tables).
fn slots(names: &[String], fused_slots: i64) -> Result<Slots<'_>> {
    match count("fused_slots", fused_slots)? {
        0 => Ok(Slots::Tables(names)),
        _ if !names.is_empty() => Err(Error::invalid("slot tables and fused slots are exclusive")),
        k => Ok(Slots::Fused(k)),
    }
}
