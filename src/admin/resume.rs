//! What lets `export`, `import` and `copy` resume: a small JSON state file, replaced
//! atomically after each acknowledged page or batch, and removed once the command has
//! finished. A run finding one left behind refuses to start over unless told to resume.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// One command's state file.
pub(crate) struct StateFile {
    path: PathBuf,
    command: &'static str,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf, command: &'static str) -> StateFile {
        StateFile { path, command }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The state to continue from. Without `resume`, a state file left behind is an error
    /// (an interrupted run must not be silently restarted); with it, a missing file means a
    /// fresh start. `job` describes the run (sources, destination): a state file recorded for
    /// another job is refused.
    pub(crate) fn open(&self, resume: bool, job: &Value) -> Result<Option<Value>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::file("cannot read the state file", &self.path, e)),
        };
        let shown = self.path.display();
        if !resume {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "an interrupted {} left its state in {shown}: pass --resume to finish it, \
                     or delete that file to start over",
                    self.command
                ),
            ));
        }
        let state: Value = serde_json::from_str(&text).map_err(|e| {
            Error::data(format!(
                "{shown} is not a state file ({e}): delete it to start over"
            ))
        })?;
        if state.get("command").and_then(Value::as_str) != Some(self.command) {
            return Err(Error::invalid(format!(
                "{shown} is not the state of a {}: pass another --state file",
                self.command
            )));
        }
        if state.get("job") != Some(job) {
            return Err(Error::invalid(format!(
                "{shown} records another {} (job {}): run it with the same arguments, or \
                 delete that file to start over",
                self.command,
                state.get("job").unwrap_or(&Value::Null)
            )));
        }
        Ok(Some(state))
    }

    /// Replaces the state with `{command, job, ..fields}` (written to a temporary file,
    /// synced, then renamed over the old one, so a crash leaves the old state or the new one).
    pub(crate) fn save(&self, job: &Value, fields: &Map<String, Value>) -> Result<()> {
        let mut state = fields.clone();
        state.insert("command".into(), self.command.into());
        state.insert("job".into(), job.clone());
        let state = Value::Object(state);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(state.to_string().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| Error::file("cannot write the state file", &self.path, e))
    }

    /// Removes the state once the command is done.
    pub(crate) fn remove(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::file("cannot remove the state file", &self.path, e))
            }
            _ => Ok(()),
        }
    }
}

/// Bytes as lowercase hex (bucket keys and cursors in state files).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of [`hex`] text; `None` if it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Test-only failpoint (feature `failpoints`): `RDE_FAILPOINT_ADMIN_ABORT_AFTER=<rows>` makes
/// an export, import or copy stop with an error once this run has moved that many rows, after
/// the rows were written and before their progress is recorded, as a crash there would.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(rows: u64) -> Result<()> {
    match std::env::var("RDE_FAILPOINT_ADMIN_ABORT_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(limit) if rows >= limit => Err(Error::new(
            ErrorKind::Connection,
            format!("failpoint: stopped after {rows} rows"),
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn failpoint(_rows: u64) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_odd_text() {
        assert_eq!(hex(b"\x00a{1}"), "00617b317d");
        assert_eq!(unhex("00617b317d").unwrap(), b"\x00a{1}");
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_left_state_needs_resume_and_the_same_job() {
        let d = tempfile::tempdir().unwrap();
        let s = StateFile::new(d.path().join("st"), "copy");
        let job = serde_json::json!({"to": "a"});
        assert_eq!(s.open(false, &job).unwrap(), None);
        let mut fields = Map::new();
        fields.insert("tables".into(), serde_json::json!([1]));
        s.save(&job, &fields).unwrap();
        let e = s.open(false, &job).unwrap_err();
        assert!(e.message().contains("--resume"), "{e}");
        assert_eq!(s.open(true, &job).unwrap().unwrap()["tables"][0], 1);
        let other = serde_json::json!({"to": "b"});
        assert!(s.open(true, &other).is_err());
        assert!(StateFile::new(s.path().into(), "export")
            .open(true, &job)
            .is_err());
        s.remove().unwrap();
        assert_eq!(s.open(true, &job).unwrap(), None);
    }
}
