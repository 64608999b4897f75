//! `import`: TFRA's `-keys`/`-values` files into tables, through [`Table::insert`] so the
//! bucket layout, layout record and stored form are the table's own.
//!
//! The files are found in a directory written by `export` (`<dir>/<tag>/<name>-keys`) or by
//! `save_to_file_system` (`<dir>/<file>-keys`, the table named by `<file>` cut at `_mht_`).
//! `dim` comes from the file sizes. After every batch the rows done per file pair are
//! recorded in a state file; HSET is idempotent, so a resumed run skips those rows and
//! continues.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::export::{name_of_file, META_FORMAT, META_SUFFIX};
use super::resume::StateFile;
use super::shape::ShapeHint;
use super::stream::{on_redis, Moved, Run};
use super::{Filter, Report};
use crate::codec::{KeyType, Keys, ValueType};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::persist::files;
use crate::table::{Table, TableSpec};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// Which tables (by the model tag and name the files give).
    pub filter: Filter,
    /// Import into this model tag instead of the files' (or the config's runtime tag).
    pub to_model_tag: Option<String>,
    /// Key type (default int64), value type (default float32), `dim` (default from sizes).
    pub shape: ShapeHint,
    /// Continue the interrupted import recorded in `state`.
    pub resume: bool,
    /// The state file.
    pub state: PathBuf,
    /// Rows per insert.
    pub batch_rows: usize,
}

/// One `-keys`/`-values` pair and the table it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePair {
    /// The path without `-keys`.
    pub base: PathBuf,
    /// The model tag: the subdirectory's name, else the config's runtime tag.
    pub model_tag: String,
    /// The embedding name: the file name cut at `_mht_`.
    pub name: String,
}

fn suffixed(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The file pairs in `dir` (model tag `tag`) and in its subdirectories (model tag = their
/// name; `_md5`, whose tables are named by a digest, is skipped), sorted.
pub fn find_pairs(dir: &Path, tag: &str) -> Result<Vec<FilePair>> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Result<Vec<(String, bool)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(d).map_err(|e| Error::file("cannot list", d, e))? {
            let e = e.map_err(|e| Error::file("cannot list", d, e))?;
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            v.push((e.file_name().to_string_lossy().into_owned(), is_dir));
        }
        v.sort();
        Ok(v)
    };
    let mut pairs_in = |d: &Path, tag: &str, names: &[(String, bool)]| -> Result<()> {
        for (n, _) in names.iter().filter(|(_, is_dir)| !is_dir) {
            let Some(file) = n.strip_suffix("-keys") else {
                continue;
            };
            let base = d.join(file);
            let values = suffixed(&base, "-values");
            if !values.exists() {
                return Err(Error::invalid(format!(
                    "{} has no {}: a -keys file needs its -values file",
                    d.join(n).display(),
                    values.display()
                )));
            }
            let name = name_of_file(file.split("_mht_").next().unwrap_or(file));
            out.push(FilePair {
                base,
                model_tag: tag.to_owned(),
                name,
            });
        }
        Ok(())
    };
    let top = list(dir)?;
    pairs_in(dir, tag, &top)?;
    for (sub, _) in top
        .iter()
        .filter(|(n, d)| *d && n != "_md5" && !n.starts_with('.'))
    {
        let d = dir.join(sub);
        pairs_in(&d, &name_of_file(sub), &list(&d)?)?;
    }
    Ok(out)
}

