//! One blocking RESP2 connection: commands are encoded into a write buffer (a pipeline), sent
//! in one write, and replies are read back in order, bulk payloads straight into the caller's
//! memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Instant;

use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

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
}

impl Endpoint {
    /// A data node (server, master, replica or cluster node) under `cfg`.
    pub fn data(cfg: &Config, addr: String) -> Endpoint {
        Endpoint {
            addr,
            user: cfg.redis_user.clone(),
            password: cfg.redis_password.clone(),
            db: cfg.redis_db,
            connect_timeout: cfg.connect_timeout(),
            socket_timeout: cfg.socket_timeout(),
        }
    }

    /// A sentinel under `cfg`, with the sentinel credentials and timeouts.
    pub fn sentinel(cfg: &Config, addr: String) -> Endpoint {
        Endpoint {
            addr,
            user: cfg.redis_sentinel_user.clone(),
            password: cfg.redis_sentinel_password.clone(),
            db: 0,
            connect_timeout: Duration::from_millis(cfg.redis_sentinel_connect_timeout.max(1)),
            socket_timeout: Duration::from_millis(cfg.redis_sentinel_socket_timeout.max(1)),
        }
    }
}

/// A decoded reply, for the small admin commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Reply>),
}

/// An array of bulk strings read into one buffer (see [`Conn::read_flat_array`]).
#[derive(Debug, Default, Clone)]
pub struct FlatPage {
    /// Concatenated items.
    pub data: Vec<u8>,
    /// `len + 1` item boundaries.
    pub offs: Vec<usize>,
}

impl FlatPage {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.offs.len().saturating_sub(1)
    }

    /// Item `i`.
    pub fn item(&self, i: usize) -> &[u8] {
        &self.data[self.offs[i]..self.offs[i + 1]]
    }
}

/// A connection to one Redis server.
pub struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    pending: usize,
    /// When the connection was made (for `redis_connection_lifetime`).
    pub(crate) born: Instant,
}

