//! How long admin work reports its progress: the CLI draws progress bars from these calls,
//! tests and scripts pass [`Quiet`].

/// Receives the progress of one long command. Calls come from one thread at a time.
pub trait Report: Sync {
    /// A new phase starts: `what` it does, and how many units (rows or keys) it will take if
    /// known.
    fn begin(&self, what: &str, total: Option<u64>);
    /// `units` more are done.
    fn advance(&self, units: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
pub struct Quiet;

impl Report for Quiet {
    fn begin(&self, _what: &str, _total: Option<u64>) {}
    fn advance(&self, _units: u64) {}
    fn finish(&self) {}
}
