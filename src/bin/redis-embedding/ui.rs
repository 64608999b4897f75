//! Output: aligned text tables, human sizes, JSON, and progress bars.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use redis_embedding::admin::Report;

/// Prints `rows` under `header` with columns padded to their widest cell; numeric columns
/// (every cell parses as a number or is `-`) are right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    let c = r[i]
                        .trim_end_matches(['K', 'M', 'G', 'T', 'B', 'i', 's', 'm', 'h', 'd', '%']);
                    c == "-" || c.parse::<f64>().is_ok()
                })
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut out = String::new();
        for (i, c) in cells.enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(&c);
            } else {
                out.push_str(&c);
                if i + 1 < cols {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        println!("{}", out.trim_end());
    };
    line(&mut header.iter().map(|h| h.to_string()));
    for r in rows {
        line(&mut r.iter().cloned());
    }
}

/// `bytes` in binary units (`512B`, `1.5MiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// A TTL in ms as a duration (`45s`, `12m`, `3.5h`, `7.0d`), `-` for none.
pub fn ttl(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".to_owned();
    };
    let s = ms as f64 / 1000.0;
    match ms / 1000 {
        0..60 => format!("{}s", ms / 1000),
        60..3600 => format!("{}m", ms / 60_000),
        3600..86400 => format!("{:.1}h", s / 3600.0),
        _ => format!("{:.1}d", s / 86400.0),
    }
}

/// Prints `value` as pretty JSON.
pub fn json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Progress bars on stderr while it is a terminal (nothing otherwise, so piped output and
/// logs stay clean).
pub struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    visible: bool,
}

impl Bars {
    /// Bars drawn if stderr is a terminal.
    pub fn new() -> Bars {
        Bars {
            bar: std::sync::Mutex::new(None),
            visible: std::io::stderr().is_terminal(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Report for Bars {
    fn begin(&self, what: &str, total: Option<u64>) {
        if !self.visible {
            return;
        }
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = if total.is_some() {
            "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}"
        } else {
            "{msg} {spinner} {human_pos} {per_sec}"
        };
        bar.set_style(
            ProgressStyle::with_template(style)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some(old) = self.lock().replace(bar) {
            old.finish();
        }
    }

    fn advance(&self, units: u64) {
        if let Some(b) = self.lock().as_ref() {
            b.inc(units);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.lock().take() {
            b.finish();
        }
    }
}
