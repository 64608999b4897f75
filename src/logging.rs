//! Log output for the op library: `log` records go to stderr, filtered by `RDE_LOG`
//! (`error`, `warn`, `info` (default), `debug`, `off`). Installed once, on the first table
//! open, and only if the process has no logger yet.

use std::io::Write;

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "[redis_embedding {}] {}",
                r.level(),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the stderr logger (idempotent).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("RDE_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(log::LevelFilter::Info);
        if log::set_logger(&Stderr).is_ok() {
            log::set_max_level(level);
        }
    });
}
