//! `copy`: tables from this deployment to another (or the same one under another model tag),
//! streamed one HSCAN page at a time from the source buckets and written through the
//! destination [`Table`], opened with the destination config: its bucket layout, layout
//! record, `storage_slice`, hash tags and stored form apply (a model-tag copy, a
//! `storage_slice` change, standalone to cluster, one Redis to another are all this).
//!
//! After every acknowledged write the table, bucket, HSCAN cursor and rows done are recorded
//! in a state file; a resumed run continues from there (HSET is idempotent, so a page written
//! again is harmless). Each table is then verified: row counts, and a sample of source rows
//! read back from the destination and compared byte for byte ([`super::verify`]).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::resume::StateFile;
use super::shape::{Batch, Shape, ShapeHint};
use super::stream::{on_redis, Moved, Position, Run, Sink};
use super::{Admin, Filter, Report, TableInfo};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::Reply;
use crate::table::Table;

/// What to copy, and how.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The source tables.
    pub filter: Filter,
    /// The destination model tag (default: each table's own).
    pub to_model_tag: Option<String>,
    /// Key and value types where sizes cannot tell.
    pub shape: ShapeHint,
    /// Continue the interrupted copy recorded in `state`.
    pub resume: bool,
    /// The state file.
    pub state: PathBuf,
    /// Rows asked for per HSCAN page (and written per insert).
    pub page_rows: usize,
    /// Rows compared byte for byte per table after the copy.
    pub sample: usize,
}

/// Writes pages into the destination table.
struct IntoTable<'a> {
    table: &'a Table,
    name: &'a str,
}

impl Sink for IntoTable<'_> {
    fn put(&mut self, batch: &Batch) -> Result<()> {
        self.table
            .insert(&batch.keys()?, &batch.rows())
            .map_err(|e| e.context(format!("writing {}", self.name)))
    }

    fn checkpoint(&mut self, t: &TableInfo, pos: &Position) -> Result<Map<String, Value>> {
        Ok(pos.to_json(t))
    }
}

impl Admin {
    /// Copies the tables `o` selects to the deployment `to` describes; returns what was
    /// copied and verified per table.
    pub fn copy(&self, to: &Config, o: &CopyOptions, report: &dyn Report) -> Result<Vec<Moved>> {
        on_redis(to, "the destination config")?;
        let dest = Admin::open(to.clone())?;
        let job = json!({
            "from": self.servers(), "from_db": self.config().redis_db,
            "to": dest.servers(), "to_db": to.redis_db, "to_model_tag": o.to_model_tag,
            "model_tag": o.filter.model_tag, "table": o.filter.table,
        });
        let state = StateFile::new(o.state.clone(), "copy");
        let mut run = Run::open(state, job, o.resume, o.page_rows)?;
        let tables = self.selected(&o.filter, &mut run)?;
        if let Some(t) = tables.iter().find(|t| t.model_tag.is_empty()) {
            return Err(Error::invalid(format!(
                "{}: its prefix is an MD5 digest (using_md5_prefix_name), so its name is \
                 unknown and it cannot be copied; select other tables with --model-tag/--table",
                t.name
            )));
        }
        let ids = dest.run_ids();
        let same =
            self.config().redis_db == to.redis_db && self.run_ids().iter().any(|s| ids.contains(s));
        check_targets(&tables, o, same)?;
        let shapes = Shape::infer_all(&tables, &o.shape, self.config().rde_value_storage)?;
        let mut out = Vec::with_capacity(tables.len());
        for (t, &shape) in tables.iter().zip(&shapes) {
            out.push(self.copy_table(t, shape, to, o, &mut run, report)?);
        }
        run.state.remove()?;
        Ok(out)
    }

    /// Each master's `run_id` (its address where INFO is refused), which names a server
    /// whatever address a config reaches it by.
    fn run_ids(&self) -> Vec<String> {
        let id = |addr: &String| match self.on(addr, &[b"INFO", b"server"]) {
            Ok(Reply::Bulk(b)) => String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|id| id.trim().to_owned()),
            _ => None,
        };
        self.servers()
            .iter()
            .map(|a| id(a).unwrap_or_else(|| a.clone()))
            .collect()
    }

    fn copy_table(
        &self,
        t: &TableInfo,
        shape: Shape,
        to: &Config,
        o: &CopyOptions,
        run: &mut Run,
        report: &dyn Report,
    ) -> Result<Moved> {
        let tag = o.to_model_tag.as_deref().unwrap_or(&t.model_tag);
        let name = format!("{tag}:{}", t.name);
        let mut cfg = to.clone();
        cfg.model_tag_runtime = tag.to_owned();
        cfg.model_tag_import = tag.to_owned();
        let table = Table::open(cfg, shape.spec(&t.name))
            .map_err(|e| e.context(format!("opening the destination table {name}")))?;
        let mut pos = match run.entry(&t.prefix) {
            Some(e) => Position::from_json(e, t, &run.state)?,
            None => {
                let have = table.size()?;
                if have > 0 {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "the destination table {name} already holds {have} rows: drop it \
                             first (redis-embedding drop), or copy to another --to-model-tag"
                        ),
                    ));
                }
                let start = Position::default();
                run.record(&t.prefix, start.to_json(t))?;
                start
            }
        };
        if !pos.done {
            report.begin(&format!("copy {} to {name}", t.full_name()), Some(t.rows()));
            report.advance(pos.rows);
            let mut sink = IntoTable {
                table: &table,
                name: &name,
            };
            self.stream(t, shape, &mut pos, run, report, &mut sink)?;
            report.finish();
            pos.done = true;
            run.record(&t.prefix, pos.to_json(t))?;
        }
        let sampled = self.verify_copy(t, shape, &table, &name, o.sample)?;
        Ok(Moved {
            table: t.full_name(),
            to: name,
            rows: pos.rows,
            bytes: pos.bytes,
            files: Vec::new(),
            sampled,
        })
    }
}

/// Refuses a selection that would copy a table onto itself (`same` deployment) or two
/// tables onto one, before anything is written.
fn check_targets(tables: &[TableInfo], o: &CopyOptions, same: bool) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for t in tables {
        let tag = o.to_model_tag.as_deref().unwrap_or(&t.model_tag);
        if same && tag == t.model_tag {
            return Err(Error::invalid(format!(
                "{} would be copied onto itself: select the source with --model-tag and pass \
                 another --to-model-tag, or --to another deployment (to change storage_slice \
                 in place, open the table with the new config: it rehashes)",
                t.full_name()
            )));
        }
        let dest = format!("{tag}:{}", t.name);
        if let Some(other) = seen.insert(dest.clone(), t.full_name()) {
            return Err(Error::invalid(format!(
                "{other} and {} would both be copied to {dest}: select one model tag with \
                 --model-tag",
                t.full_name()
            )));
        }
    }
    Ok(())
}
