//! One blocking RESP2 connection (TCP or TLS): where to connect ([`Endpoint`]), the
//! handshake (AUTH, SELECT, PING), sending the pipeline, timeouts, staleness and closing.
//! Commands are encoded into its write buffer by `encode.rs`; replies are read back in order
//! by `decode.rs`, bulk payloads straight into the caller's memory.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::tls::{Tls, TlsStream};
use crate::stats::{self, Counter};

pub use super::decode::{FlatPage, Reply};

/// Where and how to connect: one server's address with its credentials and timeouts.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    user: String,
    password: String,
    db: i64,
    connect_timeout: Duration,
    socket_timeout: Duration,
    tls: Option<Arc<Tls>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is left out on purpose.
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("db", &self.db)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A data node (server, master, replica or cluster node) under `cfg`.
    pub fn data(cfg: &Config, addr: String, tls: Option<Arc<Tls>>) -> Endpoint {
        Endpoint {
            addr,
            user: cfg.redis_user.clone(),
            password: cfg.redis_password.clone(),
            db: cfg.redis_db,
            connect_timeout: cfg.connect_timeout(),
            socket_timeout: cfg.socket_timeout(),
            tls,
        }
    }

    /// A sentinel under `cfg`, with the sentinel credentials and timeouts.
    pub fn sentinel(cfg: &Config, addr: String, tls: Option<Arc<Tls>>) -> Endpoint {
        Endpoint {
            addr,
            user: cfg.redis_sentinel_user.clone(),
            password: cfg.redis_sentinel_password.clone(),
            db: 0,
            connect_timeout: Duration::from_millis(cfg.redis_sentinel_connect_timeout.max(1)),
            socket_timeout: Duration::from_millis(cfg.redis_sentinel_socket_timeout.max(1)),
            tls,
        }
    }
}

/// The byte stream under a connection.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    /// Canned server bytes, for tests of the reply decoder.
    #[cfg(test)]
    Mem(std::io::Cursor<Vec<u8>>),
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref()),
            #[cfg(test)]
            Stream::Mem(_) => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            #[cfg(test)]
            Stream::Mem(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            #[cfg(test)]
            Stream::Mem(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            #[cfg(test)]
            Stream::Mem(_) => Ok(()),
        }
    }
}

/// A connection to one Redis server.
pub struct Conn {
    pub(super) addr: String,
    /// The socket, buffered for reading (`decode.rs`).
    pub(super) reader: BufReader<Stream>,
    /// The pipeline's write buffer (`encode.rs`), sent by [`Conn::flush`].
    pub(super) out: Vec<u8>,
    /// Commands encoded whose replies were not read yet.
    pub(super) pending: usize,
    /// The read timeout set at connect (`redis_socket_timeout` for data nodes).
    socket_timeout: Duration,
    /// When the connection was made (for `redis_connection_lifetime`).
    pub(crate) born: Instant,
}

impl Conn {
    /// Connects, applies timeouts, runs the TLS handshake if configured, authenticates and
    /// selects the db, then PINGs.
    pub fn open(ep: &Endpoint) -> Result<Conn> {
        let r = Conn::connect(ep);
        match &r {
            Ok(_) => {
                stats::add(Counter::ConnectionsOpened, 1);
                log::debug!("connected: {ep:?}");
            }
            Err(e) => {
                stats::count_fault(e);
                log::debug!("connect failed: {ep:?}: {e}");
            }
        }
        r
    }

