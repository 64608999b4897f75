//! Writes: `insert` (HSET, last occurrence of a duplicated key wins) and `import`.

use super::stats::Op;
use super::RedisTable;
use crate::cluster::dispatch::{in_windows, Commands};
use crate::cluster::route::Access;
use crate::codec::{Keys, Rows};
use crate::config::StoreMode;
use crate::error::Result;
use crate::stats;

/// How many rows ahead of the one being encoded are prefetched.
const PREFETCH_ROWS: usize = 8;

impl RedisTable {
    /// Upserts rows. Within one call a duplicated key keeps its last row.
    pub fn insert(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        self.stats.track(Op::Insert, || {
            let (rows, bytes) = self.insert_untracked(keys, values)?;
            self.stats.wrote(rows, bytes);
            Ok(())
        })
    }

    /// [`Table::insert`] without the table's statistics; returns the distinct rows written
    /// and their stored value bytes.
    pub(crate) fn insert_untracked(
        &self,
        keys: &Keys<'_>,
        values: &Rows<'_>,
    ) -> Result<(usize, usize)> {
        let _timer = stats::CallTimer::start();
        match self.compact(values, keys.len(), "values")? {
            Some(stored) => self.insert_rows(
                keys,
                &Rows::Fixed {
                    data: &stored,
                    row: self.row,
                },
            ),
            None => self.insert_rows(keys, values),
        }
    }

    fn insert_rows(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<(usize, usize)> {
        let n = keys.len();
        self.check_rows(values, n, "values")?;
        let mut written = (0, 0);
        if n == 0 {
            return Ok(written);
        }
        if let Some(done) = in_windows(n, |a, b| {
            let (r, b) = self.insert_rows(&keys.sub(a, b), &values.sub(a, b))?;
            written = (written.0 + r, written.1 + b);
            Ok(())
        }) {
            return done.map(|()| written);
        }
        let plan = self.plan(keys);
        self.dispatch(
            &plan.chunks,
            &Commands::idempotent(
                Access::Write,
                |c, ch| {
                    c.begin(2 + 2 * (ch.end - ch.start));
                    c.arg(b"HSET");
                    c.arg(self.bucket_name(ch));
                    let order = &plan.order[ch.start..ch.end];
                    for (j, &d) in order.iter().enumerate() {
                        if let Some(&ahead) = order.get(j + PREFETCH_ROWS) {
                            values.prefetch(plan.last[ahead as usize] as usize);
                        }
                        let p = plan.last[d as usize] as usize;
                        c.arg(keys.get(p));
                        c.arg_header(values.encoded_len(p));
                        values.encode(p, c.buf());
                        c.arg_end();
                    }
                },
                |c, _| c.read_int().map(|_| ()),
            ),
        )?;
        self.touch(&plan.chunks);
        let bytes = (0..plan.distinct())
            .map(|d| values.encoded_len(plan.last[d] as usize))
            .sum();
        Ok((plan.distinct(), bytes))
    }

    /// Checkpoint restore. Mode 0 upserts the rows (the table is not cleared first, as in
    /// TFRA); mode 1 restores the bucket files; mode 2 keeps what is in Redis. A model-tag copy
    /// (model_tag_import ≠ model_tag_runtime) happens when the table opens.
    pub fn import(&self, keys: &Keys<'_>, values: &Rows<'_>) -> Result<()> {
        match self.cfg.table_store_mode {
            StoreMode::Tensors => self.insert(keys, values),
            StoreMode::RdbFiles if self.spec.shard.reports_shared_rows() => self.restore_buckets(),
            _ => Ok(()),
        }
    }
}
