//! Reading a table's rows page by page from where an earlier run stopped, for `export` and
//! `copy`: one HSCAN page of one bucket at a time (bounded memory), each page handed on and
//! then recorded in the state file, so a resumed run starts at the first page not recorded.
//!
//! HSCAN returns every row present for the whole scan at least once, and may return a row
//! again while its hash is being resized (by writes during the run): such a row is then
//! written twice (a file pair loads the same, an insert is idempotent) and counted twice.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::resume::{self, hex, unhex, StateFile};
use super::shape::{Batch, Shape};
use super::{Admin, Filter, Report, TableInfo};
use crate::cluster::layout::display_bytes;
use crate::cluster::scan::{self, HashRead};
use crate::codec::KeyType;
use crate::config::{Backend, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::FlatPage;

/// What one table's transfer did.
#[derive(Debug, Clone, Default)]
pub struct Moved {
    /// The table (`model_tag:name`).
    pub table: String,
    /// Where it went: the destination table, or the files' base path.
    pub to: String,
    /// Rows moved.
    pub rows: u64,
    /// Bytes moved: file bytes for export and import, stored key and row bytes for copy.
    pub bytes: u64,
    /// Files written or read.
    pub files: Vec<PathBuf>,
    /// Rows compared byte for byte after a copy.
    pub sampled: u64,
}

/// Where a table's stream stands: the next page is `cursor` of bucket `bucket`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Position {
    pub bucket: usize,
    pub cursor: Vec<u8>,
    pub rows: u64,
    pub bytes: u64,
    pub done: bool,
}

impl Position {
    /// As recorded in a state file (the bucket by its key, so a changed bucket list is seen).
    pub(crate) fn to_json(&self, t: &TableInfo) -> Map<String, Value> {
        let bucket = t
            .buckets
            .get(self.bucket)
            .map_or(String::new(), |b| hex(&b.key));
        let v = json!({
            "bucket": bucket,
            "cursor": hex(&self.cursor),
            "rows": self.rows,
            "bytes": self.bytes,
            "done": self.done,
        });
        v.as_object().cloned().unwrap_or_default()
    }

    /// Reads back [`Position::to_json`] of table `t`.
    pub(crate) fn from_json(v: &Value, t: &TableInfo, state: &StateFile) -> Result<Position> {
        let bad = |what: &str| {
            Error::data(format!(
                "{}: {what} for {}: delete it to start over",
                state.path().display(),
                t.full_name()
            ))
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str).and_then(unhex);
        let key = field("bucket").ok_or_else(|| bad("no bucket recorded"))?;
        let bucket = if key.is_empty() {
            t.buckets.len()
        } else {
            t.buckets.iter().position(|b| b.key == key).ok_or_else(|| {
                bad(&format!(
                    "bucket {} is recorded but no longer exists",
                    display_bytes(&key)
                ))
            })?
        };
        Ok(Position {
            bucket,
            cursor: field("cursor").ok_or_else(|| bad("no cursor recorded"))?,
            rows: v.get("rows").and_then(Value::as_u64).unwrap_or(0),
            bytes: v.get("bytes").and_then(Value::as_u64).unwrap_or(0),
            done: v.get("done").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// One resumable run: its state file and what it records, per table prefix.
pub(crate) struct Run {
    pub state: StateFile,
    pub job: Value,
    /// The tables (or file pairs) the first run selected, by id: a resumed run moves those,
    /// not what the selection finds now (a copy's own destination, say).
    selected: Option<Vec<Value>>,
    /// What each started table records, by id.
    tables: Map<String, Value>,
    /// Rows moved by this process (for the failpoint).
    pub rows: u64,
    /// Rows asked for per HSCAN page.
    pub page_rows: usize,
}

impl Run {
    /// Opens the state of `job` (see [`StateFile::open`]).
    pub(crate) fn open(
        state: StateFile,
        job: Value,
        resume: bool,
        page_rows: usize,
    ) -> Result<Run> {
        let mut saved = state.open(resume, &job)?.unwrap_or_default();
        let mut take = |k: &str| saved.get_mut(k).map(Value::take);
        let tables = match take("tables") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let selected = match take("selected") {
            Some(Value::Array(v)) => Some(v),
            _ => None,
        };
        Ok(Run {
            state,
            job,
            selected,
            tables,
            rows: 0,
            page_rows,
        })
    }

    /// Of `items` (found now), those this run is about: all on a fresh start, which are then
    /// recorded; on a resumed one, those the first run selected.
    pub(crate) fn select<T>(&mut self, items: Vec<T>, id: impl Fn(&T) -> &[u8]) -> Vec<T> {
        match &self.selected {
            Some(ids) => items
                .into_iter()
                .filter(|t| ids.contains(&Value::from(hex(id(t)))))
                .collect(),
            None => {
                self.selected = Some(items.iter().map(|t| hex(id(t)).into()).collect());
                items
            }
        }
    }

    /// What the state holds for the table with id `prefix`.
    pub(crate) fn entry(&self, prefix: &[u8]) -> Option<&Value> {
        self.tables.get(&hex(prefix))
    }

    /// Records `entry` for the table with id `prefix` and saves the state.
    pub(crate) fn record(&mut self, prefix: &[u8], entry: Map<String, Value>) -> Result<()> {
        self.tables.insert(hex(prefix), Value::Object(entry));
        let mut fields = Map::new();
        fields.insert(
            "selected".into(),
            self.selected.clone().unwrap_or_default().into(),
        );
        fields.insert("tables".into(), Value::Object(self.tables.clone()));
        self.state.save(&self.job, &fields)
    }

    /// Counts `rows` more moved by this process; fails at the test failpoint.
    pub(crate) fn moved(&mut self, rows: u64) -> Result<()> {
        self.rows += rows;
        resume::failpoint(self.rows)
    }
}

/// Where a stream's pages go.
pub(crate) trait Sink {
    /// Writes one page's rows.
    fn put(&mut self, batch: &Batch) -> Result<()>;
    /// Makes what was put durable and returns what the state records at `pos`.
    fn checkpoint(&mut self, t: &TableInfo, pos: &Position) -> Result<Map<String, Value>>;
}

impl Admin {
    /// The tables `filter` selects now, or on a resumed `run`, those of them it started
    /// with; none is an error.
    pub(crate) fn selected(&self, filter: &Filter, run: &mut Run) -> Result<Vec<TableInfo>> {
        let tables = run.select(self.tables(filter)?, |t| &t.prefix);
        if tables.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no table on {} matches the selection",
                    self.servers().join(",")
                ),
            ));
        }
        Ok(tables)
    }

