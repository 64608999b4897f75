//! `accum`: read the rows, fold each key's occurrences client-side, write them back with a
//! compare-and-set script; contended keys fall back to the per-element script. The value
//! arithmetic and the scripts are in [`crate::accum`].

use std::sync::Mutex;

use super::find::ReadRows;
use super::stats::Op;
use super::{RedisTable, Window};
use crate::accum;
use crate::cluster::dispatch::{Kind, Request};
use crate::codec::{Keys, Rows};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::{Chunk, Plan};
use crate::resp::conn::{Conn, Reply};
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
        self.check_accum_args(deltas, exists, keys.len())?;
        let mut rows = 0;
        self.each_window(keys, |w| {
            let (a, b) = (w.start, w.end);
            rows += self.accum_window(w, &deltas.sub(a, b), &exists[a..b])?;
            Ok(())
        })?;
        Ok(rows)
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
    fn accum_window(&self, w: &Window<'_>, deltas: &Rows<'_>, exists: &[u8]) -> Result<usize> {
        let plan = &w.plan;
        let vt = self.stored_vt;
        let kss = self.cfg.keys_sending_size;
        let mut todo = vec![true; plan.distinct()];
        for attempt in 0..=ACCUM_CAS_ROUNDS {
            if attempt >= CAS_ROUNDS_BEFORE_SCRIPT && accum::script_supports(vt) {
                // Contended keys: apply them inside the server, which always makes progress.
                let (order, chunks) = plan.subset(&todo, kss);
                let add = AddByScript {
                    table: self,
                    keys: &w.keys,
                    plan,
                    order: &order,
                    deltas,
                    exists,
                };
                self.dispatch(&chunks, &add)?;
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
            let note = "; nothing was accumulated for it";
            let read = ReadRows::new(self, w, &order, Kind::WRITE, Some((self.row, note)));
            self.dispatch(&chunks, &read)?;
            let stored = read.into_rows();
            // 2. Fold each key's occurrences into its row, client-side.
            let updates = self.fold_rows(deltas, exists, plan, &order, &stored, &mut todo);
            // 3. Write each new row only if the key still holds what it was computed from.
            let (order, chunks) = plan.subset(&todo, kss);
            if chunks.is_empty() {
                break;
            }
            let cas = CompareAndSet {
                table: self,
                keys: &w.keys,
                plan,
                order: &order,
                stored: &stored,
                updates: &updates,
                lost: Mutex::default(),
            };
            self.dispatch(&chunks, &cas)?;
            // Keys that lost a race are read and recomputed in the next round.
            let lost = sync::into_inner(cas.lost);
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
}

/// Accum's write step as a [`Request`]: the compare-and-set script per chunk, which gives each
/// key its update only if it still holds its `stored` row, and replies the keys that lost
/// the race. Never resent once sent: a CAS whose connection failed after sending may have
/// applied (redirected or refused commands never ran, and are resent).
struct CompareAndSet<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
    /// The distinct keys the chunks are cut from.
    order: &'a [u32],
    /// Per distinct key, the row read (the baseline) and the row to write.
    stored: &'a [Option<Vec<u8>>],
    updates: &'a [Option<Vec<u8>>],
    /// The distinct keys that lost the race.
    lost: Mutex<Vec<u32>>,
}

impl Request for CompareAndSet<'_> {
    fn kind(&self) -> Kind {
        Kind::WRITE_ONCE
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        c.begin(4 + 3 * (ch.end - ch.start));
        c.arg(b"EVAL");
        c.arg(accum::CAS_SCRIPT.as_bytes());
        c.arg(b"1");
        c.arg(self.table.bucket_name(ch));
        for &d in &self.order[ch.start..ch.end] {
            let d = d as usize;
            c.arg(self.keys.get(self.plan.first[d] as usize));
            match &self.stored[d] {
                Some(old) => {
                    c.arg_header(1 + old.len());
                    c.buf().push(1);
                    c.buf().extend_from_slice(old);
                    c.arg_end();
                }
                None => c.arg(&[0]),
            }
            c.arg(self.updates[d].as_deref().unwrap_or_default());
        }
    }

    fn decode(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let Reply::Array(failed) = c.read_reply()? else {
            return Err(Error::new(
                ErrorKind::Server,
                "accum: the CAS script replied with a non-array",
            ));
        };
        let mut lost = sync::lock(&self.lost);
        for f in failed {
            if let Reply::Int(i) = f {
                let at = ch.start + (i as usize).saturating_sub(1);
                if let Some(&d) = self.order.get(at) {
                    lost.push(d);
                }
            }
        }
        Ok(())
    }
}

/// Accum's fallback for contended keys as a [`Request`]: the per-element script
/// ([`accum::ADD_SCRIPT`]) with every occurrence of the chunk's keys, applied atomically in
/// the server. Never resent once sent (it adds).
struct AddByScript<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
    /// The distinct keys the chunks are cut from.
    order: &'a [u32],
    deltas: &'a Rows<'a>,
    exists: &'a [u8],
}

impl AddByScript<'_> {
    /// The positions of the keys of `ch`, in the order their pairs are sent.
    fn occurrences<'s>(&'s self, ch: &Chunk) -> impl Iterator<Item = usize> + 's {
        let ds = &self.order[ch.start..ch.end];
        ds.iter().flat_map(|&d| self.plan.positions(d as usize))
    }
}

impl Request for AddByScript<'_> {
    fn kind(&self) -> Kind {
        Kind::WRITE_ONCE
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        let t = self.table;
        let flags: Vec<u8> = self
            .occurrences(ch)
            .map(|p| (self.exists[p] != 0) as u8)
            .collect();
        c.begin(6 + 2 * flags.len());
        c.arg(b"EVAL");
        c.arg(accum::ADD_SCRIPT.as_bytes());
        c.arg(b"1");
        c.arg(t.bucket_name(ch));
        c.arg(t.stored_vt.tf_name().as_bytes());
        c.arg(&flags);
        for p in self.occurrences(ch) {
            c.arg(self.keys.get(p));
            c.arg_header(self.deltas.encoded_len(p));
            self.deltas.encode(p, c.buf());
            c.arg_end();
        }
    }

    fn decode(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let reply = c.read_reply()?;
        let (pair, len) = match accum::script_result(&reply) {
            Some(accum::ScriptResult::Applied) => return Ok(()),
            Some(accum::ScriptResult::WrongLength { pair, len }) => (pair, len),
            None => return Err(c.protocol(format!("the accum script replied {reply:?}"))),
        };
        let t = self.table;
        match self.occurrences(ch).nth(pair.wrapping_sub(1)) {
            Some(p) => Err(t.key_error(
                t.bucket_name(ch),
                self.keys.get(p),
                format!("stored value has {len} bytes, expected {}; the command holding this key was not applied", t.row),
            )),
            None => Err(c.protocol(format!("the accum script named pair {pair}, beyond the command"))),
        }
    }
}
