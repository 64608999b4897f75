//! `save_to_file_system` / `load_from_file_system`: the table as TFRA's `<path>-keys` and
//! `<path>-values` files, streamed page by page with bounded memory and logged progress.
//!
//! Numeric keys and fixed-size values use TFRA's raw layout (`sizeof(K)` bytes per key,
//! `dim × sizeof(V)` per row, little-endian, no header), so files move both ways between the
//! backends. TFRA writes garbage for strings; here a string key is a u32 LE length plus its
//! bytes, and a string row is stored exactly as in Redis (per element a u32 LE length plus
//! bytes).

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::codec::{KeyType, Keys, Rows};
use crate::error::{Error, Result};
use crate::handoff::{self, Feed};
use crate::persist::block_file::BlockWriter;

/// At most this many bytes are buffered per file (in two halves: one filled while the other is
/// written), whatever `buffer_size` asks for; a few MB already keep the device busy.
const MAX_BUFFER_BYTES: usize = 16 << 20;

/// The directory to use: the value of `$dirpath_env` if that variable is set, else `dirpath`.
pub fn resolve_dir(dirpath: &str, dirpath_env: &str) -> PathBuf {
    if !dirpath_env.is_empty() {
        if let Some(v) = std::env::var_os(dirpath_env).filter(|v| !v.is_empty()) {
            return PathBuf::from(v);
        }
    }
    PathBuf::from(dirpath)
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes one table's `-keys` and `-values` files.
pub struct Writer {
    keys: BlockWriter,
    values: BlockWriter,
    /// (temporary path, final path) pairs renamed into place by [`Writer::finish`].
    renames: Vec<(PathBuf, PathBuf)>,
    key_type: KeyType,
    dir: PathBuf,
}

impl Writer {
    /// Opens `<dir>/<file_name>-keys` and `-values`: appending to them, or writing fresh
    /// temporary files that replace them atomically at the end.
    pub fn create(
        dir: &Path,
        file_name: &str,
        append: bool,
        key_type: KeyType,
        row_bytes: usize,
        buffer_rows: usize,
    ) -> Result<Writer> {
        let base = dir.join(file_name);
        let parent = base.parent().unwrap_or(dir).to_path_buf();
        fs::create_dir_all(&parent)
            .map_err(|e| Error::file("cannot create directory", &parent, e))?;
        let cap = buffer_rows
            .saturating_mul(row_bytes.max(16))
            .clamp(1 << 16, MAX_BUFFER_BYTES);
        let mut renames = Vec::new();
        let mut open = |suffix: &str| -> Result<BlockWriter> {
            let fin = with_suffix(&base, suffix);
            if append {
                BlockWriter::append(&fin, cap / 2).map_err(|e| Error::file("cannot open", &fin, e))
            } else {
                let tmp = with_suffix(&base, &format!("{suffix}.tmp"));
                renames.push((tmp.clone(), fin));
                BlockWriter::create(&tmp, cap / 2).map_err(|e| Error::file("cannot open", &tmp, e))
            }
        };
        let keys = open("-keys")?;
        let values = open("-values")?;
        Ok(Writer {
            keys,
            values,
            renames,
            key_type,
            dir: parent,
        })
    }

    /// Appends one row (raw key bytes, stored value bytes).
    pub fn row(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let w = |e| Error::file("cannot write table files in", &self.dir, e);
        if self.key_type == KeyType::Str {
            self.keys
                .write_all(&(key.len() as u32).to_le_bytes())
                .map_err(w)?;
        }
        self.keys.write_all(key).map_err(w)?;
        self.values.write_all(value).map_err(w)
    }

    /// Flushes, fsyncs and renames the files into place.
    pub fn finish(self) -> Result<()> {
        for f in [self.keys, self.values] {
            let file = f
                .finish()
                .map_err(|e| Error::file("cannot write table files in", &self.dir, e))?;
            file.sync_all()
                .map_err(|e| Error::file("cannot fsync table files in", &self.dir, e))?;
        }
        for (tmp, fin) in &self.renames {
            fs::rename(tmp, fin).map_err(|e| Error::file("cannot rename into place", fin, e))?;
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The base paths (`…` of `…-keys`) to load: `<dir>/<file_name>`, or with `entire_dir`, every
/// `-keys` file in `dir` whose name shares `file_name`'s part up to and including `_mht_`.
pub fn load_paths(dir: &Path, file_name: &str, entire_dir: bool) -> Result<Vec<PathBuf>> {
    if !entire_dir {
        return Ok(vec![dir.join(file_name)]);
    }
    let stem = match file_name.rfind("_mht_") {
        Some(i) => &file_name[..i + 5],
        None => file_name,
    };
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::file("cannot list", dir, e))?;
    for e in entries {
        let name = e
            .map_err(|e| Error::file("cannot list", dir, e))?
            .file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name.strip_suffix("-keys") {
            if base.starts_with(stem) {
                bases.push(dir.join(base));
            }
        }
    }
    bases.sort();
    Ok(bases)
}

/// Reads a `-keys`/`-values` pair in batches of at most `batch_rows` rows and hands each
/// batch to `f` as a key batch and value rows.
pub fn read_pair(
    base: &Path,
    key_type: KeyType,
    dim: usize,
    row_bytes: usize,
    batch_rows: usize,
    f: impl FnMut(&Keys<'_>, &Rows<'_>) -> Result<()>,
) -> Result<u64> {
    read_pair_from(base, key_type, dim, row_bytes, batch_rows, 0, f)
}

/// [`read_pair`] from row `start` on (rows before it are skipped: sought past when keys and
/// rows have fixed sizes, read and dropped otherwise), for a load that resumes. Returns the
/// rows handed to `f`.
pub fn read_pair_from(
    base: &Path,
    key_type: KeyType,
    dim: usize,
    row_bytes: usize,
    batch_rows: usize,
    start: u64,
    mut f: impl FnMut(&Keys<'_>, &Rows<'_>) -> Result<()>,
) -> Result<u64> {
    let mut pair = PairReader::open(base, key_type, dim, row_bytes)?;
    pair.skip(start)?;
    let batch = batch_rows.max(1);
    let mut total = 0u64;
    // A reader thread fills the next batch while `f` upserts this one; at most three batches
    // (reading, queued, upserting) are in memory, and upserted ones come back to be refilled.
    let result = handoff::read_ahead(
        |feed: &Feed<Batch>| pair.read_batches(batch, feed),
        |b| {
            b.hand_to(key_type, dim, row_bytes, &mut f)?;
            total += b.rows as u64;
            Ok(())
        },
    );
    crate::exec::trim_heap();
    result.map(|()| total)
}

/// The two files of a pair, read record by record.
struct PairReader {
    keys: BufReader<File>,
    values: BufReader<File>,
    key_path: PathBuf,
    value_path: PathBuf,
    key_type: KeyType,
    dim: usize,
    row_bytes: usize,
}

impl PairReader {
    /// Opens `<base>-keys` and `<base>-values`; with fixed-size keys and rows, their lengths
    /// must hold the same number of records.
    fn open(base: &Path, key_type: KeyType, dim: usize, row_bytes: usize) -> Result<PairReader> {
        let kp = with_suffix(base, "-keys");
        let vp = with_suffix(base, "-values");
        let kf = File::open(&kp).map_err(|e| Error::file("cannot open", &kp, e))?;
        let vf = File::open(&vp).map_err(|e| Error::file("cannot open", &vp, e))?;
        let len = |f: &File, p: &Path| {
            f.metadata()
                .map(|m| m.len())
                .map_err(|e| Error::file("cannot stat", p, e))
        };
        let (klen, vlen) = (len(&kf, &kp)?, len(&vf, &vp)?);
        if let (Some(w), true) = (key_type.width(), row_bytes > 0) {
            let (nk, nv) = (klen / w as u64, vlen / row_bytes as u64);
            if klen % w as u64 != 0 || vlen % row_bytes as u64 != 0 || nk != nv {
                return Err(Error::data(format!(
                    "{} holds {klen} bytes ({nk} keys of {w}) but {} holds {vlen} bytes ({nv} rows of {row_bytes}); they do not match",
                    kp.display(),
                    vp.display()
                )));
            }
        }
        Ok(PairReader {
            keys: BufReader::with_capacity(1 << 20, kf),
            values: BufReader::with_capacity(1 << 20, vf),
            key_path: kp,
            value_path: vp,
            key_type,
            dim,
            row_bytes,
        })
    }

    /// Moves past the first `rows` records of both files.
    fn skip(&mut self, rows: u64) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        if let (Some(w), true) = (self.key_type.width(), self.row_bytes > 0) {
            let to = |n: usize| SeekFrom::Start(rows.saturating_mul(n as u64));
            self.keys
                .seek(to(w))
                .map_err(|e| Error::file("cannot seek in", &self.key_path, e))?;
            return self
                .values
                .seek(to(self.row_bytes))
                .map(drop)
                .map_err(|e| Error::file("cannot seek in", &self.value_path, e));
        }
        let mut scratch = Batch::default();
        for _ in 0..rows {
            if !self.read_row(&mut scratch)? {
                return Err(self.corrupt(&format!("the files hold fewer than {rows} rows")));
            }
            if scratch.rows >= 1024 {
                scratch.clear();
            }
        }
        Ok(())
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::data(format!(
            "{} / {}: {what}",
            self.key_path.display(),
            self.value_path.display()
        ))
    }

    /// Appends `n` bytes of the keys (`values` false) or values file to `out`; false at the
    /// end of the file. A file that ends inside a record is corrupt; any other read error is
    /// the file system's.
    fn read(&mut self, values: bool, n: usize, out: &mut Vec<u8>) -> Result<bool> {
        let (r, path) = if values {
            (&mut self.values, &self.value_path)
        } else {
            (&mut self.keys, &self.key_path)
        };
        read_exact_or_eof(r, n, out).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.corrupt(&e.to_string()),
            _ => Error::file("cannot read", path, e),
        })
    }

    /// A u32 LE length prefix; None at the end of the file.
    fn read_len(&mut self, values: bool) -> Result<Option<usize>> {
        let mut b = Vec::with_capacity(4);
        Ok(self
            .read(values, 4, &mut b)?
            .then(|| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize))
    }

    /// Sends batches of `batch` rows (the last one shorter) to `feed` until the files end, then
    /// checks that the values file ended with the keys file.
    fn read_batches(&mut self, batch: usize, feed: &Feed<Batch>) -> Result<()> {
        loop {
            let mut b = feed.reuse().unwrap_or_default();
            b.clear();
            while b.rows < batch && self.read_row(&mut b)? {}
            let last = b.rows < batch;
            if b.rows > 0 && !feed.send(b) {
                return Ok(()); // `f` failed; its error is reported
            }
            if last {
                break;
            }
        }
        if self.read(true, 1, &mut Vec::new())? {
            return Err(self.corrupt("the values file has more rows than the keys file"));
        }
        Ok(())
    }

    /// Appends the next key and its row to `b`; false when the keys file has ended.
    fn read_row(&mut self, b: &mut Batch) -> Result<bool> {
        match self.key_type.width() {
            Some(w) => {
                if !self.read(false, w, &mut b.keys)? {
                    return Ok(false);
                }
            }
            None => {
                let Some(len) = self.read_len(false)? else {
                    return Ok(false);
                };
                if !self.read(false, len, &mut b.keys)? && len > 0 {
                    return Err(self.corrupt("the keys file ends inside a key"));
                }
                b.key_offs.push(b.keys.len() as u64);
            }
        }
        let short = "the values file has fewer rows than the keys file";
        if self.row_bytes > 0 {
            if !self.read(true, self.row_bytes, &mut b.values)? {
                return Err(self.corrupt(short));
            }
        } else {
            for _ in 0..self.dim {
                let Some(len) = self.read_len(true)? else {
                    return Err(self.corrupt(short));
                };
                if !self.read(true, len, &mut b.values)? && len > 0 {
                    return Err(self.corrupt("the values file ends inside a value"));
                }
                b.value_offs.push(b.values.len() as u64);
            }
        }
        b.rows += 1;
        Ok(true)
    }
}

