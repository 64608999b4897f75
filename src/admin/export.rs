//! `export`: tables to TFRA's `-keys`/`-values` files, the files `save_to_file_system`
//! writes and `load_from_file_system` reads (see [`crate::persist::files`]): raw key bytes
//! (string keys with a u32 length first) and tensor rows (compact storage widened back to
//! float32). Table `<tag>:<name>` goes to `<dir>/<tag>/<name>-keys` and `-values`.
//!
//! Each table is written to `.tmp` files, renamed into place when complete; after every page
//! both files are synced and their lengths recorded with the HSCAN cursor in the state file
//! `<dir>/redis-embedding-export.state`, which is removed only when every table is done. A
//! resumed run cuts the files back to the recorded lengths and continues from the cursor.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::resume::StateFile;
use super::shape::{Batch, Shape, ShapeHint};
use super::stream::{Moved, Position, Run, Sink};
use super::{Admin, Filter, Report, TableInfo};
use crate::codec::{KeyType, Rows};
use crate::error::{Error, Result};

/// The state file of an export, in its output directory.
pub const EXPORT_STATE: &str = "redis-embedding-export.state";

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The output directory.
    pub dir: PathBuf,
    /// The tables.
    pub filter: Filter,
    /// Key and value types where sizes cannot tell.
    pub shape: ShapeHint,
    /// Continue an interrupted export in `dir`.
    pub resume: bool,
    /// Rows asked for per HSCAN page.
    pub page_rows: usize,
}

/// The suffix of the file describing a pair's dtypes.
pub(crate) const META_SUFFIX: &str = "-meta.json";
/// Its `format` field.
pub(crate) const META_FORMAT: &str = "redis-embedding export v1";

/// The base path (without `-keys`) of table `t`'s files under `dir`.
pub fn export_base(dir: &Path, t: &TableInfo) -> PathBuf {
    match t.name.strip_prefix("md5:") {
        Some(hex) if t.model_tag.is_empty() => dir.join("_md5").join(hex),
        _ => dir
            .join(file_name_of(&t.model_tag))
            .join(file_name_of(&t.name)),
    }
}

/// A model tag or table name as one file name: `%`, `/` and `\` percent-encoded, so that
/// distinct names stay distinct files and [`name_of_file`] gives the name back.
fn file_name_of(name: &str) -> String {
    name.replace('%', "%25")
        .replace('/', "%2F")
        .replace('\\', "%5C")
}

/// The name [`file_name_of`] encoded.
pub(crate) fn name_of_file(file: &str) -> String {
    file.replace("%2F", "/")
        .replace("%5C", "\\")
        .replace("%25", "%")
}

/// Writes `<base>-meta.json`: the dtypes and `dim` of the pair beside it, which the files
/// themselves do not carry (an int32 pair can read as int64 rows of twice the `dim`), so that
/// `import` needs no options.
fn write_meta(base: &Path, t: &TableInfo, shape: Shape, rows: u64) -> Result<()> {
    let meta = json!({
        "format": META_FORMAT,
        "table": t.full_name(),
        "key_dtype": shape.key_type.name(),
        "value_dtype": shape.value_type.tf_name(),
        "dim": shape.dim,
        "rows": rows,
    });
    let path = suffixed(base, META_SUFFIX);
    fs::write(&path, format!("{meta:#}\n")).map_err(|e| Error::file("cannot write", &path, e))
}

