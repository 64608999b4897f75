//! Dispatch: the commands of one request are grouped by the server that owns their bucket,
//! sent as pipelines in parallel, and the ones that come back redirected (MOVED/ASK), refused
//! (TRYAGAIN, CLUSTERDOWN, READONLY, LOADING, MASTERDOWN) or cut off by a failed connection are
//! sent again (MOVED updates the slot map; refusals and failures first refresh the topology),
//! with bounded retries and backoff.

use std::sync::Mutex;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::exec;
use crate::plan::Chunk;
use crate::route::{Access, Router};
use crate::stats::{self, Counter};
use crate::sync;

/// Queued commands are written once they hold this many bytes.
const EARLY_SEND_BYTES: usize = 128 << 10;

/// A pipeline reads replies once the commands on the wire hold more than this many keys (and
/// more than two commands), before sending the next command. Redis writes at most 64 KB of
/// replies per client per event-loop turn and buffers the rest in memory; letting a whole
/// request's replies pile up there (several MB at 16,384 x 64 f32) cost the server up to
/// 1.3-1.5x the CPU per key on lookups of freshly written keys. With this window the server
/// always has the next command queued, and a few hundred KB of replies at most.
const REPLY_WINDOW_KEYS: usize = 2048;

/// How a request may be retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts after the first.
    pub attempts: u32,
    /// First backoff; doubled per attempt up to 1 s.
    pub backoff: Duration,
}

impl Retry {
    /// The pause before retry `attempt` (1-based).
    pub fn pause(&self, attempt: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(1))
    }
}

/// What happened to one command.
enum Outcome {
    /// Redirected for good: refresh that slot and resend.
    Moved(usize, usize, String),
    /// Redirected once: resend to that node, preceded by ASKING.
    Ask(usize, String),
    /// Not executed (refused, or the connection was never made): safe to resend.
    Refused(usize, Error),
    /// Possibly executed (connection failed after sending): resend only if idempotent.
    Unknown(usize, Error),
    /// Cannot succeed.
    Fatal(Error),
}

fn classify(ci: usize, e: Error) -> Outcome {
    let Some(reply) = e.reply() else {
        return Outcome::Fatal(e);
    };
    let mut words = reply.split_whitespace();
    match words.next().unwrap_or("") {
        "MOVED" | "ASK" => {
            let moved = reply.starts_with("MOVED");
            let slot = words.next().and_then(|s| s.parse().ok());
            match (slot, words.next()) {
                (Some(slot), Some(addr)) if moved => Outcome::Moved(ci, slot, addr.to_owned()),
                (Some(_), Some(addr)) => Outcome::Ask(ci, addr.to_owned()),
                _ => Outcome::Fatal(e),
            }
        }
        "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "LOADING" | "MASTERDOWN" => {
            Outcome::Refused(ci, e)
        }
        _ => Outcome::Fatal(e),
    }
}

