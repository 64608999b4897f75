//! Progress of long work (file save and load, rehash and model-tag copy): rows done of the
//! total, the rate, bytes where they are counted, and an ETA, logged about once a second.

use std::time::Instant;

/// A progress report for one long operation.
pub struct Progress {
    what: String,
    total_rows: u64,
    rows: u64,
    bytes: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    /// Starts reporting `what` with `total_rows` expected.
    pub fn new(what: String, total_rows: u64) -> Progress {
        let now = Instant::now();
        Progress {
            what,
            total_rows,
            rows: 0,
            bytes: 0,
            start: now,
            last: now,
        }
    }

    /// Adds rows and bytes done (bytes 0 where they are not counted). The clock is read once
    /// per 4,096 rows, since some callers add rows one at a time.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        let before = self.rows;
        self.rows += rows;
        self.bytes += bytes;
        if before >> 12 != self.rows >> 12 && self.last.elapsed().as_secs_f64() >= 1.0 {
            self.last = Instant::now();
            self.log();
        }
    }

    /// Logs the current state.
    pub fn log(&self) {
        log::info!("{}", self.line());
    }

    /// `what: rows/total rows (pct%), rate rows/s[, MB, MB/s][, ETA]`.
    fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.rows as f64 / secs;
        let mut line = format!(
            "{}: {}/{} rows ({:.0}%), {:.0} rows/s",
            self.what,
            self.rows,
            self.total_rows,
            100.0 * self.rows as f64 / self.total_rows.max(1) as f64,
            rate
        );
        if self.bytes > 0 {
            let mb = self.bytes as f64 / 1e6;
            line += &format!(", {mb:.1} MB, {:.1} MB/s", mb / secs);
        }
        if rate > 0.0 && self.total_rows > self.rows {
            line += &format!(", ETA {:.0} s", (self.total_rows - self.rows) as f64 / rate);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn the_line_has_rows_percent_bytes_only_when_counted_and_an_eta_while_unfinished() {
        let mut p = Progress::new("rehash emb".into(), 200);
        p.add(50, 0);
        let line = p.line();
        assert!(
            line.starts_with("rehash emb: 50/200 rows (25%), "),
            "{line}"
        );
        assert!(!line.contains("MB") && line.contains("ETA"), "{line}");
        p.add(150, 3_000_000);
        let line = p.line();
        assert!(
            line.contains("200/200 rows (100%)") && line.contains("3.0 MB"),
            "{line}"
        );
        assert!(!line.contains("ETA"), "{line}");
    }
}
