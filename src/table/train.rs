//! Training: the forward lookup that remembers what it read, and the fused sparse optimizer
//! step that applies the gradient of those rows in Rust and writes params and slots back.
//!
//! A training step is two ops. [`Trainer::lookup`] reads the params (and the optimizer's
//! slot rows, when the caller already knows the optimizer), fills keys not yet stored with
//! their deterministic initial row, and keeps keys and rows under a *ticket*. The gradient
//! that reaches [`Trainer::apply`] names each row by `(ticket << 32) | position`, so apply
//! needs no second read of the params: it sums the gradients of duplicate keys, reads slot
//! rows only if the lookup did not, updates each distinct row and writes params and slots
//! back, one table per thread.
//!
//! Two layouts ([`Slots`]): TFRA's, where each slot is a table of its own named as TFRA's
//! `DynamicEmbeddingOptimizer` names it, and the fused one, where a row holds the params and
//! then the slots, so a step costs one read and one write per distinct key.
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

/// Where a layer's optimizer slots live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slots<'a> {
    /// In their own tables, by full embedding name (TFRA's layout). Empty when the optimizer
    /// is not known yet: apply then reads them itself.
    Tables(&'a [String]),
    /// After the params in the same row of the one table (the fused layout): this many.
    Fused(usize),
}

impl Slots<'_> {
    fn count(&self) -> usize {
        match self {
            Slots::Tables(names) => names.len(),
            Slots::Fused(k) => *k,
        }
    }

    fn owned(&self) -> SlotsRead {
        match self {
            Slots::Tables(names) => SlotsRead::Tables(names.to_vec()),
            Slots::Fused(k) => SlotsRead::Fused(*k),
        }
    }
}

/// Which slot rows a pending lookup holds after its params.
#[derive(Debug, Clone, PartialEq)]
enum SlotsRead {
    Tables(Vec<String>),
    Fused(usize),
}

impl SlotsRead {
    fn count(&self) -> usize {
        match self {
            SlotsRead::Tables(names) => names.len(),
            SlotsRead::Fused(k) => *k,
        }
    }
}

/// The keys and rows one training-mode lookup read.
struct Pending {
    ticket: u32,
    /// Keys read: `len` keys, fixed-width (`key_width`) or delimited by `key_offsets`.
    len: usize,
    key_width: Option<usize>,
    key_data: Vec<u8>,
    key_offsets: Vec<u64>,
    /// The slot rows that follow the params in `rows`.
    slots: SlotsRead,
    /// Per key: `dim` params, then `dim` elements per slot read.
    rows: Vec<f32>,
}

/// The training state kept beside a layer's handle table: the optimizer's slot layout, the
/// tables it needs, and the pending lookups.
#[derive(Default)]
pub struct Trainer {
    layout: Mutex<Option<Arc<Configured>>>,
    slots: Mutex<Vec<(String, Arc<Table>)>>,
    pending: Mutex<VecDeque<Pending>>,
    next_ticket: AtomicU32,
}

/// The slot layout an optimizer configured, with what it needs open.
struct Configured {
    slots: SlotsRead,
    /// Start value of each slot.
    inits: Vec<f32>,
    /// The fused layout's table: the handle table's name, rows of `dim × (1 + k)`.
    wide: Option<Arc<Table>>,
    /// The slot tables of TFRA's layout.
    tables: Vec<Arc<Table>>,
}

/// Where a lookup writes: the params output, the found flags, and whether to remember.
pub struct LookupOut<'a> {
    /// `n × dim` float32 params, as bytes.
    pub values: &'a mut [u8],
    /// One flag per key: 1 if its row was stored.
    pub exists: &'a mut [u8],
    /// Keep keys and rows for an apply (training mode).
    pub remember: bool,
}

/// How the params of missing keys start.
#[derive(Debug, Clone, Copy)]
pub struct Starts {
    /// Deterministic in key and seed.
    pub init: Init,
    /// Seed of `init`.
    pub seed: u64,
}

