//! Reading a connection's replies: whole replies ([`Reply`], for admin commands) and the
//! streaming readers the hot paths use (a bulk header parsed in the buffer, a payload copied
//! straight into the caller's memory, flat pages of HGETALL/HSCAN items). Lengths announced
//! by the server are bounded, so a corrupt reply cannot allocate more than arrives.

use std::io::{BufRead, Read};

use super::conn::Conn;
use crate::error::{Error, ErrorKind, Result};

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

/// Deepest nesting accepted in a reply (ours are at most 3 deep).
const MAX_DEPTH: usize = 32;
/// Payloads up to this size are allocated up front; longer ones grow as bytes arrive.
const EAGER_BYTES: usize = 1 << 20;
/// Items of an array reply allocated up front.
const EAGER_ITEMS: usize = 1 << 16;

impl Conn {
    fn io_err(&self, e: std::io::Error) -> Error {
        Error::io(&self.addr, "reading the reply", e)
    }

    /// A reply that does not fit what the command returns.
    pub(crate) fn protocol(&self, what: impl std::fmt::Display) -> Error {
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
        self.value(0)
    }

    fn value(&mut self, depth: usize) -> Result<Reply> {
        // No command we send gets a reply nested this deep; a deeper one is corrupt.
        if depth > MAX_DEPTH {
            return Err(self.protocol(format!("reply nested deeper than {MAX_DEPTH} levels")));
        }
        let (t, rest) = self.header()?;
        match t {
            b'+' => Ok(Reply::Status(String::from_utf8_lossy(&rest).into_owned())),
            b':' => Ok(Reply::Int(self.int(&rest)?)),
            b'$' => {
                let n = self.int(&rest)?;
                match self.len_or_nil(n)? {
                    Some(len) => Ok(Reply::Bulk(self.bulk(len)?)),
                    None => Ok(Reply::Nil),
                }
            }
            b'*' => {
                let Some(n) = self.len_or_nil(self.int(&rest)?)? else {
                    return Ok(Reply::Nil);
                };
                // Capacity grows with the items that really arrive, not the announced count.
                let mut items = Vec::with_capacity(n.min(EAGER_ITEMS));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
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
        // Fast path: the whole header is already buffered (nearly always, inside a big
        // reply). The general path allocates a line per header: 25% of the client's CPU on
        // Zipf lookups went to parsing replies.
        if let Some((len, used)) = buffered_bulk_header(self.reader.buffer()) {
            self.reader.consume(used);
            return Ok(len);
        }
        let (t, rest) = self.header()?;
        if t != b'$' {
            return Err(self.protocol(format!("expected a bulk string, got {:?}", t as char)));
        }
        let n = self.int(&rest)?;
        self.len_or_nil(n)
    }

    /// A length from a bulk or array header: -1 is nil, other negatives are corrupt.
    fn len_or_nil(&self, n: i64) -> Result<Option<usize>> {
        match n {
            -1 => Ok(None),
            n => usize::try_from(n)
                .map(Some)
                .map_err(|_| self.protocol(format!("negative length {n}"))),
        }
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
        page.offs.reserve(n.min(EAGER_ITEMS) + 1);
        page.offs.push(0);
        for _ in 0..n {
            let len = self
                .read_bulk_len()?
                .ok_or_else(|| self.protocol("nil inside an array of fields"))?;
            self.bulk_into(&mut page.data, len)?;
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
        let cursor = self.bulk(len)?;
        self.read_flat_array(page)?;
        Ok(cursor)
    }

    /// Reads an HGETALL reply into `page`.
    pub fn read_getall(&mut self, page: &mut FlatPage) -> Result<()> {
        self.pending = self.pending.saturating_sub(1);
        self.read_flat_array(page)
    }

    /// Reads a bulk payload of `len` bytes plus its CRLF into a new buffer. Memory grows with
    /// the bytes that actually arrive, so a corrupt length cannot allocate more than that.
    pub fn bulk(&mut self, len: usize) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.bulk_into(&mut v, len)?;
        Ok(v)
    }

    /// Appends a bulk payload of `len` bytes to `v` and consumes its CRLF.
    fn bulk_into(&mut self, v: &mut Vec<u8>, len: usize) -> Result<()> {
        if len <= EAGER_BYTES {
            let at = v.len();
            v.resize(at + len, 0);
            self.reader
                .read_exact(&mut v[at..])
                .map_err(|e| self.io_err(e))?;
        } else {
            let got = (&mut self.reader)
                .take(len as u64)
                .read_to_end(v)
                .map_err(|e| self.io_err(e))?;
            if got < len {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "redis at {}: connection closed after {got} of {len} bytes of a reply",
                        self.addr
                    ),
                ));
            }
        }
        self.crlf()
    }

    /// Reads a bulk payload of exactly `dst.len()` bytes plus its CRLF into `dst`.
    pub fn payload(&mut self, dst: &mut [u8]) -> Result<()> {
        // Fast path: payload and CRLF already buffered (nearly always, inside a big reply):
        // one copy, no second read for the CRLF.
        let n = dst.len();
        if let Some(b) = self.reader.buffer().get(..n + 2) {
            if &b[n..] != b"\r\n" {
                return Err(self.protocol("bulk string not terminated by CRLF"));
            }
            dst.copy_from_slice(&b[..n]);
            self.reader.consume(n + 2);
            return Ok(());
        }
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
}

