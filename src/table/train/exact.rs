//! Exact updates (`rde_train_updates: "exact"`, the default on Redis): a step's new rows are
//! written only onto the rows they were computed from. One script per chunk compares each key's
//! stored params and slot rows with the bytes the step's lookup read and, if all still match,
//! sets them all; otherwise it names the key. A key that lost the race is read again from its
//! master, its optimizer step recomputed from the row as it now stands (same summed gradient),
//! and compared-and-set again, until every key landed. So rows and slots end as some serial
//! order of all workers' steps would leave them, and no update is lost.
//!
//! Invariant: the tables given are aligned (`together::aligned`, or the one fused table), so a
//! key's params and slot rows sit in buckets of one cluster slot and one script covers them.
//! Each round makes progress for some writer (the first script to run on a row wins it); the
//! rounds of one writer are bounded ([`MAX_ROUNDS`]) with randomised, growing pauses between.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use super::keyset::KeySet;
use super::rows::{as_bytes, as_bytes_mut};
use super::together;
use crate::cluster::dispatch::{Kind, Request};
use crate::cluster::route::Access;
use crate::error::{Error, ErrorKind, Result};
use crate::plan::{Chunk, Plan};
use crate::resp::conn::{Conn, Reply};
use crate::sync;
use crate::table::stats::TableStats;
use crate::table::RedisTable;

/// Compare-and-set rounds one step may take while other writers keep changing its rows.
const MAX_ROUNDS: u32 = 100;

/// The longest pause between two rounds.
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// KEYS: one bucket per table (params first). ARGV: per key, the field, then per table the
/// expected value (byte 0 = absent, or byte 1 followed by the stored bytes) and the new value.
/// Sets every table's value of a key only if every one matched; returns the 1-based indices of
/// the keys that did not.
const CAS_ROWS_SCRIPT: &str = r#"
local n = #KEYS
local g = 1 + 2 * n
local lost = {}
for i = 1, #ARGV / g do
  local b = (i - 1) * g
  local f = ARGV[b + 1]
  local same = true
  for t = 1, n do
    local exp = ARGV[b + 2 * t]
    local cur = redis.call('HGET', KEYS[t], f)
    if string.byte(exp, 1) == 0 then
      same = (cur == false)
    else
      same = (cur ~= false and cur == string.sub(exp, 2))
    end
    if not same then break end
  end
  if same then
    for t = 1, n do redis.call('HSET', KEYS[t], f, ARGV[b + 2 * t + 1]) end
  else
    lost[#lost + 1] = i
  end
end
return lost
"#;

/// A step's rows: per distinct key `tables.len()` parts of `part` floats (params, then each
/// slot), with bit `i` of `present[d]` set when table `i` held key `d`'s part as read.
pub(super) struct StepRows<'a> {
    pub tables: &'a [&'a RedisTable],
    pub keys: &'a KeySet,
    pub part: usize,
    pub present: &'a mut [u8],
    /// The rows as read: the baseline each write is compared with.
    pub old: &'a mut [f32],
    /// The rows computed from `old`, to write.
    pub new: &'a mut [f32],
}

