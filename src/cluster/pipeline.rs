//! Pipelined Redis I/O for the executor (`crate::cluster::dispatch`): the one implementation of
//! [`Servers`] that talks to real servers. A pipeline takes one pooled connection to one
//! server, sends its commands as they are encoded (the first at once, then in large writes),
//! reads replies once a window of keys is on the wire, and turns each failure into the
//! [`Outcome`] the executor acts on. It knows nothing of retries.

use std::time::Duration;

use crate::cluster::dispatch::{classify, Outcome, Request, Servers};
use crate::cluster::route::{Access, Router};
use crate::error::{Error, ErrorKind, Result, ServerError};
use crate::plan::Chunk;
use crate::resp::conn::Conn;
use crate::stats::{self, Counter};

/// Queued commands are written once they hold this many bytes.
const EARLY_SEND_BYTES: usize = 128 << 10;

/// A pipeline reads replies once the commands on the wire hold more than this many keys (and
/// more than two commands), before sending the next command. Redis writes at most 64 KB of
/// replies per client per event-loop turn and buffers the rest in memory; letting a whole
/// request's replies pile up there (several MB at 16,384 x 64 f32) cost the server up to
/// 1.3-1.5x the CPU per key on lookups of freshly written keys. With this window the server
/// always has the next command queued, and a few hundred KB of replies at most.
const REPLY_WINDOW_KEYS: usize = 2048;

/// The servers behind `router`, for one request: chunk `i` is sent as
/// `req.encode(conn, &chunks[i])` and its reply read by `req.decode`.
pub struct Redis<'a, R> {
    pub router: &'a Router,
    pub chunks: &'a [Chunk],
    pub req: &'a R,
}

impl<R: Request> Servers for Redis<'_, R> {
    fn addr_for(&self, slot: usize) -> Result<String> {
        self.router.addr_for(slot, self.req.kind().access)
    }

    fn moved(&self, slot: usize, addr: &str) {
        self.router.moved(slot, addr)
    }

    fn has_topology(&self) -> bool {
        self.router.has_topology()
    }

    fn refresh(&self) -> Result<()> {
        self.router.refresh()
    }

    fn pipeline(&self, addr: &str, items: &[(usize, bool)]) -> Vec<Outcome> {
        let ack = if self.req.kind().access == Access::Write {
            self.router.write_ack()
        } else {
            None
        };
        let pool = self.router.pool(addr);
        let mut c = match pool.get() {
            Ok(c) => c,
            // Credentials or ACL rules refused at connect (say, a rotated password) stay
            // refused: resending cannot help.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => return vec![Outcome::Fatal(e)],
            Err(e) => {
                return items
                    .iter()
                    .map(|&(ci, _)| Outcome::Refused(ci, e.clone()))
                    .collect()
            }
        };
        stats::add(Counter::Pipelines, 1);
        stats::add(Counter::Commands, items.len() as u64);
        let mut out = Vec::new();
        let healthy = self.send_and_read(&mut c, items, ack, &mut out)
            && ack.is_none_or(|(n, ms)| read_ack(&mut c, addr, items, n, ms, &mut out));
        pool.put(c, healthy);
        out
    }
}

