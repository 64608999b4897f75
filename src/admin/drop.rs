//! Dropping tables: every bucket of the selected tables, with their layout records and any
//! unfinished model-tag copy marker.

use super::{catalog::Filter, int, Admin, Report, TableInfo};
use crate::cluster::layout::display_bytes;
use crate::cluster::layout_store::record_key;
use crate::cluster::route::Access;
use crate::error::{Error, Result};

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

    /// Deletes what `plan` lists (UNLINK, so big buckets are freed in the background).
    /// Returns the keys deleted.
    pub fn drop_tables(&self, plan: &DropPlan, report: &dyn Report) -> Result<u64> {
        let keys: Vec<&[u8]> = plan.keys().collect();
        report.begin("dropping keys", Some(keys.len() as u64));
        let mut deleted = 0;
        for key in keys {
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
