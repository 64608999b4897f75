//! The request executor: the commands of one request are grouped by the server that owns
//! their slot, sent as one pipeline per server in parallel (on the I/O pool), and the ones
//! that come back redirected (MOVED/ASK), refused (TRYAGAIN, CLUSTERDOWN, READONLY, LOADING,
//! MASTERDOWN) or cut off by a failed connection are sent again: MOVED updates the slot map,
//! refusals and failures first refresh the topology; bounded retries with backoff.
//!
//! Invariant: the executor never touches a socket. It works over [`Servers`], which is
//! `crate::cluster::pipeline::Redis` in production and an in-memory script in the unit tests
//! below, so every redirect, refusal and fault path is tested without a server.

use std::sync::Mutex;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::cluster::pipeline;
use crate::cluster::route::{Access, Router};
use crate::error::{Error, ErrorKind, Result, ServerError};
use crate::exec;
use crate::plan::Chunk;
use crate::resp::conn::Conn;
use crate::stats::{self, Counter};
use crate::sync;

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

/// What happened to one command that did not simply succeed.
pub enum Outcome {
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

/// What to do with command `ci` after the error reply `e` (classified when it was read).
pub fn classify(ci: usize, e: Error) -> Outcome {
    match e.server() {
        Some(ServerError::Moved { slot, addr }) => {
            Outcome::Moved(ci, usize::from(*slot), addr.clone())
        }
        Some(ServerError::Ask { addr, .. }) => Outcome::Ask(ci, addr.clone()),
        Some(s) if s.is_refusal() => Outcome::Refused(ci, e),
        _ => Outcome::Fatal(e),
    }
}

/// What the executor needs from the servers of one request.
pub trait Servers: Sync {
    /// The server owning `slot`.
    fn addr_for(&self, slot: usize) -> Result<String>;
    /// Records a MOVED redirect: `slot` is served by `addr` from now on.
    fn moved(&self, slot: usize, addr: &str);
    /// Whether servers can move (cluster slots, a sentinel-managed master).
    fn has_topology(&self) -> bool;
    /// Re-learns the topology.
    fn refresh(&self) -> Result<()>;
    /// Sends the commands `items` (chunk index, preceded by ASKING) to `addr` as one
    /// pipeline; returns an outcome for each command that did not succeed.
    fn pipeline(&self, addr: &str, items: &[(usize, bool)]) -> Vec<Outcome>;
}

/// Where a request's commands run, and whether one may be sent again after its connection
/// failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Read (a replica may serve it when `redis_read_access_slave` allows) or write (the
    /// master, followed by WAIT when `rde_wait_replicas` asks for it).
    pub access: Access,
    /// Whether a command whose connection failed after it was sent may be resent (the op is
    /// idempotent). Redirected and refused commands never ran and are always resent.
    pub resend_safe: bool,
}

impl Kind {
    /// Reads, resendable.
    pub const READ: Kind = Kind {
        access: Access::Read,
        resend_safe: true,
    };
    /// On the master, resendable: idempotent writes (HSET, HDEL, EXPIRE, …), and reads that
    /// must see the master (accum's baseline).
    pub const WRITE: Kind = Kind {
        access: Access::Write,
        resend_safe: true,
    };
    /// Writes that must never run twice (accum's scripts): a command whose connection failed
    /// after it was sent is reported, not resent.
    pub const WRITE_ONCE: Kind = Kind {
        access: Access::Write,
        resend_safe: false,
    };
}

/// One op's commands, as data: its [`Kind`] (whether it reads or writes, whether a command
/// may be resent), how the command of each chunk is encoded and its reply decoded. The
/// executor ([`run`]) owns everything else: grouping by server, pipelines, redirects,
/// refusals, retries. A new op is one more `Request`: a struct of its own (as each of the
/// table's ops is), or [`Commands`] for a few lines of an idempotent command.
pub trait Request: Sync {
    /// What the request does: see [`Kind`].
    fn kind(&self) -> Kind;
    /// Writes the command of `chunk` to `conn`.
    fn encode(&self, conn: &mut Conn, chunk: &Chunk);
    /// Reads the reply to the command of `chunk`. Pipelines to different servers decode in
    /// parallel, so state shared between chunks needs a lock (or disjoint writes).
    fn decode(&self, conn: &mut Conn, chunk: &Chunk) -> Result<()>;
}

