//! Deletes and counts: `remove` (HDEL), `clear` (UNLINK every bucket), `size` (HLEN).

use super::stats::Op;
use super::RedisTable;
use crate::cluster::dispatch::{in_windows, Commands};
use crate::cluster::route::Access;
use crate::codec::Keys;
use crate::error::Result;
use crate::stats;

impl RedisTable {
    /// Deletes keys; missing keys are ignored.
    pub fn remove(&self, keys: &Keys<'_>) -> Result<()> {
        self.stats.track(Op::Remove, || self.remove_keys(keys))
    }

    fn remove_keys(&self, keys: &Keys<'_>) -> Result<()> {
        let _timer = stats::CallTimer::start();
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(done) = in_windows(keys.len(), |a, b| self.remove_keys(&keys.sub(a, b))) {
            return done;
        }
        let plan = self.plan(keys);
        self.dispatch(
            &plan.chunks,
            &Commands::idempotent(
                Access::Write,
                |c, ch| {
                    c.begin(2 + ch.end - ch.start);
                    c.arg(b"HDEL");
                    c.arg(self.bucket_name(ch));
                    for &d in &plan.order[ch.start..ch.end] {
                        c.arg(keys.get(plan.first[d as usize] as usize));
                    }
                },
                |c, _| c.read_int().map(|_| ()),
            ),
        )?;
        self.touch(&[]);
        Ok(())
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