impl Trainer {
    /// Sets the optimizer's slot layout (its build does this before the first step runs):
    /// the slot tables to read with the params, or the fused row width. Opens what it needs.
    /// The handle table `t` holds the params' dim.
    pub fn configure(&self, t: &Table, slots: Slots<'_>, inits: &[f32]) -> Result<()> {
        check_float(t)?;
        if inits.len() != slots.count() {
            return Err(Error::invalid(format!(
                "{} slots but {} slot start values",
                slots.count(),
                inits.len()
            )));
        }
        let (wide, tables) = match slots {
            Slots::Fused(k) => (Some(self.wide_table(t, k)?), Vec::new()),
            Slots::Tables(names) => (None, self.slot_tables(t, names)?),
        };
        *sync::lock(&self.layout) = Some(Arc::new(Configured {
            slots: slots.owned(),
            inits: inits.to_vec(),
            wide,
            tables,
        }));
        Ok(())
    }

    /// Reads the params of `keys` into `out` (and, once an optimizer configured them, the slot
    /// rows), initialising missing params from `starts` and missing slots from their start
    /// values. `fused_slots` > 0 names the fused layout when nothing configured it yet (a
    /// served model). Returns the ticket an apply names the rows by (0 when not remembering).
    pub fn lookup(
        &self,
        t: &Table,
        keys: &Keys<'_>,
        starts: Starts,
        fused_slots: usize,
        out: LookupOut<'_>,
    ) -> Result<u32> {
        let (n, dim) = (keys.len(), check_float(t)?);
        if out.values.len() != n * dim * 4 || out.exists.len() != n {
            return Err(Error::invalid(format!(
                "lookup output must hold {n} rows of dim {dim} float32"
            )));
        }
        let mut cfg = self.configured();
        if cfg.is_none() && fused_slots > 0 {
            self.configure(t, Slots::Fused(fused_slots), &vec![0.0; fused_slots])?;
            cfg = self.configured();
        }
        let k = match &cfg {
            Some(c) if c.wide.is_some() || out.remember => c.slots.count(),
            _ => 0,
        };
        let width = dim * (1 + k);
        let mut rows = vec![0f32; n * width];
        match cfg.as_deref() {
            Some(Configured {
                wide: Some(wide), ..
            }) => wide.find(
                keys,
                &vec![0u8; width * 4],
                as_bytes_mut(&mut rows),
                Some(&mut *out.exists),
            )?,
            Some(c) if k > 0 => {
                read_separate(t, &c.tables, &c.inits, keys, dim, &mut rows, out.exists)?
            }
            _ => t.find(
                keys,
                &vec![0u8; dim * 4],
                as_bytes_mut(&mut rows),
                Some(out.exists),
            )?,
        }
        let fused_inits = match cfg.as_deref() {
            Some(c) if c.wide.is_some() => c.inits.as_slice(),
            _ => &[],
        };
        for i in 0..n {
            let row = &mut rows[i * width..(i + 1) * width];
            if out.exists[i] == 0 {
                starts.init.fill(starts.seed, keys.get(i), &mut row[..dim]);
                for (s, &v) in fused_inits.iter().enumerate() {
                    row[dim * (1 + s)..dim * (2 + s)].fill(v);
                }
            }
            out.values[i * dim * 4..(i + 1) * dim * 4].copy_from_slice(as_bytes(&row[..dim]));
        }
        if !out.remember {
            return Ok(0);
        }
        let read = match cfg.as_deref() {
            Some(c) if k > 0 => c.slots.clone(),
            _ => SlotsRead::Tables(Vec::new()),
        };
        Ok(self.remember(keys, read, rows))
    }

    fn configured(&self) -> Option<Arc<Configured>> {
        sync::lock(&self.layout).clone()
    }

