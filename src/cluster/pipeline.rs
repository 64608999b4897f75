//! Pipelined Redis I/O for the executor (`crate::cluster::dispatch`): the one implementation of
//! [`Servers`] that talks to real servers. A pipeline takes one pooled connection to one
//! server, sends its commands as they are encoded (the first at once, then in large writes),
//! reads replies once a window of keys is on the wire, and turns each failure into the
//! [`Outcome`] the executor acts on. It knows nothing of retries.

use std::time::Duration;

use crate::cluster::dispatch::{classify, Outcome, Servers};
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

/// The servers behind `router`, for one request: chunk `i` is sent as `encode(conn, &chunks[i])`
/// and its reply read by `decode`.
pub struct Redis<'a, E, D> {
    pub router: &'a Router,
    pub chunks: &'a [Chunk],
    pub access: Access,
    pub encode: E,
    pub decode: D,
}

impl<E, D> Servers for Redis<'_, E, D>
where
    E: Fn(&mut Conn, &Chunk) + Sync,
    D: Fn(&mut Conn, &Chunk) -> Result<()> + Sync,
{
    fn addr_for(&self, slot: usize) -> Result<String> {
        self.router.addr_for(slot, self.access)
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
        let ack = if self.access == Access::Write {
            self.router.write_ack()
        } else {
            None
        };
        run_pipeline(
            self.router,
            addr,
            items,
            self.chunks,
            ack,
            &self.encode,
            &self.decode,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn run_pipeline<E, D>(
    router: &Router,
    addr: &str,
    items: &[(usize, bool)],
    chunks: &[Chunk],
    ack: Option<(u32, u64)>,
    encode: &E,
    decode: &D,
) -> Vec<Outcome>
where
    E: Fn(&mut Conn, &Chunk),
    D: Fn(&mut Conn, &Chunk) -> Result<()>,
{
    let pool = router.pool(addr);
    let mut c = match pool.get() {
        Ok(c) => c,
        // Credentials or ACL rules refused at connect (say, a rotated password) stay refused:
        // resending cannot help.
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
    // Commands [read, sent) are on the wire, [sent, k] queued; `unread_keys` counts the keys
    // of [read, k].
    let (mut sent, mut read, mut unread_keys) = (0usize, 0usize, 0usize);
    let keys_of = |k: usize| {
        let ch = &chunks[items[k].0];
        ch.end - ch.start
    };
    let mut out = Vec::new();
    for (k, &(ci, ask)) in items.iter().enumerate() {
        if ask {
            c.cmd(&[b"ASKING"]);
        }
        encode(&mut c, &chunks[ci]);
        let last = k + 1 == items.len();
        if last {
            if let Some((n, ms)) = ack {
                c.cmd(&[b"WAIT", n.to_string().as_bytes(), ms.to_string().as_bytes()]);
            }
        }
        unread_keys += keys_of(k);
        let over =
            |read: usize, unread_keys: usize| unread_keys > REPLY_WINDOW_KEYS && k + 1 - read > 2;
        // Commands are sent as they are encoded: the first at once (plans open with a short
        // one) so the server starts while the rest are written, then in writes of at least
        // EARLY_SEND_BYTES, and before any wait for a reply.
        if last || k == 0 || over(read, unread_keys) || c.queued_bytes() >= EARLY_SEND_BYTES {
            if let Err(e) = c.flush() {
                stats::count_fault(&e);
                pool.put(c, false);
                // The commands of this write may have run; the later ones never left.
                let unknown = items[read..=k]
                    .iter()
                    .map(|&(ci, _)| Outcome::Unknown(ci, e.clone()));
                out.extend(unknown);
                out.extend(
                    items[k + 1..]
                        .iter()
                        .map(|&(ci, _)| Outcome::Refused(ci, e.clone())),
                );
                return out;
            }
            sent = k + 1;
        }
        while over(read, unread_keys) || (last && read < sent) {
            if !read_one(&mut c, items, chunks, decode, read, sent, &mut out) {
                pool.put(c, false);
                return out;
            }
            unread_keys -= keys_of(read);
            read += 1;
        }
    }
    if let Some((n, ms)) = ack {
        // WAIT answers when `ms` ends if the replicas are short: that much on top of the
        // socket timeout, or a shortfall would look like a stalled server.
        match c.read_int_after(Duration::from_millis(ms)) {
            Ok(got) if got >= i64::from(n) => {}
            Ok(got) => {
                // Applied on the master, not yet on enough replicas: a failover now could
                // lose it, so it is not acknowledged. Resending (idempotent writes) waits again.
                stats::add(Counter::ReplicaAckShortfalls, 1);
                let e = Error::new(
                    ErrorKind::Connection,
                    format!(
                        "redis at {addr}: only {got} of rde_wait_replicas = {n} replicas acknowledged the write within {ms} ms"
                    ),
                );
                pool.put(c, true);
                out.retain(|o| matches!(o, Outcome::Fatal(_)));
                out.extend(items.iter().map(|&(ci, _)| Outcome::Unknown(ci, e.clone())));
                return out;
            }
            // A node that is a replica now (an old master restarted): its READONLY refusals
            // of the writes are in `out`; resend them all after a topology refresh.
            Err(e) if e.server().is_some_and(ServerError::is_refusal) => {
                pool.put(c, true);
                out.retain(|o| matches!(o, Outcome::Fatal(_)));
                out.extend(items.iter().map(|&(ci, _)| Outcome::Refused(ci, e.clone())));
                return out;
            }
            Err(e) => {
                let transient = e.is_transient();
                pool.put(c, false);
                out.retain(|o| matches!(o, Outcome::Fatal(_)));
                if transient {
                    out.extend(items.iter().map(|&(ci, _)| Outcome::Unknown(ci, e.clone())));
                } else {
                    out.push(Outcome::Fatal(e));
                }
                return out;
            }
        }
    }
    pool.put(c, true);
    out
}

/// Reads the reply of `items[k]` into `out`. Returns false when the connection cannot be used
/// any more: `out` then holds the outcomes of `items[k..]` too (those from `sent` on were
/// never sent).
fn read_one<D>(
    c: &mut Conn,
    items: &[(usize, bool)],
    chunks: &[Chunk],
    decode: &D,
    k: usize,
    sent: usize,
    out: &mut Vec<Outcome>,
) -> bool
where
    D: Fn(&mut Conn, &Chunk) -> Result<()>,
{
    let (ci, ask) = items[k];
    let asked = if ask {
        c.read_reply().map(|_| ())
    } else {
        Ok(())
    };
    match asked.and_then(|_| decode(c, &chunks[ci])) {
        Ok(()) => true,
        Err(e) if e.server().is_some() => {
            out.push(classify(ci, e));
            true
        }
        Err(e) if e.is_transient() => {
            // The connection broke mid-pipeline: this and every later reply are unknown.
            stats::count_fault(&e);
            out.extend(
                items[k..sent]
                    .iter()
                    .map(|&(ci, _)| Outcome::Unknown(ci, e.clone())),
            );
            out.extend(
                items[sent..]
                    .iter()
                    .map(|&(ci, _)| Outcome::Refused(ci, e.clone())),
            );
            false
        }
        Err(e) => {
            out.push(Outcome::Fatal(e));
            false
        }
    }
}