/// Parses a `$<len>\r\n` or `$-1\r\n` header at the start of `buf` without copying:
/// (length or nil, bytes used). `None` when `buf` does not start with a complete header of
/// that shape; the general reader then handles it, errors included.
fn buffered_bulk_header(buf: &[u8]) -> Option<(Option<usize>, usize)> {
    let rest = buf.strip_prefix(b"$")?;
    if rest.starts_with(b"-1\r\n") {
        return Some((None, 5));
    }
    let mut len = 0usize;
    for (i, &b) in rest.iter().enumerate().take(19) {
        match b {
            b'0'..=b'9' => len = len * 10 + usize::from(b - b'0'),
            b'\r' if i > 0 => {
                return (rest.get(i + 1) == Some(&b'\n')).then_some((Some(len), i + 3));
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::buffered_bulk_header as h;
    use crate::resp::conn::Conn;

    #[test]
    fn payloads_are_read_whole_and_checked_for_crlf_buffered_or_not() {
        // 8 bytes fit the test reader's 64-byte buffer (the fast path); 100 do not.
        for len in [8usize, 100] {
            let body: Vec<u8> = (0..len as u8).collect();
            let reply = |tail: &[u8]| {
                let mut b = format!("${len}\r\n").into_bytes();
                b.extend_from_slice(&body);
                b.extend_from_slice(tail);
                b
            };
            let read = |bytes: Vec<u8>| {
                let mut c = Conn::from_bytes(bytes);
                assert_eq!(c.read_bulk_len().unwrap(), Some(len));
                let mut dst = vec![0u8; len];
                c.payload(&mut dst).map(|()| (dst, c.read_bulk_len()))
            };
            let (dst, next) = read(reply(b"\r\n$-1\r\n")).unwrap();
            assert_eq!((dst, next.unwrap()), (body.clone(), None), "len {len}");
            let e = read(reply(b"xx$-1\r\n")).unwrap_err();
            assert!(e.message().contains("not terminated by CRLF"), "{e}");
            assert!(read(reply(b"\r")).is_err(), "len {len}: cut off");
        }
    }

    #[test]
    fn buffered_bulk_header_takes_only_complete_well_formed_headers() {
        assert_eq!(h(b"$256\r\nxx"), Some((Some(256), 6)));
        assert_eq!(h(b"$0\r\n\r\n"), Some((Some(0), 4)));
        assert_eq!(h(b"$-1\r\n"), Some((None, 5)));
        // Incomplete, malformed, negative or over-long: left to the general reader.
        for b in [
            &b""[..],
            b"$",
            b"$25",
            b"$256\r",
            b"$\r\n",
            b"$-2\r\n",
            b"$2x\r\n",
            b"-ERR x\r\n",
            b"$99999999999999999999\r\n",
        ] {
            assert_eq!(h(b), None, "{:?}", b.escape_ascii().to_string());
        }
    }
}
