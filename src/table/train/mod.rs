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
//! Invariant: only [`Table`]'s operations are used, so this file holds no I/O of its own;
//! every read and write goes through `find_untracked` and `insert_untracked` and their
//! executor. The handle table's statistics count each step once, as `train_lookup` (keys,
//! hits) and `train_apply` (rows written).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use super::stats::Op;
use super::{Table, TableSpec};
use crate::cluster::route::Access;
use crate::codec::{Keys, Rows, ValueType};
use crate::config::TrainUpdates;
use crate::error::{Error, Result};
use crate::optim::{Init, Optimizer, Step};
use crate::sync;

mod accumulate;
mod exact;
mod keyset;
mod rows;
mod together;

use accumulate::Accumulated;
use keyset::KeySet;
use rows::{as_bytes, as_bytes_mut, read_separate, read_slots, write_separate};

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
    /// The distinct keys, and each looked-up position's index among them.
    keys: KeySet,
    /// The slot rows that follow the params in `rows`.
    slots: SlotsRead,
    /// Per distinct key: `dim` params, then `dim` elements per slot read.
    rows: Vec<f32>,
    /// Per distinct key, bit `i`: table `i` (params, then each slot read) held its row; the
    /// others were filled with their initial values.
    present: Vec<u8>,
}

/// The training state kept beside a layer's handle table: the optimizer's slot layout, the
/// tables it needs, and the pending lookups.
#[derive(Default)]
pub struct Trainer {
    layout: Mutex<Option<Arc<Configured>>>,
    slots: Mutex<Vec<(String, Arc<Table>)>>,
    pending: Mutex<VecDeque<Pending>>,
    next_ticket: AtomicU32,
    /// The row gradients of the current `gradient_accumulation_steps` cycle.
    accumulated: Mutex<Accumulated>,
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
        // A new optimizer starts its cycle empty, as Keras's new accumulators do.
        *sync::lock(&self.accumulated) = Accumulated::default();
        Ok(())
    }

    /// Reads the params of `keys` into `out` (and, once an optimizer configured them, the slot
    /// rows), initialising missing params from `starts` and missing slots from their start
    /// values. Each distinct key is read once. `fused_slots` > 0 names the fused layout when
    /// nothing configured it yet (a served model). Returns the ticket an apply names the rows
    /// by (0 when not remembering).
    pub fn lookup(
        &self,
        t: &Table,
        keys: &Keys<'_>,
        starts: Starts,
        fused_slots: usize,
        out: LookupOut<'_>,
    ) -> Result<u32> {
        t.stats().track(Op::TrainLookup, || {
            self.lookup_rows(t, keys, starts, fused_slots, out)
        })
    }

    fn lookup_rows(
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
        let set = KeySet::new(keys);
        let (nd, width) = (set.len(), dim * (1 + k));
        let mut rows = vec![0f32; nd * width];
        let mut found = vec![0u8; nd];
        let dk = set.keys()?;
        read_stored(t, cfg.as_deref(), k, &dk, dim, &mut rows, &mut found)?;
        let fused_inits = match cfg.as_deref() {
            Some(c) if c.wide.is_some() => c.inits.as_slice(),
            _ => &[],
        };
        for (d, row) in rows.chunks_exact_mut(width).enumerate() {
            if found[d] & 1 == 0 {
                starts.init.fill(starts.seed, set.get(d), &mut row[..dim]);
                for (s, &v) in fused_inits.iter().enumerate() {
                    row[dim * (1 + s)..dim * (2 + s)].fill(v);
                }
            }
        }
        let row_bytes = dim * 4;
        for (i, &d) in set.of.iter().enumerate() {
            let d = d as usize;
            out.values[i * row_bytes..(i + 1) * row_bytes]
                .copy_from_slice(as_bytes(&rows[d * width..d * width + dim]));
            out.exists[i] = found[d] & 1;
        }
        let hits = out.exists.iter().filter(|&&e| e != 0).count();
        let rows_found = found.iter().filter(|&&f| f & 1 != 0).count();
        t.stats().looked_up(n, hits, rows_found * width * 4);
        if !out.remember {
            return Ok(0);
        }
        let read = match cfg.as_deref() {
            Some(c) if k > 0 => c.slots.clone(),
            _ => SlotsRead::Tables(Vec::new()),
        };
        Ok(self.remember(set, read, rows, found))
    }

    fn configured(&self) -> Option<Arc<Configured>> {
        sync::lock(&self.layout).clone()
    }

    fn remember(&self, keys: KeySet, slots: SlotsRead, rows: Vec<f32>, present: Vec<u8>) -> u32 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed) % (u32::MAX - 1) + 1;
        let mut pending = sync::lock(&self.pending);
        if pending.len() == PENDING_CAP {
            pending.pop_front();
        }
        pending.push_back(Pending {
            ticket,
            keys,
            slots,
            rows,
            present,
        });
        ticket
    }

    /// Applies one optimizer step to the rows named by `ids` (`(ticket << 32) | position`),
    /// whose gradients are `grads` (`ids.len() × dim`), in the configured layout. Duplicate
    /// keys' gradients are summed in input order, then clipped as `step.clip` says. Returns
    /// the number of distinct rows written.
    pub fn apply(
        &self,
        t: &Table,
        ids: &[i64],
        grads: &[f32],
        opt: &Optimizer,
        step: Step,
    ) -> Result<usize> {
        t.stats().track(Op::TrainApply, || {
            let rows = self.apply_rows(t, ids, grads, opt, step)?;
            let width = check_float(t)? * (1 + opt.slots().len());
            t.stats().wrote(rows, rows * width * 4);
            Ok(rows)
        })
    }

    fn apply_rows(
        &self,
        t: &Table,
        ids: &[i64],
        grads: &[f32],
        opt: &Optimizer,
        step: Step,
    ) -> Result<usize> {
        let dim = check_float(t)?;
        check_grads(ids, grads, dim)?;
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
        let width = dim * (1 + k);
        let mut batch = merge(self.take(ids)?, ids, grads, dim, &cfg.slots)?;
        if batch.need_slots {
            let keys = batch.keys.keys()?;
            read_slots(
                &cfg.tables,
                &cfg.inits,
                &keys,
                dim,
                &mut batch.rows,
                &mut batch.present,
            )?;
        }
        if let Some(a) = step.accumulate {
            let mut held = sync::lock(&self.accumulated);
            if !a.update {
                held.add(&batch, dim, width)?;
                return Ok(0);
            }
            held.finish(&mut batch, dim, width, a.steps)?;
        }
        let keys = batch.keys.keys()?;
        let (mut rows, mut present, mut sums) = (batch.rows, batch.present, batch.sums);
        if let Some(scale) = step.global_scale {
            for g in sums.iter_mut() {
                *g *= scale;
            }
        }
        step.clip.apply(&mut sums);
        let exact = t.config().rde_train_updates == TrainUpdates::Exact;
        let mut old = if exact { rows.clone() } else { Vec::new() };
        let step_row = |d: usize, row: &mut [f32]| {
            let (param, slot) = row.split_at_mut(dim);
            opt.apply(step, param, slot, &sums[d * dim..(d + 1) * dim]);
        };
        for (d, row) in rows.chunks_exact_mut(width).enumerate() {
            step_row(d, row);
        }
        // The Redis tables one exact write covers (the fused one, or params and slots
        // aligned), with the floats of each one's part of a row.
        let aligned = together::aligned(t, &cfg.tables);
        let exact_on: Option<(Vec<&super::RedisTable>, usize)> = match (&cfg.wide, exact) {
            (_, false) => None,
            (Some(wide), true) => wide.redis().map(|w| (vec![w], width)),
            (None, true) => match (&aligned, t.redis()) {
                (Some(all), _) => Some((all.clone(), dim)),
                (None, Some(_)) => {
                    return Err(Error::invalid(format!(
                        "{:?}: exact training updates need its slot tables laid out as the \
                         params table (their layout records differ); set rde_train_updates \
                         to \"last_writer_wins\" to write them separately",
                        t.spec().embedding_name
                    )))
                }
                (None, None) => None,
            },
        };
        if let Some((tables, part)) = exact_on {
            let mut step_rows = exact::StepRows {
                tables: &tables,
                keys: &batch.keys,
                part,
                present: &mut present,
                old: &mut old,
                new: &mut rows,
            };
            step_rows.write(t.stats(), step_row)?;
            return Ok(keys.len());
        }
        match &cfg.wide {
            Some(wide) => {
                wide.insert_untracked(
                    &keys,
                    &Rows::Fixed {
                        data: as_bytes(&rows),
                        row: width * 4,
                    },
                )?;
            }
            None if aligned.is_some() => {
                together::write(&aligned.expect("checked"), &keys, as_bytes(&rows), dim)?
            }
            None => write_separate(t, &cfg.tables, &keys, &rows, dim)?,
        }
        Ok(keys.len())
    }

    /// The squared L2 norm of the gradient the apply of `ids` and `grads` would hand the
    /// optimizer: duplicate keys summed, and under accumulation the cycle's average on its
    /// last step (0 on the others, which update nothing). For Keras's `global_clipnorm`, whose
    /// norm spans every variable; it changes nothing.
    pub fn grad_sq_norm(&self, t: &Table, ids: &[i64], grads: &[f32], step: Step) -> Result<f64> {
        let dim = check_float(t)?;
        check_grads(ids, grads, dim)?;
        if matches!(step.accumulate, Some(a) if !a.update) {
            return Ok(0.0);
        }
        let mut index: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
        let mut sums: Vec<f32> = Vec::new();
        {
            let pending = sync::lock(&self.pending);
            for (j, &id) in ids.iter().enumerate() {
                let (ticket, pos) = split_id(id);
                let p = pending
                    .iter()
                    .find(|p| p.ticket == ticket)
                    .ok_or_else(|| not_pending(ticket))?;
                let &d = p
                    .keys
                    .of
                    .get(pos)
                    .ok_or_else(|| bad_position(pos, ticket, p.keys.of.len()))?;
                let next = index.len();
                let d = *index
                    .entry(p.keys.get(d as usize).to_vec())
                    .or_insert_with(|| {
                        sums.extend(std::iter::repeat_n(0f32, dim));
                        next
                    });
                for (s, &g) in sums[d * dim..(d + 1) * dim]
                    .iter_mut()
                    .zip(&grads[j * dim..(j + 1) * dim])
                {
                    *s += g;
                }
            }
        }
        if let Some(a) = step.accumulate {
            sync::lock(&self.accumulated).fold_into(&mut index, &mut sums, dim, a.steps);
        }
        Ok(sums.iter().map(|&g| f64::from(g) * f64::from(g)).sum())
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
                None => return Err(not_pending(w)),
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
    keys: KeySet,
    sums: Vec<f32>,
    rows: Vec<f32>,
    /// Per distinct key: which tables held its row as read (see [`Pending::present`]).
    present: Vec<u8>,
    /// Some pending lookup did not read the slots the apply needs.
    need_slots: bool,
}