/// The dtypes and `dim` that `export` recorded beside a pair (`<base>-meta.json`), or none
/// for files without one (`save_to_file_system`'s).
fn read_meta(base: &Path) -> Result<ShapeHint> {
    let path = suffixed(base, META_SUFFIX);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ShapeHint::default()),
        Err(e) => return Err(Error::file("cannot read", &path, e)),
    };
    let bad = |what: &str| Error::data(format!("{}: {what}", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON ({e})")))?;
    if v["format"] != META_FORMAT {
        return Err(bad(&format!("format is not \"{META_FORMAT}\"")));
    }
    let name = |field: &str| v[field].as_str().unwrap_or("");
    Ok(ShapeHint {
        key_type: Some(KeyType::from_name(name("key_dtype")).ok_or_else(|| bad("bad key_dtype"))?),
        value_type: Some(
            ValueType::from_name(name("value_dtype")).ok_or_else(|| bad("bad value_dtype"))?,
        ),
        dim: Some(v["dim"].as_u64().ok_or_else(|| bad("bad dim"))? as usize),
    })
}

/// Rows and `dim` of a pair, from its sizes (`dim` checked against `hint`).
pub fn pair_shape(
    base: &Path,
    kt: KeyType,
    vt: ValueType,
    hint: Option<usize>,
) -> Result<(u64, usize)> {
    let (kp, vp) = (suffixed(base, "-keys"), suffixed(base, "-values"));
    let len = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| Error::file("cannot stat", p, e))
    };
    let (klen, vlen) = (len(&kp)?, len(&vp)?);
    let rows = match kt.width() {
        Some(w) if klen % w as u64 != 0 => {
            return Err(Error::data(format!(
                "{}: {klen} bytes is not a whole number of {w}-byte keys: is --key-dtype right?",
                kp.display()
            )))
        }
        Some(w) => klen / w as u64,
        None => count_str_keys(&kp)?,
    };
    let Some(elem) = vt.elem_size() else {
        let dim = hint
            .ok_or_else(|| Error::invalid(format!("{}: string values need --dim", vp.display())))?;
        return Ok((rows, dim));
    };
    let per_row = rows * elem as u64;
    let dim = match (rows, hint) {
        (0, _) if vlen != 0 => {
            return Err(Error::data(format!(
                "{} holds {vlen} bytes but {} holds no keys",
                vp.display(),
                kp.display()
            )))
        }
        (0, h) => h.unwrap_or(1),
        _ if vlen % per_row != 0 || vlen == 0 => {
            return Err(Error::data(format!(
                "{}: {vlen} bytes do not divide into {rows} rows of {}-byte {} elements \
                 ({} holds {rows} keys): are --key-dtype and --value-dtype right?",
                vp.display(),
                elem,
                vt.tf_name(),
                kp.display()
            )))
        }
        (_, Some(h)) if h as u64 * per_row != vlen => {
            return Err(Error::data(format!(
                "{}: {vlen} bytes hold rows of {} elements, not --dim {h}",
                vp.display(),
                vlen / per_row
            )))
        }
        _ => (vlen / per_row) as usize,
    };
    Ok((rows, dim))
}

/// Records in a string keys file (each a u32 LE length and its bytes).
fn count_str_keys(path: &Path) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let f = fs::File::open(path).map_err(|e| Error::file("cannot open", path, e))?;
    let end = f
        .metadata()
        .map_err(|e| Error::file("cannot stat", path, e))?
        .len();
    let mut r = std::io::BufReader::new(f);
    let (mut at, mut n) = (0u64, 0u64);
    let mut len = [0u8; 4];
    while at < end {
        r.read_exact(&mut len)
            .map_err(|e| Error::file("cannot read", path, e))?;
        at += 4 + u64::from(u32::from_le_bytes(len));
        if at > end {
            return Err(Error::data(format!(
                "{}: the file ends inside a key",
                path.display()
            )));
        }
        r.seek(SeekFrom::Start(at))
            .map_err(|e| Error::file("cannot seek in", path, e))?;
        n += 1;
    }
    Ok(n)
}