    fn remember(&self, keys: &Keys<'_>, slots: SlotsRead, rows: Vec<f32>) -> u32 {
        let (key_data, key_offsets) = owned_keys(keys);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed) % (u32::MAX - 1) + 1;
        let mut pending = sync::lock(&self.pending);
        if pending.len() == PENDING_CAP {
            pending.pop_front();
        }
        pending.push_back(Pending {
            ticket,
            len: keys.len(),
            key_width: match *keys {
                Keys::Fixed { width, .. } => Some(width),
                Keys::Var { .. } => None,
            },
            key_data,
            key_offsets,
            slots,
            rows,
        });
        ticket
    }

    /// Applies one optimizer step to the rows named by `ids` (`(ticket << 32) | position`),
    /// whose gradients are `grads` (`ids.len() × dim`), in the configured layout. Duplicate
    /// keys' gradients are summed in input order. Returns the number of distinct rows written.
    pub fn apply(
        &self,
        t: &Table,
        ids: &[i64],
        grads: &[f32],
        opt: &Optimizer,
        step: Step,
    ) -> Result<usize> {
        let dim = check_float(t)?;
        if grads.len() != ids.len() * dim {
            return Err(Error::invalid(format!(
                "gradient must hold {} rows of dim {dim}, got {} elements",
                ids.len(),
                grads.len()
            )));
        }
        let cfg = self.configured().ok_or_else(|| {
            Error::invalid(format!(
                "{:?}: no optimizer configured this layer's slots (its build does)",
                t.spec().embedding_name
            ))
        })?;
        let k = opt.slots().len();
        if cfg.slots.count() != k {
            return Err(Error::invalid(format!(
                "the optimizer keeps {k} slots but the layer was configured with {}",
                cfg.slots.count()
            )));
        }
        let taken = self.take(ids)?;
        let batch = merge(&taken, ids, grads, dim, &cfg.slots)?;
        let keys = t.keys(&batch.key_data, &batch.key_offsets)?;
        let mut rows = batch.rows;
        if batch.need_slots {
            read_slots(&cfg.tables, &cfg.inits, &keys, dim, &mut rows)?;
        }
        let width = dim * (1 + k);
        for d in 0..keys.len() {
            let row = &mut rows[d * width..(d + 1) * width];
            let (param, slot) = row.split_at_mut(dim);
            opt.apply(step, param, slot, &batch.sums[d * dim..(d + 1) * dim]);
        }
        match &cfg.wide {
            Some(wide) => wide.insert(
                &keys,
                &Rows::Fixed {
                    data: as_bytes(&rows),
                    row: width * 4,
                },
            )?,
            None => write_separate(t, &cfg.tables, &keys, &rows, dim)?,
        }
        Ok(keys.len())
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

impl Trainer {
    /// The fused table: the handle table's name with rows of `dim × (1 + k)`.
    fn wide_table(&self, t: &Table, k: usize) -> Result<Arc<Table>> {
        let mut spec = t.spec().clone();
        spec.dim *= 1 + k;
        Ok(Arc::new(Table::open(t.config().clone(), spec).map_err(
            |e| {
                e.context(format!(
                    "cannot open the fused table {:?} with {k} slots",
                    t.spec().embedding_name
                ))
            },
        )?))
    }
}

/// A step's distinct keys (first-seen order), their summed gradients and starting rows.
struct Batch {
    key_data: Vec<u8>,
    key_offsets: Vec<u64>,
    sums: Vec<f32>,
    rows: Vec<f32>,
    /// Some pending lookup did not read the slots the apply needs.
    need_slots: bool,
}

/// Folds the gradient rows into one row per distinct key.
fn merge(
    taken: &[Pending],
    ids: &[i64],
    grads: &[f32],
    dim: usize,
    slots: &SlotsRead,
) -> Result<Batch> {
    let k = slots.count();
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut b = Batch {
        key_data: Vec::new(),
        key_offsets: vec![0],
        sums: Vec::new(),
        rows: Vec::new(),
        need_slots: false,
    };
    for (j, &id) in ids.iter().enumerate() {
        let (p, pos) = locate(taken, id)?;
        let key = p.key(pos);
        let d = match index.get(key) {
            Some(&d) => d,
            None => {
                let d = index.len();
                index.insert(key, d);
                b.key_data.extend_from_slice(key);
                b.key_offsets.push(b.key_data.len() as u64);
                b.sums.extend(std::iter::repeat_n(0f32, dim));
                let w = dim * (1 + p.slots.count());
                let src = &p.rows[pos * w..(pos + 1) * w];
                b.rows.extend_from_slice(&src[..dim]);
                if p.slots == *slots {
                    b.rows.extend_from_slice(&src[dim..]);
                } else if let SlotsRead::Fused(_) = slots {
                    return Err(Error::invalid(
                        "a fused-layout apply got rows looked up without their slots",
                    ));
                } else {
                    b.need_slots = k > 0;
                    b.rows.extend(std::iter::repeat_n(0f32, dim * k));
                }
                d
            }
        };
        let g = &grads[j * dim..(j + 1) * dim];
        for (s, &gi) in b.sums[d * dim..(d + 1) * dim].iter_mut().zip(g) {
            *s += gi;
        }
    }
    Ok(b)
}

/// Reads params into the params part of `rows` (and `exists`) and each slot table into its
/// part, in parallel.
fn read_separate(
    t: &Table,
    slots: &[Arc<Table>],
    inits: &[f32],
    keys: &Keys<'_>,
    dim: usize,
    rows: &mut [f32],
    exists: &mut [u8],
) -> Result<()> {
    let n = keys.len();
    let mut parts = vec![vec![0f32; n * dim]; 1 + slots.len()];
    let (params, slot_parts) = parts.split_first_mut().expect("params part");
    std::thread::scope(|s| -> Result<()> {
        let readers: Vec<_> = slots
            .iter()
            .zip(slot_parts.iter_mut())
            .zip(inits)
            .map(|((slot, part), &init)| {
                s.spawn(move || {
                    let dflt: Vec<u8> = init.to_le_bytes().repeat(dim);
                    slot.find(keys, &dflt, as_bytes_mut(part), None)
                })
            })
            .collect();
        t.find(
            keys,
            &vec![0u8; dim * 4],
            as_bytes_mut(params),
            Some(exists),
        )?;
        for r in readers {
            r.join()
                .map_err(|_| Error::new(ErrorKind::Internal, "a slot reader panicked"))??;
        }
        Ok(())
    })?;
    interleave(&parts, dim, rows);
    Ok(())
}

/// Reads the slot rows of `keys` into the slot part of `rows`.
fn read_slots(
    slots: &[Arc<Table>],
    inits: &[f32],
    keys: &Keys<'_>,
    dim: usize,
    rows: &mut [f32],
) -> Result<()> {
    let n = keys.len();
    let width = dim * (1 + slots.len());
    for (i, slot) in slots.iter().enumerate() {
        let mut read = vec![0f32; n * dim];
        let dflt: Vec<u8> = inits[i].to_le_bytes().repeat(dim);
        slot.find(keys, &dflt, as_bytes_mut(&mut read), None)?;
        for d in 0..n {
            let at = d * width + dim * (1 + i);
            rows[at..at + dim].copy_from_slice(&read[d * dim..(d + 1) * dim]);
        }
    }
    Ok(())
}

/// `rows[i]` = params[i] ‖ slot 1[i] ‖ … from one buffer per part.
fn interleave(parts: &[Vec<f32>], dim: usize, rows: &mut [f32]) {
    let width = dim * parts.len();
    for (p, part) in parts.iter().enumerate() {
        for (i, src) in part.chunks_exact(dim).enumerate() {
            rows[i * width + p * dim..i * width + (p + 1) * dim].copy_from_slice(src);
        }
    }
}

/// The handle table's dim; training tables hold float32.
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

impl Pending {
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
fn write_separate(
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

fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is scaled.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern written is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}
