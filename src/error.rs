//! The crate's one error type. Callers branch on [`ErrorKind`] and, for error replies, on
//! [`ServerError`], never on message text: a reply is classified once, where it is read
//! ([`Error::server_reply`]), and an I/O error keeps the original as its `source()`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// What went wrong, coarse enough to pick a TensorFlow status code from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A config field, op attribute or argument is invalid (including an unusable path).
    InvalidArgument,
    /// The servers are set up in a way the table cannot safely run on (an evicting
    /// `maxmemory-policy`); the error says what to change.
    FailedPrecondition,
    /// A config file (or another named resource) does not exist.
    NotFound,
    /// Redis could not be reached, or the connection broke mid-request.
    Connection,
    /// A connect, socket or pool-wait timeout expired.
    Timeout,
    /// Redis answered with an error reply not covered by a narrower kind, or with a reply we
    /// cannot parse.
    Server,
    /// Data stored in Redis does not fit the table (wrong value length, bad key bytes).
    Data,
    /// The feature exists in TFRA's surface but is not available in this build.
    Unimplemented,
    /// Redis refused the credentials, or the ACL user may not run a command (WRONGPASS,
    /// NOAUTH, NOPERM); or the file system denied access (EACCES, EPERM, EROFS).
    PermissionDenied,
    /// A bug in this library (a panic caught at the TensorFlow bridge).
    Internal,
    /// The table changed under a long operation (for example rows added during an export);
    /// retrying the operation is the fix.
    Conflict,
    /// Redis answered but cannot run commands right now (TRYAGAIN, CLUSTERDOWN, LOADING,
    /// READONLY, MASTERDOWN): a failover, resharding or restart is under way. Such replies
    /// are retried; this kind reaches a caller only once the retries are used up.
    Unavailable,
    /// Something ran out: disk space or quota (ENOSPC, EDQUOT, EFBIG), open files (EMFILE,
    /// ENFILE), memory (ENOMEM, Redis at `maxmemory` replying OOM).
    ResourceExhausted,
    /// A file or directory to be created exists already (EEXIST).
    AlreadyExists,
    /// The local file system failed in a way the caller's arguments do not explain (EIO, a
    /// stale NFS handle, a writer thread that stopped).
    FileSystem,
}

/// An error reply from Redis, classified by its first word (and, for `ERR`, its text) by
/// `ServerError::parse`, the one place that reads reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// `MOVED <slot> <addr>`: the slot is served by `addr` from now on.
    Moved {
        /// The hash slot, below 16,384.
        slot: u16,
        /// `host:port` of the new owner.
        addr: String,
    },
    /// `ASK <slot> <addr>`: this one command goes to `addr`, preceded by ASKING.
    Ask {
        /// The hash slot, below 16,384.
        slot: u16,
        /// `host:port` of the node importing the slot.
        addr: String,
    },
    /// `TRYAGAIN`: a multi-key command during a slot migration.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster (or this slot) is not served.
    ClusterDown,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `READONLY`: a write reached a replica (for example a demoted master).
    ReadOnly,
    /// `MASTERDOWN`: a replica lost its master and does not serve stale data.
    MasterDown,
    /// `NOSCRIPT`: EVALSHA of a script the server does not hold.
    NoScript,
    /// `WRONGTYPE`: the key holds another Redis type.
    WrongType,
    /// `NOAUTH`: authentication is required.
    NoAuth,
    /// `NOPERM`: the ACL user may not run this command or touch this key.
    NoPerm,
    /// `WRONGPASS`: wrong user name or password.
    WrongPass,
    /// `OOM`: the server is at `maxmemory` and refuses writes.
    Oom,
    /// `ERR unknown command` / `ERR unknown subcommand`.
    UnknownCommand,
    /// Any other error reply (`ERR …`, script errors, a malformed redirect).
    Other,
}