/// Folds the gradient rows into one row per distinct key of the lookups they name. With one
/// lookup (the usual step) its distinct keys and rows are used as they are; several are
/// merged by key. Keys no gradient row names are dropped, so they are not written.
fn merge(
    taken: Vec<Pending>,
    ids: &[i64],
    grads: &[f32],
    dim: usize,
    slots: &SlotsRead,
) -> Result<Batch> {
    let (k, width) = (slots.count(), dim * (1 + slots.count()));
    let need_slots = k > 0 && taken.iter().any(|p| p.slots != *slots);
    let (keys, mut rows, mut present, remap) = if taken.len() == 1 && !need_slots {
        let mut p = taken.into_iter().next().expect("one lookup");
        let identity = vec![(0..p.keys.len() as u32).collect::<Vec<_>>()];
        let of = std::mem::take(&mut p.keys.of);
        (
            p.keys,
            p.rows,
            p.present,
            (vec![p.ticket], vec![of], identity),
        )
    } else {
        union(&taken, dim, width)
    };
    let (tickets, ofs, maps) = remap;
    let mut sums = vec![0f32; keys.len() * dim];
    let mut touched = vec![false; keys.len()];
    for (j, &id) in ids.iter().enumerate() {
        let (ticket, pos) = split_id(id);
        let ti = tickets
            .iter()
            .position(|&t| t == ticket)
            .expect("take() returned every ticket the ids name");
        let of = &ofs[ti];
        if pos >= of.len() {
            return Err(bad_position(pos, ticket, of.len()));
        }
        let d = maps[ti][of[pos] as usize] as usize;
        touched[d] = true;
        let g = &grads[j * dim..(j + 1) * dim];
        for (s, &gi) in sums[d * dim..(d + 1) * dim].iter_mut().zip(g) {
            *s += gi;
        }
    }
    let mut keys = keys;
    if touched.iter().any(|t| !t) {
        let mut kept = KeySet::empty_like(&keys);
        let (mut kept_rows, mut kept_sums, mut kept_present) = (Vec::new(), Vec::new(), Vec::new());
        for d in (0..keys.len()).filter(|&d| touched[d]) {
            kept.push(keys.get(d));
            kept_rows.extend_from_slice(&rows[d * width..(d + 1) * width]);
            kept_sums.extend_from_slice(&sums[d * dim..(d + 1) * dim]);
            kept_present.push(present[d]);
        }
        (keys, rows, sums, present) = (kept, kept_rows, kept_sums, kept_present);
        return Ok(Batch {
            keys,
            sums,
            rows,
            present,
            need_slots,
        });
    }
    rows.truncate(keys.len() * width);
    present.truncate(keys.len());
    Ok(Batch {
        keys,
        sums,
        rows,
        present,
        need_slots,
    })
}

