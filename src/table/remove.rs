//! Deletes and counts: `remove` (HDEL), `clear` (UNLINK every bucket), `size` (HLEN).

use super::stats::Op;
use super::RedisTable;
use crate::cluster::dispatch::{Kind, Request};
use crate::cluster::route::Access;
use crate::codec::Keys;
use crate::error::Result;
use crate::plan::{Chunk, Plan};
use crate::resp::conn::Conn;
use crate::stats;

impl RedisTable {
    /// Deletes keys; missing keys are ignored.
    pub fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        self.stats.track(Op::Remove, || self.remove_keys(keys))
    }

    fn remove_keys(&self, keys: &Keys<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        self.each_window(keys, |w| {
            let req = Remove {
                table: self,
                keys: &w.keys,
                plan: &w.plan,
            };
            self.dispatch(&w.plan.chunks, &req)?;
            self.touch(&[]);
            Ok(())
        })
    }

    /// Deletes every runtime bucket of this table (optimizer-slot tables are separate tables).
    pub fn clear(&self) -> Result<()> {
        self.per_bucket(&self.all_buckets(), b"UNLINK", &[], Access::Write)?;
        self.note_armed(&self.all_buckets(), &vec![0; self.buckets.len()]);
        Ok(())
    }

    /// Number of rows over all runtime buckets (0 on shards other than the first, see
    /// [`Shard`](super::Shard)).
    pub fn size(&self) -> Result<i64> {
        if !self.spec.shard.reports_shared_rows() {
            return Ok(0);
        }
        Ok(self
            .per_bucket(&self.all_buckets(), b"HLEN", &[], Access::Read)?
            .iter()
            .sum())
    }
}

/// A delete as a [`Request`]: one HDEL per chunk of distinct keys. Resendable: deleting twice
/// leaves the same state.
struct Remove<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
}

impl Request for Remove<'_> {
    fn kind(&self) -> Kind {
        Kind::WRITE
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        let plan = self.plan;
        c.begin(2 + ch.end - ch.start);
        c.arg(b"HDEL");
        c.arg(self.table.bucket_name(ch));
        for &d in &plan.order[ch.start..ch.end] {
            c.arg(self.keys.get(plan.first[d as usize] as usize));
        }
    }

    fn decode(&self, c: &mut Conn, _: &Chunk) -> Result<()> {
        c.read_int().map(|_| ())
    }
}