    fn connect(ep: &Endpoint) -> Result<Conn> {
        let addr = ep.addr.clone();
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| Error::io(&addr, "resolving the address", e))?
            .next()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Connection,
                    format!("redis at {addr}: no address"),
                )
            })?;
        let stream = TcpStream::connect_timeout(&sock, ep.connect_timeout)
            .map_err(|e| Error::io(&addr, "connecting", e))?;
        let setup = |e: std::io::Error| Error::io(&addr, "configuring the socket", e);
        stream.set_nodelay(true).map_err(setup)?;
        stream
            .set_read_timeout(Some(ep.socket_timeout))
            .map_err(setup)?;
        stream
            .set_write_timeout(Some(ep.socket_timeout))
            .map_err(setup)?;
        let stream = match &ep.tls {
            Some(tls) => Stream::Tls(Box::new(tls.connect(&addr, stream)?)),
            None => Stream::Tcp(stream),
        };
        let mut c = Conn {
            addr: addr.clone(),
            reader: BufReader::with_capacity(1 << 16, stream),
            out: Vec::with_capacity(1 << 16),
            pending: 0,
            socket_timeout: ep.socket_timeout,
            born: Instant::now(),
        };
        // Each command sent, with the step its reply answers, so that an error (a refusal, a
        // timeout) names the step that failed.
        let mut steps = Vec::with_capacity(3);
        if !ep.password.is_empty() {
            if ep.user.is_empty() || ep.user == "default" {
                c.cmd(&[b"AUTH", ep.password.as_bytes()]);
            } else {
                c.cmd(&[b"AUTH", ep.user.as_bytes(), ep.password.as_bytes()]);
            }
            steps.push("while authenticating (AUTH)".to_owned());
        }
        if ep.db != 0 {
            c.cmd(&[b"SELECT", ep.db.to_string().as_bytes()]);
            steps.push(format!("while selecting db {} (SELECT)", ep.db));
        }
        c.cmd(&[b"PING"]);
        steps.push("while checking the connection with PING".to_owned());
        c.flush()?;
        for step in steps {
            c.read_reply().map_err(|e| e.context(step))?;
        }
        Ok(c)
    }

    /// A connection whose "server" sends `bytes`, for decoder tests.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Conn {
        Conn {
            addr: "test:0".into(),
            reader: BufReader::with_capacity(64, Stream::Mem(std::io::Cursor::new(bytes))),
            out: Vec::new(),
            pending: 0,
            socket_timeout: Duration::from_secs(1),
            born: Instant::now(),
        }
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<()> {
        let r = self.reader.get_mut().write_all(&self.out);
        self.out.clear();
        r.map_err(|e| Error::io(&self.addr, "sending commands", e))
    }

    /// Bytes queued and not sent yet.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Replies not read yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Like [`Conn::read_int`], for a reply the server may hold back for `extra` beyond the
    /// socket timeout (WAIT, which answers when its own timeout ends).
    pub fn read_int_after(&mut self, extra: Duration) -> Result<i64> {
        self.set_read_timeout(self.socket_timeout + extra)
            .map_err(|e| Error::io(&self.addr, "configuring the socket", e))?;
        let n = self.read_int();
        // A socket left with the long timeout would wait too long on the next stalled reply.
        if self.set_read_timeout(self.socket_timeout).is_err() {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("redis at {}: cannot restore the socket timeout", self.addr),
            ));
        }
        n
    }

    fn set_read_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.reader
            .get_ref()
            .tcp()
            .map_or(Ok(()), |s| s.set_read_timeout(Some(d)))
    }

    /// True if the server has closed this (idle) connection or sent something unasked:
    /// checked before reuse, so a request is not sent into a socket that is already dead
    /// (which would leave a non-idempotent request in doubt).
    pub fn is_stale(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let Some(s) = self.reader.get_ref().tcp() else {
            return false;
        };
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let stale = !matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).is_err() || stale
    }

    /// Closes the socket; used when a connection is left in an unknown state.
    pub fn kill(self) {
        if let Some(s) = self.reader.get_ref().tcp() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Conn, Endpoint};
    use crate::config::Config;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A server on 127.0.0.1 that answers its first `answered` commands with `+OK` and then
    /// never replies; returns the error of opening a connection to it under `cfg`.
    fn open_against_a_silent_server(mut cfg: Config, answered: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            for _ in 0..answered {
                s.write_all(b"+OK\r\n").unwrap();
            }
            // Held open, silent, until the client gives up and closes it.
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        cfg.redis_socket_timeout = 200;
        let e = Conn::open(&Endpoint::data(&cfg, addr, None))
            .err()
            .expect("no reply, no conn");
        server.join().unwrap();
        e.to_string()
    }

    #[test]
    fn a_handshake_timeout_names_the_step_that_timed_out() {
        let e = open_against_a_silent_server(Config::default(), 0);
        assert!(e.contains("while checking the connection with PING"), "{e}");
        assert!(
            !e.contains("authenticating") && !e.contains("selecting"),
            "{e}"
        );

        let with_auth = Config {
            redis_password: "secret".into(),
            redis_db: 3,
            ..Config::default()
        };
        let e = open_against_a_silent_server(with_auth.clone(), 0);
        assert!(e.contains("while authenticating (AUTH)"), "{e}");
        assert!(!e.contains("PING") && !e.contains("secret"), "{e}");
        let e = open_against_a_silent_server(with_auth, 1);
        assert!(e.contains("while selecting db 3 (SELECT)"), "{e}");
        assert!(!e.contains("authenticating") && !e.contains("PING"), "{e}");
    }
}
