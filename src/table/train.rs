//! Training: the forward lookup that remembers what it read, and the fused sparse optimizer
//! step that applies the gradient of those rows in Rust and writes params and slots back.
//!
//! A training step is two ops. [`Trainer::lookup`] reads the params (and the optimizer's
//! slot rows, when the caller already knows the optimizer), fills keys not yet stored with
//! their deterministic initial row, and keeps keys and rows under a *ticket*. The gradient
//! that reaches [`Trainer::apply`] names each row by `(ticket << 32) | position`, so apply
//! needs no second read of the params: it sums the gradients of duplicate keys, reads slot
//! rows only if the lookup did not, updates each distinct row and writes params and slots
//! back, one table per thread. Slot tables are separate tables named as TFRA names them.
//!
//! Invariant: only [`Table`]'s public operations are used, so this file holds no I/O of its
//! own; every read and write goes through `find` and `insert` and their executor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::{Table, TableSpec};
use crate::codec::{Keys, Rows, ValueType};
use crate::error::{Error, ErrorKind, Result};
use crate::optim::{Init, Optimizer, Step};
use crate::sync;

/// How many lookups may wait for their apply; older ones are dropped (a training-mode call
/// whose gradient was never applied must not hold memory for ever).
const PENDING_CAP: usize = 64;

/// The keys and rows one training-mode lookup read.
struct Pending {
    ticket: u32,
    /// Keys read: `len` keys, fixed-width (`key_width`) or delimited by `key_offsets`.
    len: usize,
    key_width: Option<usize>,
    key_data: Vec<u8>,
    key_offsets: Vec<u64>,
    /// Slot tables whose rows follow the params in `rows` (empty: slots not read yet).
    slot_names: Vec<String>,
    /// Per key: `dim` params, then `dim` elements per slot.
    rows: Vec<f32>,
}

/// The training state kept beside a params table: its slot tables and pending lookups.
#[derive(Default)]
pub struct Trainer {
    slots: Mutex<Vec<(String, Arc<Table>)>>,
    pending: Mutex<VecDeque<Pending>>,
    next_ticket: AtomicU32,
}

/// Where a lookup writes: the params output, the found flags, and whether to remember.
pub struct LookupOut<'a> {
    /// `n × dim` float32 params, as bytes.
    pub values: &'a mut [u8],
    /// One flag per key: 1 if its params were stored.
    pub exists: &'a mut [u8],
    /// Keep keys and rows for an apply (training mode).
    pub remember: bool,
}

/// How missing rows start.
pub struct Starts<'a> {
    /// Param rows: deterministic in key and seed.
    pub init: Init,
    /// Seed of `init`.
    pub seed: u64,
    /// Slot tables to read now (their full embedding names), with each one's start value.
    pub slot_names: &'a [String],
    /// Start value of each slot.
    pub slot_inits: &'a [f32],
}

