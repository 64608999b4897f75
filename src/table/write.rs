//! Writes: `insert` (HSET, last occurrence of a duplicated key wins) and `import`.

use super::stats::Op;
use super::RedisTable;
use crate::cluster::dispatch::{Kind, Request};
use crate::codec::{Keys, Rows};
use crate::config::StoreMode;
use crate::error::Result;
use crate::plan::{Chunk, Plan};
use crate::resp::conn::Conn;
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
        self.check_rows(values, keys.len(), "values")?;
        let (mut rows, mut bytes) = (0, 0);
        self.each_window(keys, |w| {
            let req = Insert {
                table: self,
                keys: &w.keys,
                plan: &w.plan,
                values: values.sub(w.start, w.end),
            };
            self.dispatch(&w.plan.chunks, &req)?;
            self.touch(&w.plan.chunks);
            rows += w.plan.distinct();
            bytes += req.value_bytes();
            Ok(())
        })?;
        Ok((rows, bytes))
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

/// An upsert as a [`Request`]: one HSET per chunk, with the last row given for each of its
/// distinct keys (TFRA's last-write-wins). Resendable: running it twice writes the same rows.
struct Insert<'a> {
    table: &'a RedisTable,
    keys: &'a Keys<'a>,
    plan: &'a Plan,
    /// The window's rows, position by position as `keys`.
    values: Rows<'a>,
}

impl Insert<'_> {
    /// The stored value bytes written, one row per distinct key.
    fn value_bytes(&self) -> usize {
        let last = &self.plan.last;
        last.iter()
            .map(|&p| self.values.encoded_len(p as usize))
            .sum()
    }
}

impl Request for Insert<'_> {
    fn kind(&self) -> Kind {
        Kind::WRITE
    }

    fn encode(&self, c: &mut Conn, ch: &Chunk) {
        let (plan, values) = (self.plan, &self.values);
        c.begin(2 + 2 * (ch.end - ch.start));
        c.arg(b"HSET");
        c.arg(self.table.bucket_name(ch));
        let order = &plan.order[ch.start..ch.end];
        for (j, &d) in order.iter().enumerate() {
            if let Some(&ahead) = order.get(j + PREFETCH_ROWS) {
                values.prefetch(plan.last[ahead as usize] as usize);
            }
            let p = plan.last[d as usize] as usize;
            c.arg(self.keys.get(p));
            c.arg_header(values.encoded_len(p));
            values.encode(p, c.buf());
            c.arg_end();
        }
    }

    fn decode(&self, c: &mut Conn, _: &Chunk) -> Result<()> {
        c.read_int().map(|_| ())
    }
}
