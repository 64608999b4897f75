//! A TCP proxy in front of a real redis-server that cuts connections mid-request: told to cut
//! the next `n` requests carrying a command, it forwards such a request to the server, lets
//! the server run it, and closes both sides of that connection when the reply comes back,
//! without forwarding a byte of it. The client has sent its request and sees the connection
//! fail while it waits for the reply, which is the case where a resend may run a command
//! twice. `CLIENT KILL` cannot do this against a server held by `CLIENT PAUSE`: a pause that
//! holds reads holds the kill too.
//!
//! Plain std threads: one accepting, two per connection (one per direction). Dropping the
//! proxy closes every connection and joins every thread.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// A running proxy; clients connect to `127.0.0.1:port`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accepter: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: u16,
    stop: AtomicBool,
    /// What to cut: see [`Rule`].
    rule: Mutex<Option<Rule>>,
    /// Requests cut so far: forwarded, run by the server, their reply dropped.
    cuts: AtomicU32,
    /// Both sockets of every connection, to close them on drop.
    sockets: Mutex<Vec<TcpStream>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// The requests to cut: those carrying `pattern` (`\r\n<NAME>\r\n`, as RESP frames a
/// command name), after letting `skip` of them through; `left` more are cut. `seen` counts
/// the commands carrying it that were forwarded, cut ones included.
struct Rule {
    pattern: Vec<u8>,
    skip: u32,
    left: u32,
    seen: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the server on `upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 6379);
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            rule: Mutex::new(None),
            cuts: AtomicU32::new(0),
            sockets: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
        });
        let sh = Arc::clone(&shared);
        let accepter = std::thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                sh.serve(client);
            }
        });
        Proxy {
            port,
            shared,
            accepter: Some(accepter),
        }
    }

    /// Cuts the next `n` requests that carry command `cmd` (for example `HMGET`; matched as
    /// the RESP bulk string the client sends), one connection each; replaces any earlier
    /// rule.
    pub fn cut_next(&self, cmd: &str, n: u32) {
        self.cut_after(cmd, 0, n);
    }

    /// Like [`Proxy::cut_next`], after letting the next `skip` requests carrying `cmd`
    /// through (to cut, say, the third page of a scan).
    pub fn cut_after(&self, cmd: &str, skip: u32, n: u32) {
        *lock(&self.shared.rule) = Some(Rule {
            pattern: format!("\r\n{cmd}\r\n").into_bytes(),
            skip,
            left: n,
            seen: 0,
        });
    }

    /// How many requests have been cut so far.
    pub fn cuts(&self) -> u32 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many commands carrying the current rule's command have been forwarded to the
    /// server (each of them ran there, the cut ones too).
    pub fn seen(&self) -> u32 {
        lock(&self.shared.rule).as_ref().map_or(0, |r| r.seen)
    }

    /// Cuts still to make under the current rule.
    pub fn cuts_pending(&self) -> u32 {
        lock(&self.shared.rule).as_ref().map_or(0, |r| r.left)
    }
}

impl Shared {
    /// Connects `client` to the server and starts its two pumps.
    fn serve(self: &Arc<Self>, client: TcpStream) {
        let server = match TcpStream::connect(("127.0.0.1", self.upstream)) {
            Ok(s) => s,
            // The server is gone: the client sees its connection closed.
            Err(_) => return,
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut sockets = lock(&self.sockets);
            sockets.push(client.try_clone().unwrap());
            sockets.push(server.try_clone().unwrap());
        }
        let doomed = Arc::new(AtomicBool::new(false));
        let up = {
            let (sh, doomed) = (Arc::clone(self), Arc::clone(&doomed));
            let (from, to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || sh.requests(from, to, &doomed))
        };
        let down = {
            let sh = Arc::clone(self);
            std::thread::spawn(move || sh.replies(server, client, &doomed))
        };
        lock(&self.pumps).extend([up, down]);
    }

    /// Client to server. A request carrying the command to cut dooms its connection before
    /// it is forwarded, so no byte of its reply reaches the client.
    fn requests(&self, mut from: TcpStream, mut to: TcpStream, doomed: &AtomicBool) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(r) = lock(&self.rule).as_mut() {
                let p = &r.pattern;
                let carried = chunk.windows(p.len()).filter(|w| *w == &p[..]).count() as u32;
                r.seen += carried;
                if carried > 0 && r.left > 0 && !doomed.load(Ordering::SeqCst) {
                    if r.skip > 0 {
                        r.skip -= 1;
                    } else {
                        r.left -= 1;
                        doomed.store(true, Ordering::SeqCst);
                    }
                }
            }
            if to.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }

    /// Server to client. On a doomed connection the first reply bytes (the server has run
    /// the request) end it: both sockets are closed and the cut counted.
    fn replies(&self, mut from: TcpStream, mut to: TcpStream, doomed: &AtomicBool) {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if doomed.load(Ordering::SeqCst) {
                self.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accepter.take() {
            let _ = a.join();
        }
        for s in lock(&self.shared.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let pumps: Vec<JoinHandle<()>> = lock(&self.shared.pumps).drain(..).collect();
        for p in pumps {
            let _ = p.join();
        }
    }
}
