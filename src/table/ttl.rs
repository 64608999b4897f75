//! The TTL policy (`expire_model_tag_in_seconds`): armed or removed when a table opens, kept
//! rolling while it is used.

use super::RedisTable;
use crate::cluster::route::Access;
use crate::error::{ErrorKind, Result};
use crate::plan::Chunk;
use crate::sync;

impl RedisTable {
    /// Applies `expire_model_tag_in_seconds` when the table opens: a positive value arms a
    /// TTL on this table's own buckets (never a prefix glob), anything else removes it.
    pub(super) fn arm_ttl_on_open(&self) -> Result<()> {
        let secs = self.cfg.expire_model_tag_in_seconds;
        let all = self.all_buckets();
        if secs > 0 {
            let r = self.per_bucket(
                &all,
                b"EXPIRE",
                &[secs.to_string().as_bytes()],
                Access::Write,
            )?;
            self.note_armed(&all, &r);
        } else {
            // Only buckets that carry a TTL are changed, so a read-only (serving) user with
            // TTLs off can open the table.
            let ttl = self.per_bucket(&all, b"TTL", &[], Access::Write)?;
            let expiring: Vec<usize> = all.iter().copied().filter(|&b| ttl[b] >= 0).collect();
            if !expiring.is_empty() {
                match self.per_bucket(&expiring, b"PERSIST", &[], Access::Write) {
                    // A serving user may read but not change TTLs: the rows keep the TTL
                    // their writer gave them, which is the writer's decision to make.
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => log::warn!(
                        "table {:?}: expire_model_tag_in_seconds <= 0 asks to remove the TTL of {} bucket(s), but {e}; they keep their TTL",
                        self.spec.embedding_name,
                        expiring.len()
                    ),
                    r => {
                        r?;
                    }
                }
            }
        }
        *sync::lock(&self.ttl_last) = std::time::Instant::now();
        Ok(())
    }

    pub(super) fn note_armed(&self, which: &[usize], replies: &[i64]) {
        for &b in which {
            self.ttl_armed[b].store(replies[b] == 1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Keeps the TTL rolling while the table is used: after a write, buckets that have no TTL
    /// yet (created by that write) get one; and every `min(ttl / 4, 60 s)` all buckets are
    /// pushed out again. A process that dies therefore leaves data that expires `ttl` seconds
    /// after its last use, with no clean shutdown needed.
    pub(super) fn touch(&self, written: &[Chunk]) {
        let secs = self.cfg.expire_model_tag_in_seconds;
        if secs <= 0 {
            return;
        }
        let arg = secs.to_string();
        let every = std::time::Duration::from_secs((secs as u64 / 4).clamp(1, 60));
        let due = {
            let mut last = sync::lock(&self.ttl_last);
            let due = last.elapsed() >= every;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        let mut which: Vec<usize> = if due {
            self.all_buckets()
        } else {
            written
                .iter()
                .map(|c| c.bucket)
                .filter(|&b| !self.ttl_armed[b].load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        };
        which.sort_unstable();
        which.dedup();
        if which.is_empty() {
            return;
        }
        match self.per_bucket(&which, b"EXPIRE", &[arg.as_bytes()], Access::Write) {
            Ok(r) => self.note_armed(&which, &r),
            // The write itself succeeded; failing it for its TTL would lose nothing less. The
            // failure is counted (`ttl_refresh_failures`) and the next write tries again.
            Err(e) => {
                self.stats.ttl_refresh_failed();
                log::warn!(
                    "could not refresh the TTL of {}: {e}",
                    self.spec.embedding_name
                )
            }
        }
    }
}