impl ServerError {
    /// Classifies the text of an error reply (without its leading `-`).
    pub(crate) fn parse(reply: &str) -> ServerError {
        let (code, rest) = reply.split_once(' ').unwrap_or((reply, ""));
        match code {
            "MOVED" | "ASK" => Self::redirect(code == "MOVED", rest),
            "TRYAGAIN" => ServerError::TryAgain,
            "CLUSTERDOWN" => ServerError::ClusterDown,
            "LOADING" => ServerError::Loading,
            "READONLY" => ServerError::ReadOnly,
            "MASTERDOWN" => ServerError::MasterDown,
            "NOSCRIPT" => ServerError::NoScript,
            "WRONGTYPE" => ServerError::WrongType,
            "NOAUTH" => ServerError::NoAuth,
            "NOPERM" => ServerError::NoPerm,
            "WRONGPASS" => ServerError::WrongPass,
            "OOM" => ServerError::Oom,
            "ERR" if names_unknown_command(rest) => ServerError::UnknownCommand,
            // A node that became a replica (a restarted old master) refuses WAIT with this
            // where it refuses writes with READONLY; it is the same refusal.
            "ERR" if rest.starts_with("WAIT cannot be used with replica") => ServerError::ReadOnly,
            _ => ServerError::Other,
        }
    }

    /// `<slot> <addr>` of a MOVED or ASK reply; anything malformed is [`ServerError::Other`].
    fn redirect(moved: bool, rest: &str) -> ServerError {
        let mut words = rest.split_whitespace();
        let slot = words
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|&s| usize::from(s) < crate::cluster::layout::SLOTS);
        match (slot, words.next()) {
            (Some(slot), Some(addr)) => {
                let addr = addr.to_owned();
                if moved {
                    ServerError::Moved { slot, addr }
                } else {
                    ServerError::Ask { slot, addr }
                }
            }
            _ => ServerError::Other,
        }
    }

    /// True for replies saying the command was not run and may be resent once the topology
    /// settles: TRYAGAIN, CLUSTERDOWN, LOADING, READONLY, MASTERDOWN.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ServerError::TryAgain
                | ServerError::ClusterDown
                | ServerError::Loading
                | ServerError::ReadOnly
                | ServerError::MasterDown
        )
    }

    /// The coarse kind an error with this reply carries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServerError::NoAuth | ServerError::NoPerm | ServerError::WrongPass => {
                ErrorKind::PermissionDenied
            }
            ServerError::Oom => ErrorKind::ResourceExhausted,
            s if s.is_refusal() => ErrorKind::Unavailable,
            _ => ErrorKind::Server,
        }
    }
}