/// Rows read from a file pair, owned so that they can cross to the upserting thread.
struct Batch {
    keys: Vec<u8>,
    key_offs: Vec<u64>,
    values: Vec<u8>,
    value_offs: Vec<u64>,
    rows: usize,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            keys: Vec::new(),
            key_offs: vec![0],
            values: Vec::new(),
            value_offs: vec![0],
            rows: 0,
        }
    }
}

impl Batch {
    fn clear(&mut self) {
        self.keys.clear();
        self.key_offs.truncate(1);
        self.values.clear();
        self.value_offs.truncate(1);
        self.rows = 0;
    }

    fn hand_to(
        &self,
        key_type: KeyType,
        dim: usize,
        row_bytes: usize,
        f: &mut impl FnMut(&Keys<'_>, &Rows<'_>) -> Result<()>,
    ) -> Result<()> {
        let keys = Keys::new(key_type, &self.keys, &self.key_offs)?;
        let rows = if row_bytes > 0 {
            Rows::Fixed {
                data: &self.values,
                row: row_bytes,
            }
        } else {
            Rows::Str {
                data: &self.values,
                offsets: &self.value_offs,
                dim,
            }
        };
        f(&keys, &rows)
    }
}

fn read_exact_or_eof(r: &mut impl Read, n: usize, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let start = out.len();
    out.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        match r.read(&mut out[start + got..])? {
            0 if got == 0 => {
                out.truncate(start);
                return Ok(false);
            }
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ends inside a record",
                ))
            }
            k => got += k,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entire_dir_loads_every_pair_sharing_the_name_up_to_mht() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "emb_mht_1of2_rank0_size1",
            "emb_mht_2of2_rank0_size1",
            "other_mht_1of1",
        ] {
            fs::write(d.path().join(format!("{n}-keys")), b"").unwrap();
            fs::write(d.path().join(format!("{n}-values")), b"").unwrap();
        }
        let got = load_paths(d.path(), "emb_mht_1of1", true).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["emb_mht_1of2_rank0_size1", "emb_mht_2of2_rank0_size1"]
        );
        assert_eq!(
            load_paths(d.path(), "x", false).unwrap(),
            [d.path().join("x")]
        );
        assert_eq!(resolve_dir("/a", ""), PathBuf::from("/a"));
    }
}
