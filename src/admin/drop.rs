//! Dropping tables: every bucket of the selected tables, with their layout records and any
//! unfinished model-tag copy marker.

use std::collections::BTreeMap;

use super::{catalog::Filter, int, Admin, Report, TableInfo};
use crate::cluster::layout::display_bytes;
use crate::cluster::layout_store::record_key;
use crate::cluster::route::Access;
use crate::error::{Error, Result};

/// Buckets deleted per pipeline.
const BATCH: usize = 512;

/// What a drop deletes.
#[derive(Debug, Clone)]
pub struct DropPlan {
    /// The tables, with their buckets.
    pub tables: Vec<TableInfo>,
    /// Layout records and copy markers that exist for them.
    pub records: Vec<Vec<u8>>,
}

impl DropPlan {
    /// Every key the drop deletes.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.tables
            .iter()
            .flat_map(|t| t.buckets.iter().map(|b| b.key.as_slice()))
            .chain(self.records.iter().map(Vec::as_slice))
    }
}

impl Admin {
    /// What dropping `filter`'s tables would delete. A filter naming neither a model tag nor
    /// a table is refused, so that nothing drops a whole deployment by accident.
    pub fn drop_plan(&self, filter: &Filter) -> Result<DropPlan> {
        if filter.model_tag.is_none() && filter.table.is_none() {
            return Err(Error::invalid(
                "drop needs a model tag or a table name (--model-tag, --table)",
            ));
        }
        let tables = self.tables(filter)?;
        let mut records = Vec::new();
        for t in &tables {
            let record = record_key(&t.prefix);
            let mut marker = b"rde-copy:".to_vec();
            marker.extend_from_slice(&record);
            for key in [record, marker] {
                if int(&self.keyed(&key, Access::Read, &[b"EXISTS", &key])?, 0) > 0 {
                    records.push(key);
                }
            }
        }
        Ok(DropPlan { tables, records })
    }

    /// Deletes what `plan` lists (UNLINK, so big buckets are freed in the background): the
    /// buckets in pipelines per server, anything a pipeline could not delete (the bucket moved
    /// during a resharding) and the records one by one through the router. Returns the keys
    /// deleted.
    pub fn drop_tables(&self, plan: &DropPlan, report: &dyn Report) -> Result<u64> {
        report.begin("dropping keys", Some(plan.keys().count() as u64));
        let mut per_server: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for b in plan.tables.iter().flat_map(|t| &t.buckets) {
            per_server.entry(&b.server).or_default().push(&b.key);
        }
        let mut one_by_one: Vec<&[u8]> = plan.records.iter().map(Vec::as_slice).collect();
        let mut deleted = 0;
        for (addr, keys) in per_server {
            for batch in keys.chunks(BATCH) {
                let cmds: Vec<Vec<&[u8]>> = batch
                    .iter()
                    .map(|k| vec![b"UNLINK".as_slice(), k])
                    .collect();
                match self.pipeline(addr, &cmds) {
                    Ok(r) => deleted += r.iter().map(|r| int(r, 0).max(0) as u64).sum::<u64>(),
                    Err(e) => {
                        log::debug!("{addr}: buckets deleted one by one: {e}");
                        one_by_one.extend(batch);
                        continue;
                    }
                }
                report.advance(batch.len() as u64);
            }
        }
        for key in one_by_one {
            let r = self
                .keyed(key, Access::Write, &[b"UNLINK", key])
                .map_err(|e| e.context(format!("deleting {}", display_bytes(key))))?;
            deleted += int(&r, 0).max(0) as u64;
            report.advance(1);
        }
        report.finish();
        Ok(deleted)
    }
}