/// Whether the text after `ERR ` reports an unknown command or subcommand.
fn names_unknown_command(rest: &str) -> bool {
    ["unknown command", "unknown subcommand"].iter().any(|p| {
        rest.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// The error an [`Error`] was made from, kept for `source()`.
type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the table core. `Display` gives the full, user-facing message (which
/// includes the text of the source, if any, since TensorFlow shows only the message).
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The classified error reply, when the error is one.
    server: Option<ServerError>,
    /// The underlying error (an `io::Error` of a connection or file).
    source: Option<Source>,
}

/// Errors compare by kind, message and reply; the source's text is part of the message.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message && self.server == other.server
    }
}

impl Eq for Error {}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error of `kind` with a complete message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            server: None,
            source: None,
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

    /// Keeps `source` as the error's `source()`.
    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The classified error reply, if this error is one.
    pub fn server(&self) -> Option<&ServerError> {
        self.server.as_ref()
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
            ErrorKind::InvalidArgument => 3,    // INVALID_ARGUMENT
            ErrorKind::Timeout => 4,            // DEADLINE_EXCEEDED
            ErrorKind::NotFound => 5,           // NOT_FOUND
            ErrorKind::AlreadyExists => 6,      // ALREADY_EXISTS
            ErrorKind::PermissionDenied => 7,   // PERMISSION_DENIED
            ErrorKind::ResourceExhausted => 8,  // RESOURCE_EXHAUSTED
            ErrorKind::FailedPrecondition => 9, // FAILED_PRECONDITION
            ErrorKind::Conflict => 10,          // ABORTED
            ErrorKind::Unimplemented => 12,     // UNIMPLEMENTED
            ErrorKind::Server => 13,            // INTERNAL
            ErrorKind::Internal => 13,          // INTERNAL
            // INTERNAL rather than UNAVAILABLE: UNAVAILABLE tells TF's fault-tolerant
            // training (ClusterCoordinator, for one) to reschedule and retry, which would
            // hide a failing disk behind endless retries; an EIO is fixed by an operator.
            ErrorKind::FileSystem => 13,  // INTERNAL
            ErrorKind::Connection => 14,  // UNAVAILABLE
            ErrorKind::Unavailable => 14, // UNAVAILABLE
            ErrorKind::Data => 15,        // DATA_LOSS
        }
    }

    /// True for errors a caller may retry on a fresh connection.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }

    /// An error reply from the server at `addr`, classified once here. The connection stays
    /// usable.
    pub(crate) fn server_reply(addr: &str, reply: &str) -> Self {
        let server = ServerError::parse(reply);
        Error {
            kind: server.kind(),
            message: format!("redis at {addr} replied with an error: {reply}"),
            server: Some(server),
            source: None,
        }
    }

    /// The refusal of a chunk of several commands that a slot migration has split between two
    /// servers (some answered, some redirected by ASK to `target`): classified as TRYAGAIN,
    /// which Redis gives a multi-key command then, so it is retried after a pause.
    pub(crate) fn split_by_migration(target: &str) -> Self {
        Error {
            kind: ServerError::TryAgain.kind(),
            message: format!(
                "TRYAGAIN: a slot migration to {target} has split the buckets of one chunk's \
                 tables (params and slots), which are read and written together"
            ),
            server: Some(ServerError::TryAgain),
            source: None,
        }
    }

    /// A file-system error while doing `what` on `path`, of the kind [`file_kind`] gives.
    pub(crate) fn file(what: &str, path: &Path, err: io::Error) -> Self {
        Error::new(file_kind(&err), format!("{what} {}: {err}", path.display())).with_source(err)
    }

    /// Maps an I/O error on a connection to `addr` into a Connection or Timeout error.
    pub(crate) fn io(addr: &str, doing: &str, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            _ => ErrorKind::Connection,
        };
        let what = if kind == ErrorKind::Timeout {
            "timed out"
        } else {
            "failed"
        };
        Error::new(kind, format!("redis at {addr}: {doing} {what}: {err}")).with_source(err)
    }
}

impl Error {
    /// A failed TLS handshake with `addr`. A certificate that the other side refused or that
    /// failed verification is `PermissionDenied`, never retried (every connection would fail
    /// the same way); anything else (a reset, a timeout) is a connection error like any other.
    pub(crate) fn tls_handshake(addr: &str, err: io::Error) -> Self {
        let refused = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls| {
                matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented
                        | rustls::Error::AlertReceived(_)
                        | rustls::Error::PeerIncompatible(_)
                )
            });
        if !refused {
            return Error::io(addr, "the TLS handshake", err);
        }
        Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "redis at {addr}: the TLS handshake was refused: {err}; check \
                 rde_tls_ca_cert_file, rde_tls_cert_file / rde_tls_key_file and \
                 rde_tls_server_name"
            ),
        )
        .with_source(err)
    }
}

