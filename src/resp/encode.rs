//! Encoding commands into a connection's pipeline buffer (RESP2 arrays of bulk strings).
//! Arguments can be written in place ([`Conn::arg_header`], [`Conn::buf`], [`Conn::arg_end`]),
//! so values go from tensor memory to the socket buffer with one copy.

use super::conn::Conn;

impl Conn {
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
}