impl Trainer {
    /// Reads params (and the named slot tables) of `keys` into `out`, initialising missing
    /// params from `starts.init`. Returns the ticket an apply names the rows by (0 when not
    /// remembering).
    pub fn lookup(
        &self,
        t: &Table,
        keys: &Keys<'_>,
        starts: &Starts<'_>,
        out: LookupOut<'_>,
    ) -> Result<u32> {
        let (n, dim) = (keys.len(), check_float(t)?);
        if out.values.len() != n * dim * 4 || out.exists.len() != n {
            return Err(Error::invalid(format!(
                "lookup output must hold {n} rows of dim {dim} float32"
            )));
        }
        if starts.slot_names.len() != starts.slot_inits.len() {
            return Err(Error::invalid("slot_names and slot_inits differ in length"));
        }
        let slots = self.slot_tables(t, starts.slot_names)?;
        let mut slot_rows = vec![vec![0f32; n * dim]; slots.len()];
        let zeros = vec![0u8; dim * 4];
        std::thread::scope(|s| -> Result<()> {
            let readers: Vec<_> = slots
                .iter()
                .zip(slot_rows.iter_mut())
                .zip(starts.slot_inits)
                .map(|((slot, rows), &init)| {
                    s.spawn(move || {
                        let dflt: Vec<u8> = init.to_le_bytes().repeat(dim);
                        slot.find(keys, &dflt, as_bytes_mut(rows), None)
                    })
                })
                .collect();
            t.find(keys, &zeros, out.values, Some(out.exists))?;
            for r in readers {
                r.join()
                    .map_err(|_| Error::new(ErrorKind::Internal, "a slot reader panicked"))??;
            }
            Ok(())
        })?;
        let mut params: Vec<f32> = floats(out.values);
        for i in 0..n {
            if out.exists[i] == 0 {
                let row = &mut params[i * dim..(i + 1) * dim];
                starts.init.fill(starts.seed, keys.get(i), row);
                out.values[i * dim * 4..(i + 1) * dim * 4].copy_from_slice(as_bytes(row));
            }
        }
        if !out.remember {
            return Ok(0);
        }
        let width = dim * (1 + slots.len());
        let mut rows = Vec::with_capacity(n * width);
        for i in 0..n {
            rows.extend_from_slice(&params[i * dim..(i + 1) * dim]);
            for s in &slot_rows {
                rows.extend_from_slice(&s[i * dim..(i + 1) * dim]);
            }
        }
        let (key_data, key_offsets) = owned_keys(keys);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed) % (u32::MAX - 1) + 1;
        let mut pending = sync::lock(&self.pending);
        if pending.len() == PENDING_CAP {
            pending.pop_front();
        }
        pending.push_back(Pending {
            ticket,
            len: n,
            key_width: match *keys {
                Keys::Fixed { width, .. } => Some(width),
                Keys::Var { .. } => None,
            },
            key_data,
            key_offsets,
            slot_names: starts.slot_names.to_vec(),
            rows,
        });
        Ok(ticket)
    }

    /// Applies one optimizer step to the rows named by `ids` (`(ticket << 32) | position`),
    /// whose gradients are `grads` (`ids.len() × dim`). Duplicate keys' gradients are summed
    /// in input order. Returns the number of distinct rows written.
    pub fn apply(
        &self,
        t: &Table,
        ids: &[i64],
        grads: &[f32],
        opt: &Optimizer,
        step: Step,
        slot_names: &[String],
    ) -> Result<usize> {
        let dim = check_float(t)?;
        if grads.len() != ids.len() * dim {
            return Err(Error::invalid(format!(
                "gradient must hold {} rows of dim {dim}, got {} elements",
                ids.len(),
                grads.len()
            )));
        }
        if slot_names.len() != opt.slots().len() {
            return Err(Error::invalid(format!(
                "the optimizer keeps {} slots but {} slot tables were named",
                opt.slots().len(),
                slot_names.len()
            )));
        }
        let taken = self.take(ids)?;
        let k = slot_names.len();
        let width = dim * (1 + k);
        // Distinct keys in first-seen order, their summed gradient and their starting row.
        let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
        let (mut key_data, mut key_offsets) = (Vec::new(), vec![0u64]);
        let mut sums: Vec<f32> = Vec::new();
        let mut rows: Vec<f32> = Vec::new();
        let mut need_slots = false;
        for (j, &id) in ids.iter().enumerate() {
            let (p, pos) = locate(&taken, id)?;
            let key = p.key(pos);
            let g = &grads[j * dim..(j + 1) * dim];
            let d = *index.entry(key).or_insert_with(|| {
                key_data.extend_from_slice(key);
                key_offsets.push(key_data.len() as u64);
                sums.extend(std::iter::repeat_n(0f32, dim));
                let have = p.slot_names == slot_names;
                need_slots |= !have;
                let w = p.width(dim);
                let src = &p.rows[pos * w..(pos + 1) * w];
                rows.extend_from_slice(&src[..dim]);
                if have {
                    rows.extend_from_slice(&src[dim..]);
                } else {
                    rows.extend(std::iter::repeat_n(0f32, dim * k));
                }
                key_offsets.len() - 2
            });
            for (s, &gi) in sums[d * dim..(d + 1) * dim].iter_mut().zip(g) {
                *s += gi;
            }
        }
        let distinct = key_offsets.len() - 1;
        let keys = t.keys(&key_data, &key_offsets)?;
        let slots = self.slot_tables(t, slot_names)?;
        if need_slots && k > 0 {
            self.read_slots(&slots, opt, &keys, dim, &mut rows)?;
        }
        for d in 0..distinct {
            let row = &mut rows[d * width..(d + 1) * width];
            let (param, slot) = row.split_at_mut(dim);
            opt.apply(step, param, slot, &sums[d * dim..(d + 1) * dim]);
        }
        write_rows(t, &slots, &keys, &rows, dim)?;
        Ok(distinct)
    }

    /// Removes and returns the pending lookups that `ids` name.
    fn take(&self, ids: &[i64]) -> Result<Vec<Pending>> {
        let mut wanted: Vec<u32> = ids.iter().map(|&id| (id as u64 >> 32) as u32).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut pending = sync::lock(&self.pending);
        let mut taken = Vec::with_capacity(wanted.len());
        for w in wanted {
            match pending.iter().position(|p| p.ticket == w) {
                Some(i) => taken.push(pending.remove(i).expect("position is in range")),
                None => {
                    return Err(Error::invalid(format!(
                        "the gradient names training lookup {w}, which is not pending: each \
                         training-mode lookup is applied once, and only the last \
                         {PENDING_CAP} are kept"
                    )))
                }
            }
        }
        Ok(taken)
    }

    /// Reads the slot rows of `keys` into the slot part of `rows` (one row of `dim × (1 +
    /// slots)` per key).
    fn read_slots(
        &self,
        slots: &[Arc<Table>],
        opt: &Optimizer,
        keys: &Keys<'_>,
        dim: usize,
        rows: &mut [f32],
    ) -> Result<()> {
        let n = keys.len();
        let width = dim * (1 + slots.len());
        for (i, slot) in slots.iter().enumerate() {
            let mut read = vec![0f32; n * dim];
            let dflt: Vec<u8> = opt.slot_init(i).to_le_bytes().repeat(dim);
            slot.find(keys, &dflt, as_bytes_mut(&mut read), None)?;
            for d in 0..n {
                let at = d * width + dim * (1 + i);
                rows[at..at + dim].copy_from_slice(&read[d * dim..(d + 1) * dim]);
            }
        }
        Ok(())
    }

    /// The slot tables `names`, opened on first use with the params table's key type, dim,
    /// shard and config.
    fn slot_tables(&self, t: &Table, names: &[String]) -> Result<Vec<Arc<Table>>> {
        let mut open = sync::lock(&self.slots);
        names
            .iter()
            .map(|name| {
                if let Some((_, slot)) = open.iter().find(|(n, _)| n == name) {
                    return Ok(slot.clone());
                }
                let spec = TableSpec {
                    embedding_name: name.clone(),
                    key_type: t.spec().key_type,
                    value_type: ValueType::F32,
                    dim: t.spec().dim,
                    shard: t.spec().shard,
                };
                let slot = Arc::new(
                    Table::open(t.config().clone(), spec)
                        .map_err(|e| e.context(format!("cannot open slot table {name:?}")))?,
                );
                open.push((name.clone(), slot.clone()));
                Ok(slot)
            })
            .collect()
    }
}