/// Runs `chunks` (command `i` is built by `encode(conn, &chunks[i])` and its reply read by
/// `decode`) against the servers owning `slot_of(chunk)`.
#[allow(clippy::too_many_arguments)]
pub fn run<S, E, D>(
    router: &Router,
    chunks: &[Chunk],
    slot_of: S,
    access: Access,
    idempotent: bool,
    retry: Retry,
    encode: E,
    decode: D,
) -> Result<()>
where
    S: Fn(&Chunk) -> usize,
    E: Fn(&mut Conn, &Chunk) + Sync,
    D: Fn(&mut Conn, &Chunk) -> Result<()> + Sync,
{
    // (chunk index, ASK target)
    let mut pending: Vec<(usize, Option<String>)> = (0..chunks.len()).map(|i| (i, None)).collect();
    let mut attempt = 0u32;
    loop {
        let mut groups: FxHashMap<String, Vec<(usize, bool)>> = FxHashMap::default();
        // A slot with no known owner (a failover in progress) is retried after a refresh.
        let mut unroutable = Vec::new();
        for (ci, ask) in pending.drain(..) {
            let is_ask = ask.is_some();
            let addr = match ask {
                Some(a) => a,
                None => match router.addr_for(slot_of(&chunks[ci]), access) {
                    Ok(a) => a,
                    Err(e) => {
                        unroutable.push(Outcome::Refused(ci, e));
                        continue;
                    }
                },
            };
            groups.entry(addr).or_default().push((ci, is_ask));
        }
        // One pipeline per server. Splitting one server's commands over several connections
        // only moved them between threads: at 16,384 keys x 64 f32 on one server, four
        // pipelines cost 0.17-0.21 us of client CPU per key against 0.14-0.18 for one, at the
        // same or lower keys/s (the server runs one command at a time, and replies stream
        // back while later ones run).
        let pipes: Vec<(String, Vec<(usize, bool)>)> = groups.into_iter().collect();
        let outcomes: Mutex<Vec<Outcome>> = Mutex::new(unroutable);
        exec::run_all(pipes.len(), |p| {
            let (addr, items) = &pipes[p];
            let ack = if access == Access::Write {
                router.write_ack()
            } else {
                None
            };
            let out = run_pipeline(router, addr, items, chunks, ack, &encode, &decode);
            sync::lock(&outcomes).extend(out);
            Ok(())
        })?;
        let mut last_err = None;
        let mut refresh = false;
        for o in sync::into_inner(outcomes) {
            match o {
                Outcome::Fatal(e) => {
                    stats::add(Counter::RequestsFailed, 1);
                    return Err(e);
                }
                Outcome::Moved(ci, slot, addr) => {
                    stats::add(Counter::Redirects, 1);
                    // The redirect names the new owner: record it, no full topology query.
                    router.moved(slot, &addr);
                    pending.push((ci, None));
                }
                Outcome::Ask(ci, addr) => {
                    stats::add(Counter::Redirects, 1);
                    pending.push((ci, Some(addr)));
                }
                Outcome::Refused(ci, e) => {
                    if e.reply().is_some() {
                        stats::add(Counter::Refusals, 1);
                    }
                    refresh = true;
                    pending.push((ci, None));
                    last_err = Some(e);
                }
                Outcome::Unknown(ci, e) => {
                    if !idempotent {
                        stats::add(Counter::RequestsFailed, 1);
                        return Err(e.context("the connection failed after the request was sent, so it is not retried"));
                    }
                    refresh = true;
                    pending.push((ci, None));
                    last_err = Some(e);
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        attempt += 1;
        if attempt > retry.attempts {
            stats::add(Counter::RequestsFailed, 1);
            let e = last_err.unwrap_or_else(|| {
                Error::new(crate::error::ErrorKind::Server, "too many redirects")
            });
            return Err(e.context(format!("gave up after {} retries", retry.attempts)));
        }
        stats::add(Counter::Retries, 1);
        if last_err.is_some() {
            std::thread::sleep(retry.pause(attempt));
        }
        if refresh && router.has_topology() {
            stats::add(Counter::TopologyRefreshes, 1);
            // A failed refresh (the master is still down, say) is retried on the next round.
            if let Err(e) = router.refresh() {
                log::info!("topology refresh failed, will retry: {e}");
            }
        }
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
        match c.read_int() {
            Ok(got) if got >= i64::from(n) => {}
            Ok(got) => {
                // Applied on the master, not yet on enough replicas: a failover now could
                // lose it, so it is not acknowledged. Resending (idempotent writes) waits again.
                stats::add(Counter::ReplicaAckShortfalls, 1);
                let e = Error::new(
                    crate::error::ErrorKind::Connection,
                    format!(
                        "redis at {addr}: only {got} of rde_wait_replicas = {n} replicas acknowledged the write within {ms} ms"
                    ),
                );
                pool.put(c, true);
                out.retain(|o| matches!(o, Outcome::Fatal(_)));
                out.extend(items.iter().map(|&(ci, _)| Outcome::Unknown(ci, e.clone())));
                return out;
            }
            Err(e)
                if e.reply()
                    .is_some_and(|r| r.contains("WAIT cannot be used with replica")) =>
            {
                // The node became a replica (a restarted old master): it refused the writes
                // with READONLY, and WAIT with this. Resend them after a topology refresh.
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
        Err(e) if e.reply().is_some() => {
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