/// Imports the file pairs `o` selects into the deployment of `cfg`.
pub fn import(cfg: &Config, o: &ImportOptions, report: &dyn Report) -> Result<Vec<Moved>> {
    on_redis(cfg, "the config")?;
    let dir = fs::canonicalize(&o.dir).unwrap_or_else(|_| o.dir.clone());
    let job = json!({
        "dir": dir.display().to_string(),
        "servers": cfg.redis_host_ip.iter().zip(&cfg.redis_host_port)
            .map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>(),
        "to_model_tag": o.to_model_tag,
        "model_tag": o.filter.model_tag,
        "table": o.filter.table,
    });
    let state = StateFile::new(o.state.clone(), "import");
    let mut run = Run::open(state, job, o.resume, o.batch_rows)?;
    let found: Vec<FilePair> = find_pairs(&o.dir, &cfg.model_tag_runtime)?
        .into_iter()
        .filter(|p| o.filter.keeps(&p.model_tag, &p.name))
        .collect();
    let pairs = run.select(found, |p| p.base.as_os_str().as_encoded_bytes());
    if pairs.is_empty() {
        return Err(Error::invalid(format!(
            "no -keys/-values files in {} (or its subdirectories) match the selection",
            o.dir.display()
        )));
    }
    let shapes = pairs
        .iter()
        .map(|p| {
            let meta = read_meta(&p.base)?;
            let kt = o.shape.key_type.or(meta.key_type).unwrap_or(KeyType::I64);
            let vt = o
                .shape
                .value_type
                .or(meta.value_type)
                .unwrap_or(ValueType::F32);
            let (rows, dim) = pair_shape(&p.base, kt, vt, o.shape.dim.or(meta.dim))?;
            Ok((kt, vt, rows, dim))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(pairs.len());
    for (p, &(kt, vt, total, dim)) in pairs.iter().zip(&shapes) {
        let spec = TableSpec::new(&p.name, kt, vt, dim);
        out.push(import_pair(cfg, o, p, spec, total, &mut run, report)?);
    }
    run.state.remove()?;
    Ok(out)
}

/// Imports pair `p` (`total` rows) into a table of `spec`.
fn import_pair(
    cfg: &Config,
    o: &ImportOptions,
    p: &FilePair,
    spec: TableSpec,
    total: u64,
    run: &mut Run,
    report: &dyn Report,
) -> Result<Moved> {
    let (kt, dim) = (spec.key_type, spec.dim);
    let tag = o
        .to_model_tag
        .clone()
        .unwrap_or_else(|| p.model_tag.clone());
    let files = vec![suffixed(&p.base, "-keys"), suffixed(&p.base, "-values")];
    let bytes = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let id = p.base.as_os_str().as_encoded_bytes().to_vec();
    let entry = run.entry(&id);
    let mut rows = entry
        .and_then(|e| e.get("rows"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut moved = Moved {
        table: format!("{tag}:{}", p.name),
        to: format!("{tag}:{}", p.name),
        rows,
        bytes,
        files,
        sampled: 0,
    };
    if entry.and_then(|e| e.get("done")).and_then(Value::as_bool) == Some(true) {
        return Ok(moved);
    }
    let mut tcfg = cfg.clone();
    tcfg.model_tag_runtime = tag.clone();
    tcfg.model_tag_import = tag;
    let tensor_row = spec.value_type.elem_size().map_or(0, |e| e * dim);
    let table =
        Table::open(tcfg, spec).map_err(|e| e.context(format!("opening table {}", moved.table)))?;
    report.begin(&format!("import {}", moved.table), Some(total));
    report.advance(rows);
    let entry = |rows: u64, done: bool| -> Map<String, Value> {
        let v = json!({ "rows": rows, "done": done });
        v.as_object().cloned().unwrap_or_default()
    };
    files::read_pair_from(
        &p.base,
        kt,
        dim,
        tensor_row,
        o.batch_rows.max(1),
        rows,
        |k: &Keys<'_>, r| {
            table.insert(k, r)?;
            run.moved(k.len() as u64)?;
            rows += k.len() as u64;
            report.advance(k.len() as u64);
            run.record(&id, entry(rows, false))
        },
    )?;
    report.finish();
    run.record(&id, entry(rows, true))?;
    moved.rows = rows;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_found_at_the_top_and_per_model_tag() {
        let d = tempfile::tempdir().unwrap();
        let put = |p: &str, n: usize| fs::write(d.path().join(p), vec![0u8; n]).unwrap();
        fs::create_dir(d.path().join("t1")).unwrap();
        fs::create_dir(d.path().join("_md5")).unwrap();
        for base in ["emb_mht_1of2_rank0_size1", "t1/other", "_md5/ab01"] {
            put(&format!("{base}-keys"), 16);
            put(&format!("{base}-values"), 24);
        }
        put("t1/other-keys.tmp", 8);
        let got = find_pairs(d.path(), "rt").unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| (p.model_tag.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(names, [("rt", "emb"), ("t1", "other")]);
        let (kt, vt) = (KeyType::I64, ValueType::F32);
        assert_eq!(pair_shape(&got[1].base, kt, vt, None).unwrap(), (2, 3));
        let e = pair_shape(&got[1].base, kt, vt, Some(2)).unwrap_err();
        assert!(e.message().contains("not --dim 2"), "{e}");
        put("t1/other-values", 20);
        let e = pair_shape(&got[1].base, kt, vt, None).unwrap_err();
        assert!(e.message().contains("other-values"), "{e}");
        put("lonely-keys", 8);
        let e = find_pairs(d.path(), "rt").unwrap_err();
        assert!(e.message().contains("lonely-values"), "{e}");
        let strs = d.path().join("s");
        fs::write(
            d.path().join("s-keys"),
            [&1u32.to_le_bytes()[..], b"a", &0u32.to_le_bytes()].concat(),
        )
        .unwrap();
        fs::write(d.path().join("s-values"), [0u8; 16]).unwrap();
        assert_eq!(pair_shape(&strs, KeyType::Str, vt, None).unwrap(), (2, 2));
    }
}