impl Pending {
    fn width(&self, dim: usize) -> usize {
        dim * (1 + self.slot_names.len())
    }

    fn key(&self, i: usize) -> &[u8] {
        match self.key_width {
            Some(w) => &self.key_data[i * w..(i + 1) * w],
            None => &self.key_data[self.key_offsets[i] as usize..self.key_offsets[i + 1] as usize],
        }
    }
}

/// The pending lookup and position that a gradient row id names.
fn locate(taken: &[Pending], id: i64) -> Result<(&Pending, usize)> {
    let (ticket, pos) = ((id as u64 >> 32) as u32, (id as u64 & 0xffff_ffff) as usize);
    let p = taken
        .iter()
        .find(|p| p.ticket == ticket)
        .expect("take() returned every ticket the ids name");
    if pos >= p.len {
        return Err(Error::invalid(format!(
            "gradient row names position {pos} of training lookup {ticket}, which read {} keys",
            p.len
        )));
    }
    Ok((p, pos))
}

/// Writes params and each slot's rows, one table per thread.
fn write_rows(
    t: &Table,
    slots: &[Arc<Table>],
    keys: &Keys<'_>,
    rows: &[f32],
    dim: usize,
) -> Result<()> {
    let (n, width) = (keys.len(), dim * (1 + slots.len()));
    let part = |i: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * dim * 4);
        for d in 0..n {
            let at = d * width + dim * i;
            out.extend_from_slice(as_bytes(&rows[at..at + dim]));
        }
        out
    };
    std::thread::scope(|s| -> Result<()> {
        let writers: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let data = part(i + 1);
                s.spawn(move || {
                    slot.insert(
                        keys,
                        &Rows::Fixed {
                            data: &data,
                            row: dim * 4,
                        },
                    )
                })
            })
            .collect();
        let data = part(0);
        t.insert(
            keys,
            &Rows::Fixed {
                data: &data,
                row: dim * 4,
            },
        )?;
        for w in writers {
            w.join()
                .map_err(|_| Error::new(ErrorKind::Internal, "a slot writer panicked"))??;
        }
        Ok(())
    })
}

/// The table's dim; training tables hold float32.
fn check_float(t: &Table) -> Result<usize> {
    if t.spec().value_type != ValueType::F32 {
        return Err(Error::invalid(format!(
            "training needs a float32 table; {:?} holds {}",
            t.spec().embedding_name,
            t.spec().value_type.tf_name()
        )));
    }
    Ok(t.spec().dim)
}

fn owned_keys(keys: &Keys<'_>) -> (Vec<u8>, Vec<u64>) {
    match *keys {
        Keys::Fixed { data, .. } => (data.to_vec(), Vec::new()),
        Keys::Var { data, offsets } => {
            let base = offsets[0];
            let (a, b) = (base as usize, offsets[offsets.len() - 1] as usize);
            (
                data[a..b].to_vec(),
                offsets.iter().map(|o| o - base).collect(),
            )
        }
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is scaled.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern written is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}