impl StepRows<'_> {
    /// Writes every new row onto the row it was computed from. A key whose row changed since
    /// is read again, `recompute(d, row)` applies the step to its current row in place, and
    /// it is tried again. Counts conflicts in `stats`.
    pub fn write(
        &mut self,
        stats: &TableStats,
        mut recompute: impl FnMut(usize, &mut [f32]),
    ) -> Result<()> {
        let width = self.part * self.tables.len();
        let mut todo: Vec<usize> = (0..self.keys.len()).collect();
        for round in 0..=MAX_ROUNDS {
            let lost = self.compare_and_set(&todo)?;
            if lost.is_empty() {
                return Ok(());
            }
            if round == MAX_ROUNDS {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "training step on {:?}: {} row(s) kept changing under other writers for {MAX_ROUNDS} rounds; the other rows were updated",
                        self.tables[0].spec.embedding_name,
                        lost.len()
                    ),
                ));
            }
            stats.update_conflict(lost.len());
            std::thread::sleep(pause(round));
            self.read_current(&lost)?;
            for &d in &lost {
                let row = d * width..(d + 1) * width;
                self.new[row.clone()].copy_from_slice(&self.old[row.clone()]);
                recompute(d, &mut self.new[row]);
            }
            todo = lost;
        }
        unreachable!("the last round returns")
    }

    /// The distinct keys `todo` as a batch of their own.
    fn subset(&self, todo: &[usize]) -> KeySet {
        let mut sub = KeySet::empty_like(self.keys);
        for &d in todo {
            sub.push(self.keys.get(d));
        }
        sub
    }

    /// One round: the script per chunk over the keys `todo`; returns those that lost.
    fn compare_and_set(&self, todo: &[usize]) -> Result<Vec<usize>> {
        let sub = self.subset(todo);
        let plan = self.tables[0].plan(&sub.keys()?);
        let req = CasRows {
            rows: self,
            todo,
            plan: &plan,
            keys: &sub,
            lost: Mutex::default(),
        };
        self.tables[0].dispatch(&plan.chunks, &req)?;
        for tb in self.tables {
            tb.touch(&plan.chunks);
        }
        let mut lost = sync::into_inner(req.lost);
        lost.sort_unstable();
        Ok(lost)
    }

    /// Reads the keys `lost` from their masters into `old` and `present`: a part no longer
    /// stored keeps what the step started from (its initial value, for a new key).
    fn read_current(&mut self, lost: &[usize]) -> Result<()> {
        let sub = self.subset(lost);
        let (part, n) = (self.part, self.tables.len());
        let width = part * n;
        let mut rows = vec![0f32; lost.len() * width];
        let mut found = vec![0u8; lost.len()];
        let inits = vec![0f32; n - 1]; // unused: only the parts found are taken
        let keys = sub.keys()?;
        together::read(
            self.tables,
            Access::Write,
            &inits,
            &keys,
            part,
            as_bytes_mut(&mut rows),
            &mut found,
        )?;
        for (j, &d) in lost.iter().enumerate() {
            for i in 0..n {
                if found[j] & (1 << i) == 0 {
                    self.present[d] &= !(1 << i);
                    continue;
                }
                let (from, to) = (j * width + i * part, d * width + i * part);
                self.old[to..to + part].copy_from_slice(&rows[from..from + part]);
                self.present[d] |= 1 << i;
            }
        }
        Ok(())
    }
}

/// A random pause before round `round + 1`, growing with the rounds up to [`MAX_PAUSE`].
fn pause(round: u32) -> Duration {
    let cap = (Duration::from_micros(100) * (1u32 << round.min(7))).min(MAX_PAUSE);
    let r = RandomState::new().build_hasher().finish();
    cap.mul_f64((r % 1_000_000) as f64 / 1_000_000.0)
}

/// One compare-and-set round as a [`Request`]. Never resent once sent: a script whose
/// connection failed after sending may have applied (a redirected or refused one never ran).
struct CasRows<'a> {
    rows: &'a StepRows<'a>,
    /// Global distinct index of each key of `keys`.
    todo: &'a [usize],
    plan: &'a Plan,
    keys: &'a KeySet,
    /// Global distinct indices of the keys that lost.
    lost: Mutex<Vec<usize>>,
}

impl Request for CasRows<'_> {
    fn kind(&self) -> Kind {
        Kind::WRITE_ONCE
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        let r = self.rows;
        let (n, part) = (r.tables.len(), r.part);
        let width = part * n;
        c.begin(3 + n + (ch.end - ch.start) * (1 + 2 * n));
        c.arg(b"EVAL");
        c.arg(CAS_ROWS_SCRIPT.as_bytes());
        c.arg(n.to_string().as_bytes());
        for tb in r.tables {
            c.arg(tb.bucket_name(ch));
        }
        let mut buf = Vec::new();
        for &dd in &self.plan.order[ch.start..ch.end] {
            let pos = self.plan.first[dd as usize] as usize;
            let d = self.todo[pos];
            c.arg(self.keys.get(pos));
            for (i, tb) in r.tables.iter().enumerate() {
                let at = d * width + i * part;
                buf.clear();
                if r.present[d] & (1 << i) != 0 {
                    buf.push(1);
                    tb.storage.encode(as_bytes(&r.old[at..at + part]), &mut buf);
                } else {
                    buf.push(0);
                }
                c.arg(&buf);
                buf.clear();
                tb.storage.encode(as_bytes(&r.new[at..at + part]), &mut buf);
                c.arg(&buf);
            }
        }
    }

    fn decode(&self, c: &mut Conn, ch: &Chunk) -> Result<()> {
        let Reply::Array(failed) = c.read_reply()? else {
            return Err(
                c.protocol("the training step's compare-and-set script replied with a non-array")
            );
        };
        let mut lost = sync::lock(&self.lost);
        for f in failed {
            let Reply::Int(i) = f else {
                return Err(c.protocol("the compare-and-set script named a key by a non-integer"));
            };
            let at = ch.start + (i as usize).saturating_sub(1);
            let Some(&dd) = self.plan.order.get(at).filter(|_| at < ch.end) else {
                return Err(c.protocol(format!(
                    "the compare-and-set script named key {i}, beyond the command"
                )));
            };
            lost.push(self.todo[self.plan.first[dd as usize] as usize]);
        }
        Ok(())
    }
}