/// The kind of a failed file operation: the caller's path is missing, forbidden, taken or
/// unusable, a resource ran out, or the file system itself failed.
fn file_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    // Errors without a stable io::ErrorKind of their own.
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => return ErrorKind::ResourceExhausted,
        Some(libc::ELOOP) => return ErrorKind::InvalidArgument,
        _ => {}
    }
    match err.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge | K::OutOfMemory | K::TooManyLinks => {
            ErrorKind::ResourceExhausted
        }
        K::IsADirectory
        | K::NotADirectory
        | K::DirectoryNotEmpty
        | K::InvalidInput
        | K::InvalidFilename
        | K::InvalidData => ErrorKind::InvalidArgument,
        K::UnexpectedEof => ErrorKind::Data,
        _ => ErrorKind::FileSystem,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn reply(text: &str) -> Error {
        Error::server_reply("h:1", text)
    }

    #[test]
    fn redirects_carry_slot_and_address() {
        let e = reply("MOVED 3999 127.0.0.1:7001");
        assert_eq!(
            e.server(),
            Some(&ServerError::Moved {
                slot: 3999,
                addr: "127.0.0.1:7001".into()
            })
        );
        assert_eq!(e.kind(), ErrorKind::Server);
        assert_eq!(
            ServerError::parse("ASK 16383 10.0.0.2:7002"),
            ServerError::Ask {
                slot: 16383,
                addr: "10.0.0.2:7002".into()
            }
        );
    }

    #[test]
    fn malformed_redirects_are_plain_server_errors() {
        for text in [
            "MOVED",
            "MOVED 3999",
            "MOVED x 127.0.0.1:7001",
            "MOVED 16384 127.0.0.1:7001",
            "MOVED -1 127.0.0.1:7001",
            "ASK 12",
            "MOVEDX 1 a:1",
        ] {
            assert_eq!(ServerError::parse(text), ServerError::Other, "{text}");
            assert_eq!(reply(text).kind(), ErrorKind::Server, "{text}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn each_reply_code_is_classified() {
        use ServerError as S;
        let cases = [
            (S::TryAgain, "TRYAGAIN Multiple keys request during rehashing"),
            (S::ClusterDown, "CLUSTERDOWN The cluster is down"),
            (S::Loading, "LOADING Redis is loading the dataset in memory"),
            (S::ReadOnly, "READONLY You can't write against a read only replica."),
            (S::ReadOnly, "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated."),
            (S::MasterDown, "MASTERDOWN Link with MASTER is down"),
            (S::NoScript, "NOSCRIPT No matching script. Please use EVAL."),
            (S::WrongType, "WRONGTYPE Operation against a key holding the wrong kind"),
            (S::NoAuth, "NOAUTH Authentication required."),
            (S::NoPerm, "NOPERM User u has no permissions to run the 'hset' command"),
            (S::WrongPass, "WRONGPASS invalid username-password pair"),
            (S::Oom, "OOM command not allowed when used memory > 'maxmemory'."),
            (S::UnknownCommand, "ERR unknown command 'HMACCUM', with args beginning with: "),
            (S::UnknownCommand, "ERR unknown command `SENTINEL`, with args beginning with: "),
            (S::UnknownCommand, "ERR Unknown subcommand or wrong number of arguments"),
            (S::Other, "ERR wrong number of arguments for 'hset' command"),
            (S::Other, "ERR"),
            (S::Other, ""),
            (S::Other, "RDE accum: value type x is not supported"),
            // Codes are case-sensitive, as Redis sends them.
            (S::Other, "tryagain later"),
        ];
        for (server, text) in cases {
            let e = reply(text);
            assert_eq!(e.server(), Some(&server), "{text}");
            assert_eq!(e.kind(), server.kind(), "{text}");
            assert!(e.message().contains(text) && e.message().contains("h:1"), "{e}");
        }
        assert_eq!(Error::new(ErrorKind::Server, "x").server(), None);
    }

    #[test]
    fn each_reply_has_its_kind() {
        use ErrorKind as K;
        use ServerError as S;
        let moved = S::Moved {
            slot: 1,
            addr: "a:1".into(),
        };
        let ask = S::Ask {
            slot: 1,
            addr: "a:1".into(),
        };
        let cases = [
            (moved, K::Server),
            (ask, K::Server),
            (S::TryAgain, K::Unavailable),
            (S::ClusterDown, K::Unavailable),
            (S::Loading, K::Unavailable),
            (S::ReadOnly, K::Unavailable),
            (S::MasterDown, K::Unavailable),
            (S::NoScript, K::Server),
            (S::WrongType, K::Server),
            (S::NoAuth, K::PermissionDenied),
            (S::NoPerm, K::PermissionDenied),
            (S::WrongPass, K::PermissionDenied),
            (S::Oom, K::ResourceExhausted),
            (S::UnknownCommand, K::Server),
            (S::Other, K::Server),
        ];
        for (server, kind) in cases {
            assert_eq!(server.kind(), kind, "{server:?}");
            // Exactly the refusals are resent after a topology refresh.
            assert_eq!(server.is_refusal(), kind == K::Unavailable, "{server:?}");
        }
    }

    #[test]
    fn file_errors_keep_their_real_kind() {
        let cases = [
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::EACCES, ErrorKind::PermissionDenied),
            (libc::EPERM, ErrorKind::PermissionDenied),
            (libc::EROFS, ErrorKind::PermissionDenied),
            (libc::EEXIST, ErrorKind::AlreadyExists),
            (libc::ENOSPC, ErrorKind::ResourceExhausted),
            (libc::EDQUOT, ErrorKind::ResourceExhausted),
            (libc::EFBIG, ErrorKind::ResourceExhausted),
            (libc::EMFILE, ErrorKind::ResourceExhausted),
            (libc::ENFILE, ErrorKind::ResourceExhausted),
            (libc::ENOMEM, ErrorKind::ResourceExhausted),
            (libc::EISDIR, ErrorKind::InvalidArgument),
            (libc::ENOTDIR, ErrorKind::InvalidArgument),
            (libc::EINVAL, ErrorKind::InvalidArgument),
            (libc::ENAMETOOLONG, ErrorKind::InvalidArgument),
            (libc::ENOTEMPTY, ErrorKind::InvalidArgument),
            (libc::ELOOP, ErrorKind::InvalidArgument),
            (libc::EIO, ErrorKind::FileSystem),
            (libc::ESTALE, ErrorKind::FileSystem),
        ];
        for (errno, kind) in cases {
            let e = Error::file(
                "cannot open",
                Path::new("/d/f"),
                io::Error::from_raw_os_error(errno),
            );
            assert_eq!(e.kind(), kind, "errno {errno}: {e}");
            assert!(e.message().starts_with("cannot open /d/f: "), "{e}");
        }
        let stopped = io::Error::other("the file writer thread stopped");
        assert_eq!(
            Error::file("w", Path::new("f"), stopped).kind(),
            ErrorKind::FileSystem
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(
            Error::file("r", Path::new("f"), eof).kind(),
            ErrorKind::Data
        );
    }

    #[test]
    fn io_errors_are_kept_as_the_source() {
        let e = Error::file(
            "cannot write",
            Path::new("f"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let src = e.source().expect("source kept");
        let io = src.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        // Clones share the source, and it does not take part in equality.
        let c = e.clone();
        assert!(c.source().is_some());
        assert_eq!(c, e);

        let e = Error::io(
            "h:1",
            "reading the reply",
            io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(e.kind(), ErrorKind::Connection);
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .unwrap();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        let e = Error::io(
            "h:1",
            "connecting",
            io::Error::from(io::ErrorKind::TimedOut),
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.message().contains("connecting timed out"), "{e}");
        assert!(e.context("x").source().is_some());

        assert!(reply("ERR x").source().is_none());
        assert!(Error::invalid("x").source().is_none());
    }

    #[test]
    fn each_kind_has_its_tf_code() {
        use ErrorKind as K;
        let cases = [
            (K::InvalidArgument, 3),
            (K::Timeout, 4),
            (K::NotFound, 5),
            (K::AlreadyExists, 6),
            (K::PermissionDenied, 7),
            (K::ResourceExhausted, 8),
            (K::FailedPrecondition, 9),
            (K::Conflict, 10),
            (K::Unimplemented, 12),
            (K::Server, 13),
            (K::Internal, 13),
            (K::FileSystem, 13),
            (K::Connection, 14),
            (K::Unavailable, 14),
            (K::Data, 15),
        ];
        for (kind, code) in cases {
            assert_eq!(Error::new(kind, "x").tf_code(), code, "{kind:?}");
        }
        // Through the reply classifier: a refusal after the retries, OOM, a denied command.
        assert_eq!(reply("CLUSTERDOWN Hash slot not served").tf_code(), 14);
        assert_eq!(reply("OOM command not allowed").tf_code(), 8);
        assert_eq!(reply("NOPERM no").tf_code(), 7);
        assert_eq!(reply("ERR syntax error").tf_code(), 13);
    }
}