/// A [`Request`] made of an encoding and a decoding closure, for the small idempotent commands
/// (per-bucket admin commands, layout records, scan pages, the trainer's combined HMGET and
/// HSET): running one twice leaves the same state, so it may be resent after a failed
/// connection. An op that must never run twice is a `Request` of its own.
pub struct Commands<E, D> {
    access: Access,
    encode: E,
    decode: D,
}

impl<E, D> Commands<E, D>
where
    E: Fn(&mut Conn, &Chunk) + Sync,
    D: Fn(&mut Conn, &Chunk) -> Result<()> + Sync,
{
    /// Idempotent commands (reads, HSET, HDEL, EXPIRE, …) of `access`.
    pub fn idempotent(access: Access, encode: E, decode: D) -> Self {
        Commands {
            access,
            encode,
            decode,
        }
    }
}

impl<E, D> Request for Commands<E, D>
where
    E: Fn(&mut Conn, &Chunk) + Sync,
    D: Fn(&mut Conn, &Chunk) -> Result<()> + Sync,
{
    fn kind(&self) -> Kind {
        Kind {
            access: self.access,
            resend_safe: true,
        }
    }
    fn encode(&self, conn: &mut Conn, chunk: &Chunk) {
        (self.encode)(conn, chunk)
    }
    fn decode(&self, conn: &mut Conn, chunk: &Chunk) -> Result<()> {
        (self.decode)(conn, chunk)
    }
}

/// Runs `req` for `chunks` (one command each) against the servers owning `slot_of(chunk)`
/// through Redis pipelines; see [`execute`].
pub fn run<R: Request>(
    router: &Router,
    retry: Retry,
    chunks: &[Chunk],
    slot_of: impl Fn(&Chunk) -> usize,
    req: &R,
) -> Result<()> {
    let slots: Vec<usize> = chunks.iter().map(slot_of).collect();
    let servers = pipeline::Redis {
        router,
        chunks,
        req,
    };
    execute(&servers, &slots, req.kind().resend_safe, retry)
}

/// Keys per round of a call: larger batches are processed window by window, which bounds the
/// write buffers and the dedup map (and keeps TFRA's last-write-wins order across windows).
pub const WINDOW: usize = 65_536;

/// Runs `f(a, b)` on each window `[a, b)` of a call of `n` keys, in order (so a key repeated
/// across windows keeps TFRA's last-write-wins), stopping at the first error: one window for
/// up to [`WINDOW`] keys, none for no keys.
pub fn in_windows(n: usize, mut f: impl FnMut(usize, usize) -> Result<()>) -> Result<()> {
    (0..n)
        .step_by(WINDOW)
        .try_for_each(|a| f(a, (a + WINDOW).min(n)))
}

/// A command still to send: its chunk index, and the node an ASK redirect named.
type Pending = (usize, Option<String>);

/// Sends command `i` (for `i < slots.len()`) to the owner of `slots[i]` until each has
/// succeeded, or fails: at once on a fatal reply, or for a command that may have run when it
/// is not `idempotent`, or once `retry.attempts` rounds of resending are used up.
pub fn execute<S: Servers>(
    servers: &S,
    slots: &[usize],
    idempotent: bool,
    retry: Retry,
) -> Result<()> {
    let mut pending: Vec<Pending> = (0..slots.len()).map(|i| (i, None)).collect();
    let mut attempt = 0u32;
    loop {
        let outcomes = send_round(servers, slots, std::mem::take(&mut pending))?;
        let round = settle(servers, outcomes, idempotent, &mut pending)?;
        if pending.is_empty() {
            return Ok(());
        }
        attempt += 1;
        if attempt > retry.attempts {
            stats::add(Counter::RequestsFailed, 1);
            let e = round
                .last_err
                .unwrap_or_else(|| Error::new(ErrorKind::Server, "too many redirects"));
            return Err(e.context(format!("gave up after {} retries", retry.attempts)));
        }
        stats::add_retry();
        if round.last_err.is_some() {
            std::thread::sleep(retry.pause(attempt));
        }
        if round.refresh && servers.has_topology() {
            stats::add(Counter::TopologyRefreshes, 1);
            // A failed refresh (the master is still down, say) is retried on the next round.
            if let Err(e) = servers.refresh() {
                log::info!("topology refresh failed, will retry: {e}");
            }
        }
    }
}