/// Per lookup: its ticket, its positions' distinct indices, and its distinct → merged index.
type Remap = (Vec<u32>, Vec<Vec<u32>>, Vec<Vec<u32>>);

/// The merged distinct keys of several lookups and their rows (params as read; slots as read,
/// or zero where a lookup did not read them), with each lookup's remap.
fn union(taken: &[Pending], dim: usize, width: usize) -> (KeySet, Vec<f32>, Vec<u8>, Remap) {
    let mut keys = KeySet::empty_like(&taken[0].keys);
    let mut rows = Vec::new();
    let mut present = Vec::new();
    let mut index: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
    let mut remap: Remap = (Vec::new(), Vec::new(), Vec::new());
    for p in taken {
        let w = dim * (1 + p.slots.count());
        let mut map = Vec::with_capacity(p.keys.len());
        for d in 0..p.keys.len() {
            let key = p.keys.get(d);
            let g = match index.get(key) {
                Some(&g) => g,
                None => {
                    let g = keys.len() as u32;
                    index.insert(key.to_vec(), g);
                    keys.push(key);
                    let src = &p.rows[d * w..(d + 1) * w];
                    // Slot bits of a lookup that read no slots are set by the apply's read.
                    present.push(p.present[d]);
                    rows.extend_from_slice(&src[..dim]);
                    if w == width {
                        rows.extend_from_slice(&src[dim..]);
                    } else {
                        rows.extend(std::iter::repeat_n(0f32, width - dim));
                    }
                    g
                }
            };
            map.push(g);
        }
        remap.0.push(p.ticket);
        remap.1.push(p.keys.of.clone());
        remap.2.push(map);
    }
    (keys, rows, present, remap)
}