impl Conn {
    /// Connects, applies timeouts, authenticates and selects the db, then PINGs.
    pub fn open(ep: &Endpoint) -> Result<Conn> {
        let addr = ep.addr.clone();
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| Error::io(&addr, "resolving the address", &e))?
            .next()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Connection,
                    format!("redis at {addr}: no address"),
                )
            })?;
        let stream = TcpStream::connect_timeout(&sock, ep.connect_timeout)
            .map_err(|e| Error::io(&addr, "connecting", &e))?;
        let setup = |e: std::io::Error| Error::io(&addr, "configuring the socket", &e);
        stream.set_nodelay(true).map_err(setup)?;
        stream
            .set_read_timeout(Some(ep.socket_timeout))
            .map_err(setup)?;
        stream
            .set_write_timeout(Some(ep.socket_timeout))
            .map_err(setup)?;
        let mut c = Conn {
            addr: addr.clone(),
            reader: BufReader::with_capacity(1 << 16, stream),
            out: Vec::with_capacity(1 << 16),
            pending: 0,
            born: Instant::now(),
        };
        if !ep.password.is_empty() {
            if ep.user.is_empty() || ep.user == "default" {
                c.cmd(&[b"AUTH", ep.password.as_bytes()]);
            } else {
                c.cmd(&[b"AUTH", ep.user.as_bytes(), ep.password.as_bytes()]);
            }
        }
        if ep.db != 0 {
            c.cmd(&[b"SELECT", ep.db.to_string().as_bytes()]);
        }
        c.cmd(&[b"PING"]);
        c.flush()?;
        while c.pending > 0 {
            c.read_reply()
                .map_err(|e| e.context("while authenticating / selecting the db"))?;
        }
        Ok(c)
    }

    /// Starts a command of `argc` arguments in the pipeline; follow with `argc` [`Conn::arg`] calls.
    #[inline]
    pub fn begin(&mut self, argc: usize) {
        self.out.push(b'*');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(argc).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.pending += 1;
    }

    /// Appends one bulk argument.
    #[inline]
    pub fn arg(&mut self, a: &[u8]) {
        self.arg_header(a.len());
        self.out.extend_from_slice(a);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends the header of a bulk argument of `len` bytes; the caller then writes exactly
    /// `len` bytes into [`Conn::buf`] and calls [`Conn::arg_end`].
    #[inline]
    pub fn arg_header(&mut self, len: usize) {
        self.out.push(b'$');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The pipeline's write buffer, for encoding an argument in place.
    #[inline]
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Ends an argument started with [`Conn::arg_header`].
    #[inline]
    pub fn arg_end(&mut self) {
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends a whole command.
    pub fn cmd(&mut self, args: &[&[u8]]) {
        self.begin(args.len());
        for a in args {
            self.arg(a);
        }
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<()> {
        let r = self.reader.get_mut().write_all(&self.out);
        self.out.clear();
        r.map_err(|e| Error::io(&self.addr, "sending commands", &e))
    }

    /// Replies not read yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::io(&self.addr, "reading the reply", &e)
    }

    fn protocol(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Server,
            format!("redis at {}: protocol error: {what}", self.addr),
        )
    }

    /// Reads one line without its CRLF; returns (type byte, rest parsed as needed by caller).
    fn line(&mut self) -> Result<(u8, Vec<u8>)> {
        let mut line = Vec::with_capacity(32);
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .map_err(|e| self.io_err(e))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("redis at {}: connection closed by the server", self.addr),
            ));
        }
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(self.protocol(format!("bad line {:?}", line.escape_ascii().to_string())));
        }
        line.truncate(line.len() - 2);
        let t = line.remove(0);
        Ok((t, line))
    }

    fn int(&self, b: &[u8]) -> Result<i64> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.protocol(format!("bad integer {:?}", b.escape_ascii().to_string())))
    }

    fn server_error(&self, msg: &[u8]) -> Error {
        Error::server_reply(&self.addr, &String::from_utf8_lossy(msg))
    }

    /// Reads the next reply header; an error reply becomes `Err`.
    fn header(&mut self) -> Result<(u8, Vec<u8>)> {
        let (t, rest) = self.line()?;
        if t == b'-' {
            return Err(self.server_error(&rest));
        }
        Ok((t, rest))
    }

    /// Reads one whole reply of the pipeline.
    pub fn read_reply(&mut self) -> Result<Reply> {
        self.pending = self.pending.saturating_sub(1);
        self.value()
    }

    fn value(&mut self) -> Result<Reply> {
        let (t, rest) = self.header()?;
        match t {
            b'+' => Ok(Reply::Status(String::from_utf8_lossy(&rest).into_owned())),
            b':' => Ok(Reply::Int(self.int(&rest)?)),
            b'$' => {
                let n = self.int(&rest)?;
                if n < 0 {
                    return Ok(Reply::Nil);
                }
                let mut v = vec![0u8; n as usize];
                self.payload(&mut v)?;
                Ok(Reply::Bulk(v))
            }
            b'*' => {
                let n = self.int(&rest)?;
                if n < 0 {
                    return Ok(Reply::Nil);
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value()?);
                }
                Ok(Reply::Array(items))
            }
            other => Err(self.protocol(format!("unexpected reply type {:?}", other as char))),
        }
    }

    /// Reads an array header of the next reply, returning its length.
    pub fn read_array_header(&mut self) -> Result<usize> {
        self.pending = self.pending.saturating_sub(1);
        let (t, rest) = self.header()?;
        if t != b'*' {
            return Err(self.protocol(format!("expected an array, got {:?}", t as char)));
        }
        let n = self.int(&rest)?;
        usize::try_from(n).map_err(|_| self.protocol("nil array"))
    }

    /// Reads a bulk-string header inside an array: `None` for nil, else the payload length.
    /// The caller must then consume exactly that many bytes with [`Conn::payload`] or [`Conn::skip`].
    pub fn read_bulk_len(&mut self) -> Result<Option<usize>> {
        let (t, rest) = self.header()?;
        if t != b'$' {
            return Err(self.protocol(format!("expected a bulk string, got {:?}", t as char)));
        }
        let n = self.int(&rest)?;
        Ok(usize::try_from(n).ok())
    }

    /// Reads an array of bulk strings (an HGETALL reply, or the items of an HSCAN page) into
    /// one flat buffer: item `i` is `data[offs[i]..offs[i + 1]]`. Two allocations per page
    /// instead of one per item.
    pub fn read_flat_array(&mut self, page: &mut FlatPage) -> Result<()> {
        let (t, rest) = self.header()?;
        if t != b'*' {
            return Err(self.protocol(format!("expected an array, got {:?}", t as char)));
        }
        let n = usize::try_from(self.int(&rest)?).map_err(|_| self.protocol("nil array"))?;
        page.data.clear();
        page.offs.clear();
        page.offs.reserve(n + 1);
        page.offs.push(0);
        for _ in 0..n {
            let len = self
                .read_bulk_len()?
                .ok_or_else(|| self.protocol("nil inside an array of fields"))?;
            let at = page.data.len();
            page.data.resize(at + len, 0);
            self.payload(&mut page.data[at..])?;
            page.offs.push(page.data.len());
        }
        Ok(())
    }

    /// Reads an HSCAN reply: returns the next cursor and fills `page` with the items.
    pub fn read_scan_page(&mut self, page: &mut FlatPage) -> Result<Vec<u8>> {
        self.pending = self.pending.saturating_sub(1);
        let (t, rest) = self.header()?;
        if t != b'*' || self.int(&rest)? != 2 {
            return Err(self.protocol("HSCAN reply is not [cursor, items]"));
        }
        let len = self
            .read_bulk_len()?
            .ok_or_else(|| self.protocol("nil HSCAN cursor"))?;
        let mut cursor = vec![0u8; len];
        self.payload(&mut cursor)?;
        self.read_flat_array(page)?;
        Ok(cursor)
    }

    /// Reads an HGETALL reply into `page`.
    pub fn read_getall(&mut self, page: &mut FlatPage) -> Result<()> {
        self.pending = self.pending.saturating_sub(1);
        self.read_flat_array(page)
    }

    /// Reads a bulk payload of exactly `dst.len()` bytes plus its CRLF into `dst`.
    pub fn payload(&mut self, dst: &mut [u8]) -> Result<()> {
        self.reader.read_exact(dst).map_err(|e| self.io_err(e))?;
        self.crlf()
    }

    fn crlf(&mut self) -> Result<()> {
        let mut end = [0u8; 2];
        self.reader
            .read_exact(&mut end)
            .map_err(|e| self.io_err(e))?;
        if &end != b"\r\n" {
            return Err(self.protocol("bulk string not terminated by CRLF"));
        }
        Ok(())
    }

    /// Reads the next reply and expects an integer.
    pub fn read_int(&mut self) -> Result<i64> {
        match self.read_reply()? {
            Reply::Int(n) => Ok(n),
            other => Err(self.protocol(format!("expected an integer, got {other:?}"))),
        }
    }

    /// Closes the socket; used when a connection is left in an unknown state.
    pub fn kill(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}