/// Groups `pending` by the server that owns each command's slot (or that its ASK named) and
/// sends each group as one pipeline, all in parallel; returns the outcome of every command
/// that did not succeed. A slot with no known owner (a failover in progress) is refused, to
/// be retried after a refresh.
fn send_round<S: Servers>(
    servers: &S,
    slots: &[usize],
    pending: Vec<Pending>,
) -> Result<Vec<Outcome>> {
    let mut groups: FxHashMap<String, Vec<(usize, bool)>> = FxHashMap::default();
    let mut unroutable = Vec::new();
    for (ci, ask) in pending {
        let is_ask = ask.is_some();
        let addr = match ask {
            Some(a) => a,
            None => match servers.addr_for(slots[ci]) {
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
        let out = servers.pipeline(addr, items);
        sync::lock(&outcomes).extend(out);
        Ok(())
    })?;
    Ok(sync::into_inner(outcomes))
}

/// What a round of sending left to do besides resending.
struct Round {
    /// The last error that made a command be resent (reported if the retries run out).
    last_err: Option<Error>,
    /// Whether the topology should be re-learned first.
    refresh: bool,
}

/// Acts on each outcome of a round: fails the request on a fatal reply, or on a command that
/// may have run when the request is not `idempotent`; records MOVED owners; queues every other
/// command in `pending` to be resent.
fn settle<S: Servers>(
    servers: &S,
    outcomes: Vec<Outcome>,
    idempotent: bool,
    pending: &mut Vec<Pending>,
) -> Result<Round> {
    let mut round = Round {
        last_err: None,
        refresh: false,
    };
    for o in outcomes {
        match o {
            Outcome::Fatal(e) => {
                stats::add(Counter::RequestsFailed, 1);
                return Err(e);
            }
            Outcome::Moved(ci, slot, addr) => {
                stats::add(Counter::Redirects, 1);
                // The redirect names the new owner: record it, no full topology query.
                servers.moved(slot, &addr);
                pending.push((ci, None));
            }
            Outcome::Ask(ci, addr) => {
                stats::add(Counter::Redirects, 1);
                pending.push((ci, Some(addr)));
            }
            Outcome::Refused(ci, e) => {
                if e.server().is_some() {
                    stats::add(Counter::Refusals, 1);
                }
                round.refresh = true;
                pending.push((ci, None));
                round.last_err = Some(e);
            }
            Outcome::Unknown(ci, e) => {
                if !idempotent {
                    stats::add(Counter::RequestsFailed, 1);
                    return Err(e.context(
                        "the connection failed after the request was sent, so it is not retried",
                    ));
                }
                round.refresh = true;
                pending.push((ci, None));
                round.last_err = Some(e);
            }
        }
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn reply(text: &str) -> Error {
        Error::server_reply("127.0.0.1:7000", text)
    }

    #[test]
    fn windows_cover_a_large_call_in_order_and_stop_at_the_first_error() {
        let windows = |n| {
            let mut seen = Vec::new();
            in_windows(n, |a, b| {
                seen.push((a, b));
                Ok(())
            })
            .unwrap();
            seen
        };
        assert_eq!(windows(0), []);
        assert_eq!(windows(WINDOW), [(0, WINDOW)]);
        let n = 2 * WINDOW + 5;
        assert_eq!(
            windows(n),
            [(0, WINDOW), (WINDOW, 2 * WINDOW), (2 * WINDOW, n)]
        );
        let mut calls = 0;
        let e = in_windows(n, |a, _| {
            calls += 1;
            if a == WINDOW {
                return Err(Error::invalid("second window"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!((calls, e.message()), (2, "second window"));
    }

    #[test]
    fn commands_declare_their_access_and_may_be_resent() {
        let enc = |_: &mut Conn, _: &Chunk| {};
        let dec = |_: &mut Conn, _: &Chunk| Ok(());
        let r = Commands::idempotent(Access::Read, enc, dec);
        assert_eq!(r.kind(), Kind::READ);
        let w = Commands::idempotent(Access::Write, enc, dec);
        assert_eq!(w.kind(), Kind::WRITE);
    }

    #[test]
    fn the_backoff_doubles_per_retry_up_to_one_second() {
        let r = Retry {
            attempts: 8,
            backoff: Duration::from_millis(50),
        };
        let ms: Vec<u128> = (1..=7).map(|a| r.pause(a).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.pause(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn moved_names_the_slot_and_new_owner() {
        match classify(4, reply("MOVED 3999 127.0.0.1:7001")) {
            Outcome::Moved(4, 3999, addr) => assert_eq!(addr, "127.0.0.1:7001"),
            _ => panic!("not a Moved outcome"),
        }
    }

    #[test]
    fn ask_names_the_node_for_this_command_only() {
        match classify(2, reply("ASK 12 127.0.0.1:7002")) {
            Outcome::Ask(2, addr) => assert_eq!(addr, "127.0.0.1:7002"),
            _ => panic!("not an Ask outcome"),
        }
    }

    #[test]
    fn refusals_are_resent() {
        for text in [
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down",
        ] {
            match classify(1, reply(text)) {
                Outcome::Refused(1, e) => {
                    assert_eq!(e.kind(), ErrorKind::Unavailable, "{text}");
                    assert!(e.message().contains(text), "{e}");
                }
                _ => panic!("{text} is not a refusal"),
            }
        }
    }

    #[test]
    fn other_replies_and_malformed_redirects_are_fatal() {
        for text in [
            "MOVED 3999",
            "MOVED x 127.0.0.1:7001",
            "ASK",
            "NOPERM this user has no permissions to run the 'hset' command",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "NOSCRIPT No matching script.",
            "ERR unknown command 'X'",
            "ERR syntax error",
        ] {
            match classify(0, reply(text)) {
                Outcome::Fatal(e) => assert_eq!(e, reply(text), "{text}"),
                _ => panic!("{text} is not fatal"),
            }
        }
        // An error that is not a reply (a decoding failure, say) is fatal as well.
        let e = Error::data("bucket b key 1: stored value has 3 bytes");
        assert!(matches!(classify(0, e), Outcome::Fatal(_)));
    }

    /// What a scripted server does with one command.
    #[derive(Clone, Copy)]
    enum Step {
        Ok,
        /// An error reply (MOVED, ASK, TRYAGAIN, WRONGTYPE, ...).
        Reply(&'static str),
        /// The connection breaks once this command is on the wire: it and the rest of the
        /// pipeline may or may not have run.
        Drop,
    }

    /// Servers in memory: a slot map, a script of steps per (server, command) (`Ok` once a
    /// script runs out), and a log of every command sent.
    struct Script {
        owners: Mutex<FxHashMap<usize, String>>,
        steps: Mutex<FxHashMap<(String, usize), std::collections::VecDeque<Step>>>,
        sent: Mutex<Vec<(String, usize, bool)>>,
        refreshes: Mutex<usize>,
        topology: bool,
    }

    impl Script {
        fn new(owners: &[(usize, &str)]) -> Script {
            Script {
                owners: Mutex::new(owners.iter().map(|&(s, a)| (s, a.to_owned())).collect()),
                steps: Mutex::new(FxHashMap::default()),
                sent: Mutex::new(Vec::new()),
                refreshes: Mutex::new(0),
                topology: true,
            }
        }

        fn on(self, addr: &str, command: usize, steps: &[Step]) -> Script {
            sync::lock(&self.steps)
                .entry((addr.to_owned(), command))
                .or_default()
                .extend(steps.iter().cloned());
            self
        }

        fn sent(&self) -> Vec<(String, usize, bool)> {
            let mut v = sync::lock(&self.sent).clone();
            v.sort();
            v
        }
    }

    impl Servers for Script {
        fn addr_for(&self, slot: usize) -> Result<String> {
            Ok(sync::lock(&self.owners)[&slot].clone())
        }
        fn moved(&self, slot: usize, addr: &str) {
            sync::lock(&self.owners).insert(slot, addr.to_owned());
        }
        fn has_topology(&self) -> bool {
            self.topology
        }
        fn refresh(&self) -> Result<()> {
            *sync::lock(&self.refreshes) += 1;
            Ok(())
        }
        fn pipeline(&self, addr: &str, items: &[(usize, bool)]) -> Vec<Outcome> {
            let mut out = Vec::new();
            for (k, &(ci, ask)) in items.iter().enumerate() {
                sync::lock(&self.sent).push((addr.to_owned(), ci, ask));
                let step = sync::lock(&self.steps)
                    .get_mut(&(addr.to_owned(), ci))
                    .and_then(|q| q.pop_front())
                    .unwrap_or(Step::Ok);
                match step {
                    Step::Ok => {}
                    Step::Reply(text) => out.push(classify(ci, Error::server_reply(addr, text))),
                    Step::Drop => {
                        let e = Error::new(ErrorKind::Connection, format!("{addr}: reset"));
                        out.extend(
                            items[k..]
                                .iter()
                                .map(|&(c, _)| Outcome::Unknown(c, e.clone())),
                        );
                        break;
                    }
                }
            }
            out
        }
    }

    fn retry(attempts: u32) -> Retry {
        Retry {
            attempts,
            backoff: Duration::ZERO,
        }
    }

    fn sent(list: &[(&str, usize, bool)]) -> Vec<(String, usize, bool)> {
        let mut v: Vec<_> = list.iter().map(|&(a, c, k)| (a.to_owned(), c, k)).collect();
        v.sort();
        v
    }

    const A: &str = "10.0.0.1:7000";
    const B: &str = "10.0.0.2:7000";

    #[test]
    fn moved_updates_the_slot_map_and_resends_to_the_new_owner() {
        let s = Script::new(&[(5, A), (9, A)]).on(A, 0, &[Step::Reply("MOVED 5 10.0.0.2:7000")]);
        execute(&s, &[5, 9], true, retry(3)).unwrap();
        assert_eq!(
            s.sent(),
            sent(&[(A, 0, false), (A, 1, false), (B, 0, false)])
        );
        assert_eq!(sync::lock(&s.owners)[&5], B);
        assert_eq!(
            *sync::lock(&s.refreshes),
            0,
            "MOVED names the owner: no refresh"
        );
    }

    #[test]
    fn ask_resends_once_with_asking_and_leaves_the_slot_map() {
        let s = Script::new(&[(5, A)]).on(A, 0, &[Step::Reply("ASK 5 10.0.0.2:7000")]);
        execute(&s, &[5], true, retry(3)).unwrap();
        assert_eq!(s.sent(), sent(&[(A, 0, false), (B, 0, true)]));
        assert_eq!(sync::lock(&s.owners)[&5], A);
    }

    #[test]
    fn refusals_refresh_the_topology_and_are_resent() {
        for text in [
            "TRYAGAIN x",
            "CLUSTERDOWN x",
            "READONLY x",
            "LOADING x",
            "MASTERDOWN x",
        ] {
            let s = Script::new(&[(5, A)]).on(A, 0, &[Step::Reply(text), Step::Reply(text)]);
            execute(&s, &[5], false, retry(3)).unwrap();
            assert_eq!(s.sent().len(), 3, "{text}");
            assert_eq!(*sync::lock(&s.refreshes), 2, "{text}");
        }
    }

    #[test]
    fn a_connection_dropped_mid_pipeline_resends_only_idempotent_requests() {
        let script = || Script::new(&[(1, A), (2, A), (3, A)]).on(A, 1, &[Step::Drop]);
        let s = script();
        execute(&s, &[1, 2, 3], true, retry(3)).unwrap();
        // Command 1 and everything after it in the pipeline are sent again.
        let twice = sent(&[(A, 0, false), (A, 1, false), (A, 1, false), (A, 2, false)]);
        assert_eq!(s.sent(), twice);
        assert_eq!(*sync::lock(&s.refreshes), 1);

        let s = script();
        let e = execute(&s, &[1, 2, 3], false, retry(3)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(e.message().contains("so it is not retried"), "{e}");
        let once = sent(&[(A, 0, false), (A, 1, false)]);
        assert_eq!(s.sent(), once, "a request that may have run was resent");
    }

    #[test]
    fn retries_are_bounded_and_the_last_error_is_reported() {
        let busy = [Step::Reply("TRYAGAIN busy"); 10];
        let s = Script::new(&[(5, A)]).on(A, 0, &busy);
        let e = execute(&s, &[5], true, retry(3)).unwrap_err();
        assert_eq!(s.sent().len(), 4, "one send and three retries");
        assert!(e.message().starts_with("gave up after 3 retries"), "{e}");
        assert!(e.message().contains("TRYAGAIN busy"), "{e}");
        assert_eq!(e.tf_code(), 14);
    }

    #[test]
    fn a_fatal_reply_fails_the_request_at_once() {
        let s = Script::new(&[(5, A), (6, B)]).on(A, 0, &[Step::Reply("WRONGTYPE x")]);
        let e = execute(&s, &[5, 6], true, retry(3)).unwrap_err();
        assert!(e.message().contains("WRONGTYPE"), "{e}");
        assert_eq!(s.sent(), sent(&[(A, 0, false), (B, 1, false)]));
    }

    #[test]
    fn without_a_topology_a_refusal_is_resent_without_a_refresh() {
        let mut s = Script::new(&[(5, A)]).on(A, 0, &[Step::Reply("LOADING x")]);
        s.topology = false;
        execute(&s, &[5], true, retry(1)).unwrap();
        assert_eq!(s.sent().len(), 2);
        assert_eq!(*sync::lock(&s.refreshes), 0);
    }
}