fn suffixed(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Admin {
    /// Exports the tables `o` selects; returns what was written per table.
    pub fn export(&self, o: &ExportOptions, report: &dyn Report) -> Result<Vec<Moved>> {
        fs::create_dir_all(&o.dir)
            .map_err(|e| Error::file("cannot create directory", &o.dir, e))?;
        let job = json!({
            "servers": self.servers(),
            "model_tag": o.filter.model_tag,
            "table": o.filter.table,
        });
        let state = StateFile::new(o.dir.join(EXPORT_STATE), "export");
        let mut run = Run::open(state, job, o.resume, o.page_rows)?;
        let tables = self.selected(&o.filter, &mut run)?;
        let shapes = Shape::infer_all(&tables, &o.shape, self.config().rde_value_storage)?;
        let mut out = Vec::with_capacity(tables.len());
        for (t, &shape) in tables.iter().zip(&shapes) {
            out.push(self.export_table(t, shape, o, &mut run, report)?);
        }
        run.state.remove()?;
        Ok(out)
    }

    fn export_table(
        &self,
        t: &TableInfo,
        shape: Shape,
        o: &ExportOptions,
        run: &mut Run,
        report: &dyn Report,
    ) -> Result<Moved> {
        let base = export_base(&o.dir, t);
        let files = vec![suffixed(&base, "-keys"), suffixed(&base, "-values")];
        let entry = run.entry(&t.prefix).cloned();
        let pos = entry
            .as_ref()
            .map(|e| Position::from_json(e, t, &run.state))
            .transpose()?;
        let lens = entry.as_ref().map(|e| {
            let len = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or(0);
            [len("keys_len"), len("values_len")]
        });
        let moved = |pos: &Position, lens: [u64; 2]| Moved {
            table: t.full_name(),
            to: base.display().to_string(),
            rows: pos.rows,
            bytes: lens[0] + lens[1],
            files: files.clone(),
            sampled: 0,
        };
        if let (Some(p), Some(l)) = (&pos, lens) {
            if p.done {
                return Ok(moved(p, l));
            }
        }
        let mut pos = pos.unwrap_or_default();
        let mut sink = PairFiles::open(&base, shape.key_type, lens)?;
        report.begin(&format!("export {}", t.full_name()), Some(t.rows()));
        report.advance(pos.rows);
        self.stream(t, shape, &mut pos, run, report, &mut sink)?;
        let lens = sink.finish()?;
        write_meta(&base, t, shape, pos.rows)?;
        report.finish();
        pos.done = true;
        let mut done = pos.to_json(t);
        done.insert("keys_len".into(), lens[0].into());
        done.insert("values_len".into(), lens[1].into());
        run.record(&t.prefix, done)?;
        Ok(moved(&pos, lens))
    }
}

/// One table's two files, written under `.tmp` names until complete.
struct PairFiles {
    files: [BufWriter<File>; 2],
    lens: [u64; 2],
    tmp: [PathBuf; 2],
    fin: [PathBuf; 2],
    key_type: KeyType,
    row: Vec<u8>,
}

impl PairFiles {
    /// Creates the `.tmp` files, or with `resume_lens`, reopens them cut to those lengths.
    fn open(base: &Path, key_type: KeyType, resume_lens: Option<[u64; 2]>) -> Result<PairFiles> {
        let dir = base.parent().unwrap_or(base);
        fs::create_dir_all(dir).map_err(|e| Error::file("cannot create directory", dir, e))?;
        let fin = [suffixed(base, "-keys"), suffixed(base, "-values")];
        let tmp = [suffixed(base, "-keys.tmp"), suffixed(base, "-values.tmp")];
        let lens = resume_lens.unwrap_or([0, 0]);
        for (t, f) in tmp.iter().zip(&fin) {
            if resume_lens.is_some() && !t.exists() && f.exists() {
                // Renamed into place just before the run stopped: finish it again.
                fs::rename(f, t).map_err(|e| Error::file("cannot rename", f, e))?;
            } else if resume_lens.is_none() {
                // Files of an earlier export must not pass for this one's.
                match fs::remove_file(f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::file("cannot remove", f, e))
                    }
                    _ => {}
                }
            }
        }
        let open = |i: usize| -> Result<BufWriter<File>> {
            let p = &tmp[i];
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(resume_lens.is_none())
                .open(p)
                .map_err(|e| Error::file("cannot open", p, e))?;
            let have = f
                .metadata()
                .map_err(|e| Error::file("cannot stat", p, e))?
                .len();
            if have < lens[i] {
                return Err(Error::data(format!(
                    "{} holds {have} bytes but the export state records {}: the export \
                     cannot resume; delete {EXPORT_STATE} in that directory to start over",
                    p.display(),
                    lens[i]
                )));
            }
            f.set_len(lens[i])
                .map_err(|e| Error::file("cannot truncate", p, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            std::io::Seek::seek(&mut w, std::io::SeekFrom::Start(lens[i]))
                .map_err(|e| Error::file("cannot seek in", p, e))?;
            Ok(w)
        };
        Ok(PairFiles {
            files: [open(0)?, open(1)?],
            lens,
            tmp,
            fin,
            key_type,
            row: Vec::new(),
        })
    }

    fn write(&mut self, i: usize, bytes: &[u8]) -> Result<()> {
        self.files[i]
            .write_all(bytes)
            .map_err(|e| Error::file("cannot write", &self.tmp[i], e))?;
        self.lens[i] += bytes.len() as u64;
        Ok(())
    }

    /// Syncs both files; returns their lengths.
    fn sync(&mut self) -> Result<[u64; 2]> {
        for (w, p) in self.files.iter_mut().zip(&self.tmp) {
            w.flush().map_err(|e| Error::file("cannot write", p, e))?;
            w.get_ref()
                .sync_data()
                .map_err(|e| Error::file("cannot fsync", p, e))?;
        }
        Ok(self.lens)
    }

    /// Syncs and renames the files into place; returns their lengths.
    fn finish(mut self) -> Result<[u64; 2]> {
        let lens = self.sync()?;
        for (tmp, fin) in self.tmp.iter().zip(&self.fin) {
            fs::rename(tmp, fin).map_err(|e| Error::file("cannot rename into place", fin, e))?;
        }
        if let Some(d) = self.fin[0].parent().and_then(|d| File::open(d).ok()) {
            let _ = d.sync_all();
        }
        Ok(lens)
    }
}

impl Sink for PairFiles {
    fn put(&mut self, batch: &Batch) -> Result<()> {
        let (keys, rows) = (batch.keys()?, batch.rows());
        for i in 0..batch.len() {
            let k = keys.get(i);
            if self.key_type == KeyType::Str {
                self.write(0, &(k.len() as u32).to_le_bytes())?;
            }
            self.write(0, k)?;
            match rows {
                Rows::Fixed { data, row } => self.write(1, &data[i * row..(i + 1) * row])?,
                Rows::Str { .. } => {
                    let mut buf = std::mem::take(&mut self.row);
                    buf.clear();
                    rows.encode(i, &mut buf);
                    let r = self.write(1, &buf);
                    self.row = buf;
                    r?;
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, t: &TableInfo, pos: &Position) -> Result<Map<String, Value>> {
        let lens = self.sync()?;
        let mut e = pos.to_json(t);
        e.insert("keys_len".into(), lens[0].into());
        e.insert("values_len".into(), lens[1].into());
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_round_trip_through_file_names() {
        for name in ["user_emb", "a/b", "a_b", "50%/x\\y", "%2F"] {
            let file = super::file_name_of(name);
            assert!(!file.contains('/') && !file.contains('\\'), "{file}");
            assert_eq!(super::name_of_file(&file), name);
        }
        assert_ne!(super::file_name_of("a/b"), super::file_name_of("a_b"));
    }
}