impl<R: Request> Redis<'_, R> {
    /// Sends `items` on `c` (then WAIT, with `ack`) and reads their replies, a window of keys
    /// behind. Returns false when the connection cannot be used any more; `out` then holds the
    /// outcomes of every command not yet read.
    fn send_and_read(
        &self,
        c: &mut Conn,
        items: &[(usize, bool)],
        ack: Option<(u32, u64)>,
        out: &mut Vec<Outcome>,
    ) -> bool {
        // Commands [read, sent) are on the wire, [sent, k] queued; `unread_keys` counts the
        // keys of [read, k].
        let (mut sent, mut read, mut unread_keys) = (0usize, 0usize, 0usize);
        let keys_of = |k: usize| {
            let ch = &self.chunks[items[k].0];
            ch.end - ch.start
        };
        for (k, &(ci, ask)) in items.iter().enumerate() {
            if ask {
                c.cmd(&[b"ASKING"]);
            }
            self.req.encode(c, &self.chunks[ci]);
            let last = k + 1 == items.len();
            if let (true, Some((n, ms))) = (last, ack) {
                c.cmd(&[b"WAIT", n.to_string().as_bytes(), ms.to_string().as_bytes()]);
            }
            unread_keys += keys_of(k);
            let over = |read: usize, unread_keys: usize| {
                unread_keys > REPLY_WINDOW_KEYS && k + 1 - read > 2
            };
            // Commands are sent as they are encoded: the first at once (plans open with a
            // short one) so the server starts while the rest are written, then in writes of
            // at least EARLY_SEND_BYTES, and before any wait for a reply.
            if last || k == 0 || over(read, unread_keys) || c.queued_bytes() >= EARLY_SEND_BYTES {
                if let Err(e) = c.flush() {
                    stats::count_fault(&e);
                    // The commands of this write may have run; the later ones never left.
                    out.extend(unsent(&items[read..=k], &items[k + 1..], &e));
                    return false;
                }
                sent = k + 1;
            }
            while over(read, unread_keys) || (last && read < sent) {
                if !self.read_one(c, items, read, sent, out) {
                    return false;
                }
                unread_keys -= keys_of(read);
                read += 1;
            }
        }
        true
    }

    /// Reads the reply of `items[k]` into `out`. Returns false when the connection cannot be
    /// used any more: `out` then holds the outcomes of `items[k..]` too (those from `sent` on
    /// were never sent).
    fn read_one(
        &self,
        c: &mut Conn,
        items: &[(usize, bool)],
        k: usize,
        sent: usize,
        out: &mut Vec<Outcome>,
    ) -> bool {
        let (ci, ask) = items[k];
        let asked = if ask {
            c.read_reply().map(|_| ())
        } else {
            Ok(())
        };
        match asked.and_then(|_| self.req.decode(c, &self.chunks[ci])) {
            Ok(()) => true,
            Err(e) if e.server().is_some() => {
                out.push(classify(ci, e));
                true
            }
            Err(e) if e.is_transient() => {
                // The connection broke mid-pipeline: this and every later reply are unknown.
                stats::count_fault(&e);
                out.extend(unsent(&items[k..sent], &items[sent..], &e));
                false
            }
            Err(e) => {
                out.push(Outcome::Fatal(e));
                false
            }
        }
    }
}

/// The outcomes of commands cut off by the connection error `e`: `on_wire` may have run,
/// `queued` never left.
fn unsent<'a>(
    on_wire: &'a [(usize, bool)],
    queued: &'a [(usize, bool)],
    e: &'a Error,
) -> impl Iterator<Item = Outcome> + 'a {
    let unknown = on_wire
        .iter()
        .map(|&(ci, _)| Outcome::Unknown(ci, e.clone()));
    unknown.chain(
        queued
            .iter()
            .map(|&(ci, _)| Outcome::Refused(ci, e.clone())),
    )
}

/// Reads the WAIT reply that closes a write pipeline to `addr`: at least `n` replicas must
/// have acknowledged within `ms`, else every command of `items` is unacknowledged (resent if
/// the request is idempotent). Returns whether the connection is still usable.
fn read_ack(
    c: &mut Conn,
    addr: &str,
    items: &[(usize, bool)],
    n: u32,
    ms: u64,
    out: &mut Vec<Outcome>,
) -> bool {
    // WAIT answers when `ms` ends if the replicas are short: that much on top of the socket
    // timeout, or a shortfall would look like a stalled server.
    let (e, resend, healthy): (Error, fn(usize, Error) -> Outcome, bool) = match c
        .read_int_after(Duration::from_millis(ms))
    {
        Ok(got) if got >= i64::from(n) => return true,
        // Applied on the master, not yet on enough replicas: a failover now could lose
        // it, so it is not acknowledged. Resending (idempotent writes) waits again.
        Ok(got) => {
            stats::add(Counter::ReplicaAckShortfalls, 1);
            let e = Error::new(
                    ErrorKind::Connection,
                    format!(
                        "redis at {addr}: only {got} of rde_wait_replicas = {n} replicas acknowledged the write within {ms} ms"
                    ),
                );
            (e, Outcome::Unknown, true)
        }
        // A node that is a replica now (an old master restarted): its READONLY refusals
        // of the writes are in `out`; resend them all after a topology refresh.
        Err(e) if e.server().is_some_and(ServerError::is_refusal) => (e, Outcome::Refused, true),
        Err(e) if e.is_transient() => (e, Outcome::Unknown, false),
        Err(e) => {
            out.retain(|o| matches!(o, Outcome::Fatal(_)));
            out.push(Outcome::Fatal(e));
            return false;
        }
    };
    out.retain(|o| matches!(o, Outcome::Fatal(_)));
    out.extend(items.iter().map(|&(ci, _)| resend(ci, e.clone())));
    healthy
}
