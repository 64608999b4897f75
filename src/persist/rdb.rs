//! `table_store_mode` 1: each bucket is saved with `DUMP` to
//! `<model_lib_abs_dir>/<model_tag>/<bucket>.rdb` and restored with `RESTORE … REPLACE`, as in
//! TFRA, with the fixes TFRA lacks: files are written synchronously to a temporary name,
//! fsynced and renamed into place; restore pairs each file with its bucket by name; a missing
//! file is an error; an empty bucket is saved as an empty file and restored as an empty bucket.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::persist::block_file::BlockWriter;

/// The file name of `bucket`: the bucket name with every byte outside `[A-Za-z0-9:{}_.-]`
/// percent-encoded (so binary MD5 prefixes and `/` are safe, and the mapping is reversible),
/// plus `.rdb`. Plain TFRA names such as `test:emb{3560}` are unchanged.
pub fn file_name(bucket: &[u8]) -> String {
    let mut s = encode_name(bucket);
    s.push_str(".rdb");
    s
}

/// `name` as a file name: every byte outside `[A-Za-z0-9:{}_.-]` percent-encoded.
pub fn encode_name(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len() + 4);
    for &b in name {
        if b.is_ascii_alphanumeric() || b":{}_.-".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `<model_lib_abs_dir>/<model_tag>`.
pub fn dir(model_lib_abs_dir: &str, model_tag: &str) -> Result<PathBuf> {
    if model_tag.contains('/') || model_tag == ".." || model_tag.is_empty() {
        return Err(Error::invalid(format!(
            "model tag {model_tag:?} cannot name a directory under model_lib_abs_dir"
        )));
    }
    Ok(Path::new(model_lib_abs_dir).join(model_tag))
}

/// Writes `payload` to `path` durably: temporary file, fsync, rename, fsync of the directory.
pub fn write_file(path: &Path, payload: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let err = |what: &str, e| Error::file(what, path, e);
    fs::create_dir_all(parent).map_err(|e| err("cannot create the directory of", e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut w = BlockWriter::create(&tmp, payload.len().clamp(1 << 16, 8 << 20))
        .map_err(|e| err("cannot create", e))?;
    w.write_all(payload).map_err(|e| err("cannot write", e))?;
    let f = w.finish().map_err(|e| err("cannot write", e))?;
    f.sync_all().map_err(|e| err("cannot fsync", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| err("cannot rename into place", e))?;
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a bucket file; a missing file is NotFound naming it.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::file("table_store_mode 1 restore: cannot read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_match_tfra_and_odd_bytes_are_encoded() {
        assert_eq!(file_name(b"test:emb{3560}"), "test:emb{3560}.rdb");
        assert_eq!(file_name(b"a/b\0%{1}"), "a%2Fb%00%25{1}.rdb");
        assert!(dir("/tmp", "../x").is_err());
    }
}
