//! The crate's one error type. Callers branch on [`ErrorKind`], never on message text.

use std::fmt;

/// What went wrong, coarse enough to pick a TensorFlow status code from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A config field, op attribute or argument is invalid.
    InvalidArgument,
    /// A config file (or another named resource) does not exist.
    NotFound,
    /// Redis could not be reached, or the connection broke mid-request.
    Connection,
    /// A connect, socket or pool-wait timeout expired.
    Timeout,
    /// Redis answered with an error reply, or with a reply we cannot parse.
    Server,
    /// Data stored in Redis does not fit the table (wrong value length, bad key bytes).
    Data,
    /// The feature exists in TFRA's surface but is not available in this build.
    Unimplemented,
    /// Redis refused the credentials, or the ACL user may not run a command (WRONGPASS,
    /// NOAUTH, NOPERM).
    PermissionDenied,
    /// A bug in this library (a panic caught at the TensorFlow bridge).
    Internal,
    /// The table changed under a long operation (for example rows added during an export);
    /// retrying the operation is the fix.
    Conflict,
}

/// An error from the table core. `Display` gives the full, user-facing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The raw error reply, when the error is one (for redirects such as MOVED).
    reply: Option<String>,
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error of `kind` with a complete message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            reply: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Shorthand for [`ErrorKind::Data`].
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Appends advice (what to set or do) to the message, keeping the kind.
    pub fn hint(mut self, advice: impl fmt::Display) -> Self {
        self.message = format!("{}. {advice}", self.message.trim_end_matches('.'));
        self
    }

    /// The `absl::StatusCode` TensorFlow reports for this error. This is the one place
    /// where kinds meet TF codes; the C++ shim only forwards the number.
    pub fn tf_code(&self) -> i32 {
        match self.kind {
            ErrorKind::InvalidArgument => 3,  // INVALID_ARGUMENT
            ErrorKind::PermissionDenied => 7, // PERMISSION_DENIED
            ErrorKind::Timeout => 4,          // DEADLINE_EXCEEDED
            ErrorKind::NotFound => 5,         // NOT_FOUND
            ErrorKind::Conflict => 10,        // ABORTED
            ErrorKind::Unimplemented => 12,   // UNIMPLEMENTED
            ErrorKind::Server => 13,          // INTERNAL
            ErrorKind::Internal => 13,        // INTERNAL
            ErrorKind::Connection => 14,      // UNAVAILABLE
            ErrorKind::Data => 15,            // DATA_LOSS
        }
    }

    /// True for errors a caller may retry on a fresh connection.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }

    /// An error reply from the server at `addr`. The connection stays usable.
    pub(crate) fn server_reply(addr: &str, reply: &str) -> Self {
        let code = reply.split_whitespace().next().unwrap_or("");
        let kind = match code {
            "NOPERM" | "WRONGPASS" | "NOAUTH" => ErrorKind::PermissionDenied,
            _ => ErrorKind::Server,
        };
        let mut e = Error::new(
            kind,
            format!("redis at {addr} replied with an error: {reply}"),
        );
        e.reply = Some(reply.to_owned());
        e
    }

    /// The server's error reply text, if this error is one.
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// A file-system error on `path` while doing `what`: a missing file is NotFound, any
    /// other failure InvalidArgument (the path the caller gave is unusable).
    pub(crate) fn file(what: &str, path: &std::path::Path, err: &std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::InvalidArgument
        };
        Error::new(kind, format!("{what} {}: {err}", path.display()))
    }

    /// Maps an I/O error on a connection to `addr` into a Connection or Timeout error.
    pub(crate) fn io(addr: &str, doing: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
            _ => ErrorKind::Connection,
        };
        let what = if kind == ErrorKind::Timeout {
            "timed out"
        } else {
            "failed"
        };
        Error::new(kind, format!("redis at {addr}: {doing} {what}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