/// A gradient id's `(ticket, position)`.
fn split_id(id: i64) -> (u32, usize) {
    ((id as u64 >> 32) as u32, (id as u64 & 0xffff_ffff) as usize)
}

/// A gradient of `dim`-wide rows, one per id.
fn check_grads(ids: &[i64], grads: &[f32], dim: usize) -> Result<()> {
    if grads.len() != ids.len() * dim {
        return Err(Error::invalid(format!(
            "gradient must hold {} rows of dim {dim}, got {} elements",
            ids.len(),
            grads.len()
        )));
    }
    Ok(())
}

fn not_pending(ticket: u32) -> Error {
    Error::invalid(format!(
        "the gradient names training lookup {ticket}, which is not pending: each training-mode \
         lookup is applied once, and only the last {PENDING_CAP} are kept"
    ))
}

fn bad_position(pos: usize, ticket: u32, read: usize) -> Error {
    Error::invalid(format!(
        "gradient row names position {pos} of training lookup {ticket}, which read {read} keys"
    ))
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

/// Reads the stored rows of the distinct keys `dk` into `rows` (`dim` params, then `k` slot
/// rows each, as the optimizer configured them), flagging those found: from the fused table,
/// in one pipeline per server with the slot tables (`together`), table by table, or the
/// params alone.
fn read_stored(
    t: &Table,
    cfg: Option<&Configured>,
    k: usize,
    dk: &Keys<'_>,
    dim: usize,
    rows: &mut [f32],
    found: &mut [u8],
) -> Result<()> {
    let width = dim * (1 + k);
    match cfg {
        Some(Configured {
            wide: Some(wide), ..
        }) => {
            wide.find_untracked(dk, &vec![0u8; width * 4], as_bytes_mut(rows), Some(found))?;
        }
        Some(c) if k > 0 && together::aligned(t, &c.tables).is_some() => together::read(
            &together::aligned(t, &c.tables).expect("checked"),
            Access::Read,
            &c.inits,
            dk,
            dim,
            as_bytes_mut(rows),
            found,
        )?,
        Some(c) if k > 0 => read_separate(t, &c.tables, &c.inits, dk, dim, rows, found)?,
        _ => {
            t.find_untracked(dk, &vec![0u8; dim * 4], as_bytes_mut(rows), Some(found))?;
        }
    }
    Ok(())
}
