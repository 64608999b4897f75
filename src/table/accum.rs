//! `accum`: read the rows, fold each key's occurrences client-side, write them back with a
//! compare-and-set script; contended keys fall back to the per-element script. The value
//! arithmetic and the scripts are in [`crate::accum`].

use std::sync::Mutex;

use super::stats::Op;
use super::RedisTable;
use crate::accum;
use crate::cluster::dispatch::{in_windows, Commands};
use crate::cluster::route::Access;
use crate::codec::{Keys, Rows};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::{Chunk, Plan};
use crate::resp::conn::Reply;
use crate::stats;
use crate::sync;

/// Read-compute-CAS rounds an accum may take when other writers keep changing its keys.
const ACCUM_CAS_ROUNDS: usize = 64;

/// After this many lost CAS rounds, the remaining keys are accumulated by the server-side
/// script (for the value types it handles).
const CAS_ROUNDS_BEFORE_SCRIPT: usize = 3;

/// The raw bytes of fixed-size rows.
fn deltas_bytes<'a>(rows: &Rows<'a>) -> &'a [u8] {
    match *rows {
        Rows::Fixed { data, .. } => data,
        Rows::Str { data, .. } => data,
    }
}

impl RedisTable {
    /// TFRA's bp_v2 accumulate, atomic per command on the server (see [`crate::accum`]).
    pub fn accum(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<()> {
        self.stats.track(Op::Accum, || {
            let rows = self.accum_untracked(keys, deltas, exists)?;
            self.stats.wrote(rows, rows * self.row);
            Ok(())
        })
    }

    /// [`Table::accum`] without the table's statistics; returns the distinct rows updated.
    fn accum_untracked(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<usize> {
        let _timer = stats::CallTimer::start();
        match self.compact(deltas, keys.len(), "values_or_deltas")? {
            Some(stored) => self.accum_rows(
                keys,
                &Rows::Fixed {
                    data: &stored,
                    row: self.row,
                },
                exists,
            ),
            None => self.accum_rows(keys, deltas, exists),
        }
    }

    fn accum_rows(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<usize> {
        let n = keys.len();
        self.check_accum_args(deltas, exists, n)?;
        let mut rows = 0;
        if n == 0 {
            return Ok(rows);
        }
        if let Some(done) = in_windows(n, |a, b| {
            rows += self.accum_window(&keys.sub(a, b), &deltas.sub(a, b), &exists[a..b])?;
            Ok(())
        }) {
            return done.map(|()| rows);
        }
        self.accum_window(keys, deltas, exists)
    }

    fn check_accum_args(&self, deltas: &Rows<'_>, exists: &[u8], n: usize) -> Result<()> {
        let vt = self.stored_vt;
        if !accum::supports(vt) {
            return Err(Error::invalid(format!(
                "accum does not support {} values (supported: float, double, half, bfloat16, int8, int32, int64)",
                vt.tf_name()
            )));
        }
        self.check_rows(deltas, n, "values_or_deltas")?;
        if exists.len() != n {
            return Err(Error::invalid(format!(
                "exists has {} entries but there are {n} keys",
                exists.len()
            )));
        }
        Ok(())
    }

    /// One window of an accum: rounds of read, fold and compare-and-set until no key lost a
    /// race; keys still contended after [`CAS_ROUNDS_BEFORE_SCRIPT`] rounds go through the
    /// per-element script.
    fn accum_window(&self, keys: &Keys<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<usize> {
        let plan = self.plan(keys);
        let vt = self.stored_vt;
        let kss = self.cfg.keys_sending_size;
        let mut todo = vec![true; plan.distinct()];
        for attempt in 0..=ACCUM_CAS_ROUNDS {
            if attempt >= CAS_ROUNDS_BEFORE_SCRIPT && accum::script_supports(vt) {
                // Contended keys: apply them inside the server, which always makes progress.
                self.accum_by_script(keys, deltas, exists, &plan, &todo)?;
                break;
            }
            if attempt > 0 {
                // Let the writers that won the last round get out of the way.
                std::thread::sleep(std::time::Duration::from_micros(200 * attempt as u64));
            }
            // 1. Read the current rows (from the master: they are the CAS baseline).
            let (order, chunks) = plan.subset(&todo, kss);
            if chunks.is_empty() {
                break;
            }
            let stored = self.read_baseline(keys, &plan, &order, &chunks)?;
            // 2. Fold each key's occurrences into its row, client-side.
            let updates = self.fold_rows(deltas, exists, &plan, &order, &stored, &mut todo);
            // 3. Write each new row only if the key still holds what it was computed from.
            let (cas_order, cas_chunks) = plan.subset(&todo, kss);
            if cas_chunks.is_empty() {
                break;
            }
            let lost =
                self.write_if_unchanged(keys, &plan, &cas_order, &cas_chunks, &stored, &updates)?;
            // Keys that lost a race are read and recomputed in the next round.
            todo.iter_mut().for_each(|t| *t = false);
            if lost.is_empty() {
                break;
            }
            for d in lost {
                todo[d as usize] = true;
            }
            if attempt == ACCUM_CAS_ROUNDS {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "accum on {}: some keys kept changing under concurrent writers for {ACCUM_CAS_ROUNDS} rounds; the rest were applied",
                        self.spec.embedding_name
                    ),
                ));
            }
        }
        self.touch(&plan.chunks);
        Ok(plan.distinct())
    }

    /// The stored row of each distinct key in `order` (None if absent), indexed by distinct
    /// key; a row of the wrong length is an error naming its key.
    fn read_baseline(
        &self,
        keys: &Keys<'_>,
        plan: &Plan,
        order: &[u32],
        chunks: &[Chunk],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let row = self.row;
        let stored: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; plan.distinct()]);
        let req = Commands::idempotent(
            Access::Write,
            |c, ch| self.encode_hmget(c, ch, order, plan, keys),
            |c, ch| {
                self.read_hmget_header(c, ch)?;
                for &d in &order[ch.start..ch.end] {
                    let v = match c.read_bulk_len()? {
                        Some(len) if len == row => {
                            let mut v = vec![0u8; len];
                            c.payload(&mut v)?;
                            Some(v)
                        }
                        Some(len) => {
                            return Err(self.key_error(
                                self.bucket_name(ch),
                                keys.get(plan.first[d as usize] as usize),
                                format!("stored value has {len} bytes, expected {row}; nothing was accumulated for it"),
                            ))
                        }
                        None => None,
                    };
                    sync::lock(&stored)[d as usize] = v;
                }
                Ok(())
            },
        );
        self.dispatch(chunks, &req)?;
        Ok(sync::into_inner(stored))
    }

    /// Folds the occurrences of each key in `order` into its stored row: the rows to write,
    /// indexed by distinct key; `todo` keeps only the keys whose row changes.
    fn fold_rows(
        &self,
        deltas: &Rows<'_>,
        exists: &[u8],
        plan: &Plan,
        order: &[u32],
        stored: &[Option<Vec<u8>>],
        todo: &mut [bool],
    ) -> Vec<Option<Vec<u8>>> {
        let row = self.row;
        let mut updates: Vec<Option<Vec<u8>>> = vec![None; plan.distinct()];
        let delta_bytes = deltas_bytes(deltas);
        for &d in order {
            let d = d as usize;
            let ops = plan
                .positions(d)
                .map(|p| (exists[p] != 0, &delta_bytes[p * row..(p + 1) * row]));
            updates[d] = accum::fold(self.stored_vt, stored[d].as_deref(), ops);
            todo[d] = updates[d].is_some();
        }
        updates
    }

    /// Sends the compare-and-set script for the keys in `order`: each key gets its update only
    /// if it still holds its `stored` row. Returns the keys that lost the race.
    fn write_if_unchanged(
        &self,
        keys: &Keys<'_>,
        plan: &Plan,
        order: &[u32],
        chunks: &[Chunk],
        stored: &[Option<Vec<u8>>],
        updates: &[Option<Vec<u8>>],
    ) -> Result<Vec<u32>> {
        let lost: Mutex<Vec<u32>> = Mutex::new(Vec::new());
        // Not idempotent: a CAS whose connection failed after sending may have applied, so
        // it is reported, never resent. Redirected or refused commands are resent.
        self.dispatch(
            chunks,
            &Commands::once(
                Access::Write,
                |c, ch| {
                    c.begin(4 + 3 * (ch.end - ch.start));
                    c.arg(b"EVAL");
                    c.arg(accum::CAS_SCRIPT.as_bytes());
                    c.arg(b"1");
                    c.arg(self.bucket_name(ch));
                    for &d in &order[ch.start..ch.end] {
                        let d = d as usize;
                        c.arg(keys.get(plan.first[d] as usize));
                        match &stored[d] {
                            Some(old) => {
                                c.arg_header(1 + old.len());
                                c.buf().push(1);
                                c.buf().extend_from_slice(old);
                                c.arg_end();
                            }
                            None => c.arg(&[0]),
                        }
                        c.arg(updates[d].as_deref().unwrap_or_default());
                    }
                },
                |c, ch| {
                    let Reply::Array(failed) = c.read_reply()? else {
                        return Err(Error::new(
                            ErrorKind::Server,
                            "accum: the CAS script replied with a non-array",
                        ));
                    };
                    let mut lost = sync::lock(&lost);
                    for f in failed {
                        if let Reply::Int(i) = f {
                            if let Some(&d) = order.get(ch.start + (i as usize).saturating_sub(1)) {
                                lost.push(d);
                            }
                        }
                    }
                    Ok(())
                },
            ),
        )?;
        Ok(sync::into_inner(lost))
    }

    /// Applies the occurrences of the keys marked in `todo` with [`accum::ADD_SCRIPT`].
    fn accum_by_script(
        &self,
        keys: &Keys<'_>,
        deltas: &Rows<'_>,
        exists: &[u8],
        plan: &Plan,
        todo: &[bool],
    ) -> Result<()> {
        let vt = self.stored_vt;
        let (order, chunks) = plan.subset(todo, self.cfg.keys_sending_size);
        let occurrences = |d: u32| plan.positions(d as usize);
        let req = Commands::once(
            Access::Write,
            |c, ch| {
                let ds = &order[ch.start..ch.end];
                let flags: Vec<u8> = ds
                    .iter()
                    .flat_map(|&d| occurrences(d).map(|p| (exists[p] != 0) as u8))
                    .collect();
                let pairs = flags.len();
                c.begin(6 + 2 * pairs);
                c.arg(b"EVAL");
                c.arg(accum::ADD_SCRIPT.as_bytes());
                c.arg(b"1");
                c.arg(self.bucket_name(ch));
                c.arg(vt.tf_name().as_bytes());
                c.arg(&flags);
                for &d in ds {
                    for p in occurrences(d) {
                        c.arg(keys.get(p));
                        c.arg_header(deltas.encoded_len(p));
                        deltas.encode(p, c.buf());
                        c.arg_end();
                    }
                }
            },
            |c, ch| {
                let reply = c.read_reply()?;
                let (pair, len) = match accum::script_result(&reply) {
                    Some(accum::ScriptResult::Applied) => return Ok(()),
                    Some(accum::ScriptResult::WrongLength { pair, len }) => (pair, len),
                    None => return Err(c.protocol(format!("the accum script replied {reply:?}"))),
                };
                let p = order[ch.start..ch.end]
                    .iter()
                    .flat_map(|&d| occurrences(d))
                    .nth(pair.wrapping_sub(1));
                match p {
                    Some(p) => Err(self.key_error(
                        self.bucket_name(ch),
                        keys.get(p),
                        format!("stored value has {len} bytes, expected {}; the command holding this key was not applied", self.row),
                    )),
                    None => Err(c.protocol(format!("the accum script named pair {pair}, beyond the command"))),
                }
            },
        );
        self.dispatch(&chunks, &req)
    }
}