    /// Reads `t` from `pos` to its end, one HSCAN page at a time: each page's rows go
    /// to `sink`, then `pos` moves past the page and its checkpoint is recorded in `run`.
    pub(crate) fn stream(
        &self,
        t: &TableInfo,
        shape: Shape,
        pos: &mut Position,
        run: &mut Run,
        report: &dyn Report,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let mut batch = Batch::new(shape);
        let mut page = FlatPage::default();
        while pos.bucket < t.buckets.len() {
            let key = &t.buckets[pos.bucket].key;
            let cursor = if pos.cursor.is_empty() {
                b"0".to_vec()
            } else {
                pos.cursor.clone()
            };
            let what = HashRead::Page {
                cursor: &cursor,
                count: run.page_rows.max(1),
            };
            let (items, next) = scan::read_page(self.router(), self.retry(), key, what, page)
                .map_err(|e| e.context(format!("reading {}", t.full_name())))?;
            batch.clear();
            let mut bytes = 0;
            for i in (0..items.len()).step_by(2) {
                let (k, v) = (items.item(i), items.item(i + 1));
                batch
                    .push(k, v)
                    .map_err(|why| row_error(t, key, k, shape, why))?;
                bytes += (k.len() + v.len()) as u64;
            }
            sink.put(&batch)?;
            run.moved(batch.len() as u64)?;
            pos.rows += batch.len() as u64;
            pos.bytes += bytes;
            report.advance(batch.len() as u64);
            match next {
                Some(c) => pos.cursor = c,
                None => {
                    pos.bucket += 1;
                    pos.cursor.clear();
                }
            }
            page = items;
            let entry = sink.checkpoint(t, pos)?;
            run.record(&t.prefix, entry)?;
        }
        Ok(())
    }
}

/// A bad stored row, naming the table, bucket and key.
pub(crate) fn row_error(t: &TableInfo, bucket: &[u8], key: &[u8], s: Shape, why: String) -> Error {
    let shown = match s.key_type {
        KeyType::Str => format!("\"{}\"", display_bytes(key)),
        kt => kt.display(key),
    };
    Error::data(format!(
        "{} bucket {} key {shown}: {why}",
        t.full_name(),
        display_bytes(bucket)
    ))
}

/// Refuses a config whose tables live in process memory (`rde_backend: "memory"`): rows
/// written there would vanish when the command exits.
pub(crate) fn on_redis(cfg: &Config, what: &str) -> Result<()> {
    if cfg.rde_backend == Backend::Memory {
        return Err(Error::invalid(format!(
            "{what} has rde_backend \"memory\", whose tables live inside one process: the \
             CLI moves tables between Redis deployments and files"
        )));
    }
    Ok(())
}
