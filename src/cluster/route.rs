//! Where a bucket lives: the one server (standalone), the master that the sentinels name
//! (sentinel), or the cluster node that owns the bucket's slot (cluster), with one connection
//! pool per address. A MOVED redirect updates its one slot; READONLY, a refusal or a
//! connection failure makes the caller refresh the whole topology.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use rustc_hash::FxHashMap;

use crate::cluster::dispatch::Retry;
use crate::cluster::layout::SLOTS;
use crate::config::{Config, ConnectionMode};
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::{Conn, Endpoint, Reply};
use crate::resp::pool::Pool;
use crate::resp::tls::{self, Tls};
use crate::stats::{self, Counter};
use crate::sync;

/// Whether a request reads or writes (reads may go to a replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Lookups, size, export.
    Read,
    /// Everything that changes data.
    Write,
}

/// The cluster's slot owners.
#[derive(Default)]
struct SlotMap {
    /// Master addresses.
    nodes: Vec<String>,
    /// For each slot, an index into `nodes` (`u16::MAX` = unassigned).
    owner: Vec<u16>,
}

/// Routes requests to servers and owns their connection pools.
pub struct Router {
    cfg: Config,
    pools: Mutex<FxHashMap<String, Arc<Pool>>>,
    slots: RwLock<SlotMap>,
    /// Sentinel mode: the current master and, for replica reads, a replica.
    master: RwLock<Option<String>>,
    replica: RwLock<Option<String>>,
    tls: Option<Arc<Tls>>,
}

/// The first element of a `ROLE` reply: "master", "slave" or "sentinel".
fn role_name(reply: &Reply) -> Option<&[u8]> {
    match reply {
        Reply::Array(v) => match v.first() {
            Some(Reply::Bulk(r)) => Some(r.as_slice()),
            _ => None,
        },
        _ => None,
    }
}

/// A random starting point, so that many tables opening at once spread their topology
/// queries over the seeds instead of all asking the first one.
fn random_start(n: usize) -> usize {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % n.max(1) as u64) as usize
}

impl Router {
    /// Builds the router and learns the topology (connecting to it). Errors name the mode in
    /// effect and what to set.
    ///
    /// Mode 1 (sentinel, also TFRA's default when the field is absent) keeps TFRA's tolerance
    /// of a plain server, without its danger: when the one configured host answers the
    /// sentinel query with an error reply and `ROLE` says it is a master, it is used as a
    /// standalone server (one log line says so). A sentinel that is down, unknown to the
    /// master name or failing is an error, and no other server is ever tried.
    ///
    /// A connection failure or timeout (the server restarting, a sentinel failover, a server
    /// too busy to answer) is retried like a request's (`retry`: `rde_max_retries`, with the
    /// same backoff), so that opening a table rides out the same blips as using it. Error
    /// replies (a wrong password, a refused command, a host that is no sentinel) fail at once.
    pub fn open(cfg: &Config, retry: Retry) -> Result<Router> {
        let mut attempt = 0u32;
        let opened = loop {
            match Router::open_once(cfg) {
                Err(e) if e.is_transient() && attempt < retry.attempts => {
                    attempt += 1;
                    stats::add(Counter::Retries, 1);
                    log::info!(
                        "opening a table: {e}; retry {attempt} of {}",
                        retry.attempts
                    );
                    std::thread::sleep(retry.pause(attempt));
                }
                Err(e) if e.is_transient() && attempt > 0 => {
                    break Err(e.context(format!("gave up after {attempt} retries")))
                }
                r => break r,
            }
        };
        opened.map_err(|e: Error| e.context(cfg.mode_in_effect()).hint(cfg.mode_hint()))
    }

    /// One attempt of [`Router::open`].
    fn open_once(cfg: &Config) -> Result<Router> {
        Router::connect(cfg.clone()).or_else(|sentinel_err| {
            let plain = Router::plain_server_in_sentinel_mode(cfg, &sentinel_err)?;
            log::warn!(
                "{}: {} is a plain Redis master, not a sentinel; using it as a standalone \
                 server (set \"redis_connection_mode\": 2 to say so)",
                cfg.mode_in_effect(),
                cfg.addr(0)
            );
            Ok(plain)
        })
    }

    fn connect(cfg: Config) -> Result<Router> {
        let tls = tls::settings(&cfg)?;
        let r = Router {
            cfg,
            pools: Mutex::new(FxHashMap::default()),
            slots: RwLock::new(SlotMap::default()),
            master: RwLock::new(None),
            replica: RwLock::new(None),
            tls,
        };
        r.refresh()?;
        Ok(r)
    }

    /// The `ROLE` reply of the server at `addr` (over its pool).
    fn role(&self, addr: &str) -> Result<Reply> {
        self.pool(addr).with(|c| {
            c.cmd(&[b"ROLE"]);
            c.flush()?;
            c.read_reply()
        })
    }

    /// A standalone router for the one host of `cfg` when `cfg` is in sentinel mode and that
    /// host turned out to be a Redis master (it answered the sentinel query with an error
    /// reply, and `ROLE` with "master"). Otherwise the sentinel error stands.
    fn plain_server_in_sentinel_mode(cfg: &Config, sentinel_err: &Error) -> Result<Router> {
        let answered_with_error_reply = sentinel_err.server().is_some();
        if cfg.redis_connection_mode != ConnectionMode::Sentinel
            || cfg.redis_host_ip.len() != 1
            || !answered_with_error_reply
        {
            return Err(sentinel_err.clone());
        }
        let plain = Router::connect(cfg.as_standalone()).map_err(|_| sentinel_err.clone())?;
        match plain.role(&cfg.addr(0)) {
            Ok(reply) if role_name(&reply) == Some(b"master".as_slice()) => Ok(plain),
            _ => Err(sentinel_err.clone()),
        }
    }

    /// `(replicas, timeout ms)` every write pipeline must be acknowledged by, if any.
    pub fn write_ack(&self) -> Option<(u32, u64)> {
        (self.cfg.rde_wait_replicas > 0).then_some((
            self.cfg.rde_wait_replicas,
            self.cfg.rde_wait_replicas_timeout_ms,
        ))
    }

    /// The pool for `addr`, created on first use.
    pub fn pool(&self, addr: &str) -> Arc<Pool> {
        let mut pools = sync::lock(&self.pools);
        sync::panic_point("redis_pools");
        pools
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    Endpoint::data(&self.cfg, addr.to_owned(), self.tls.clone()),
                    &self.cfg,
                ))
            })
            .clone()
    }

    /// Re-learns the topology: the slot map (cluster) or the master (sentinel).
    pub fn refresh(&self) -> Result<()> {
        match self.cfg.redis_connection_mode {
            ConnectionMode::Standalone => {
                // Connect once so that an unreachable server fails the open.
                self.pool(&self.cfg.addr(0)).with(|_| Ok(()))
            }
            ConnectionMode::Cluster => self.refresh_slots(),
            ConnectionMode::Sentinel => self.refresh_master(),
        }
    }

    /// Whether the servers can move (cluster slots, a sentinel-managed master). A standalone
    /// server cannot, so a retry there just reconnects and needs no refresh.
    pub fn has_topology(&self) -> bool {
        self.cfg.redis_connection_mode != ConnectionMode::Standalone
    }

    /// The address serving `slot` for `access`.
    pub fn addr_for(&self, slot: usize, access: Access) -> Result<String> {
        match self.cfg.redis_connection_mode {
            ConnectionMode::Standalone => Ok(self.cfg.addr(0)),
            ConnectionMode::Sentinel => {
                if access == Access::Read && self.cfg.redis_read_access_slave {
                    if let Some(r) = sync::read(&self.replica).clone() {
                        return Ok(r);
                    }
                }
                sync::read(&self.master).clone().ok_or_else(|| {
                    Error::new(ErrorKind::Connection, "no master known from the sentinels")
                })
            }
            ConnectionMode::Cluster => {
                let map = sync::read(&self.slots);
                match map.owner.get(slot) {
                    Some(&i) if i != u16::MAX => Ok(map.nodes[i as usize].clone()),
                    _ => Err(Error::new(
                        ErrorKind::Connection,
                        format!("redis cluster: no node serves slot {slot}"),
                    )),
                }
            }
        }
    }

    /// The masters the data lives on: the server (standalone), the master the sentinels
    /// named (sentinel), or every node that owns a slot (cluster).
    pub fn masters(&self) -> Vec<String> {
        match self.cfg.redis_connection_mode {
            ConnectionMode::Standalone => vec![self.cfg.addr(0)],
            ConnectionMode::Sentinel => sync::read(&self.master).iter().cloned().collect(),
            ConnectionMode::Cluster => {
                let map = sync::read(&self.slots);
                let mut owners: Vec<u16> = map
                    .owner
                    .iter()
                    .copied()
                    .filter(|&o| o != u16::MAX)
                    .collect();
                owners.sort_unstable();
                owners.dedup();
                owners
                    .iter()
                    .map(|&o| map.nodes[o as usize].clone())
                    .collect()
            }
        }
    }

    /// `CONFIG GET <name>` on `addr`: the value, or None if the server has no such parameter.
    pub fn config_get(&self, addr: &str, name: &str) -> Result<Option<String>> {
        let reply = self.pool(addr).with(|c| {
            c.cmd(&[b"CONFIG", b"GET", name.as_bytes()]);
            c.flush()?;
            c.read_reply()
        })?;
        Ok(match reply {
            Reply::Array(v) => match v.get(1) {
                Some(Reply::Bulk(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        })
    }

    /// A numeric field of `INFO <section>` on `addr` (None if the server does not report it).
    pub fn info_field(&self, addr: &str, section: &str, field: &str) -> Result<Option<u64>> {
        let reply = self.pool(addr).with(|c| {
            c.cmd(&[b"INFO", section.as_bytes()]);
            c.flush()?;
            c.read_reply()
        })?;
        let Reply::Bulk(text) = reply else {
            return Ok(None);
        };
        Ok(String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.trim_end()
                .strip_prefix(field)?
                .strip_prefix(':')?
                .parse()
                .ok()
        }))
    }

    /// Records a MOVED redirect without a full refresh.
    pub fn moved(&self, slot: usize, addr: &str) {
        let mut map = sync::write(&self.slots);
        let i = match map.nodes.iter().position(|n| n == addr) {
            Some(i) => i,
            None => {
                map.nodes.push(addr.to_owned());
                map.nodes.len() - 1
            }
        };
        if let Some(o) = map.owner.get_mut(slot) {
            *o = i as u16;
        }
    }

    /// Runs one request on a seed host (cluster) in random order until one answers.
    fn on_a_seed<T>(&self, what: &str, f: impl Fn(&mut Conn) -> Result<T>) -> Result<(T, String)> {
        let n = self.cfg.redis_host_ip.len();
        let start = random_start(n);
        let mut last = None;
        for k in 0..n {
            let addr = self.cfg.addr((start + k) % n);
            match self.pool(&addr).with(&f) {
                Ok(v) => return Ok((v, addr)),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| Error::new(ErrorKind::Connection, "no hosts configured"))
            .context(format!("{what}: no seed host answered")))
    }

    /// `CLUSTER NODES` text from a seed, for TFRA's topology-derived hash tags.
    pub fn cluster_nodes(&self) -> Result<String> {
        let (reply, _) = self.on_a_seed("CLUSTER NODES", |c| {
            c.cmd(&[b"CLUSTER", b"NODES"]);
            c.flush()?;
            c.read_reply()
        })?;
        match reply {
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Status(s) => Ok(s),
            other => Err(Error::new(
                ErrorKind::Server,
                format!("CLUSTER NODES replied {other:?}"),
            )),
        }
    }

    fn refresh_slots(&self) -> Result<()> {
        let (reply, seed) = self.on_a_seed("CLUSTER SLOTS", |c| {
            c.cmd(&[b"CLUSTER", b"SLOTS"]);
            c.flush()?;
            c.read_reply()
        })?;
        let seed_host = seed
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        let bad = || {
            Error::new(
                ErrorKind::Server,
                format!("CLUSTER SLOTS from {seed} is malformed"),
            )
        };
        let Reply::Array(ranges) = reply else {
            return Err(bad());
        };
        let mut map = SlotMap {
            nodes: Vec::new(),
            owner: vec![u16::MAX; SLOTS],
        };
        for r in ranges {
            let Reply::Array(r) = r else {
                return Err(bad());
            };
            let (Some(Reply::Int(a)), Some(Reply::Int(b)), Some(Reply::Array(node))) =
                (r.first(), r.get(1), r.get(2))
            else {
                return Err(bad());
            };
            let host = match node.first() {
                Some(Reply::Bulk(h)) if !h.is_empty() && h.as_slice() != b"?" => {
                    String::from_utf8_lossy(h).into_owned()
                }
                _ => seed_host.clone(),
            };
            let Some(Reply::Int(port)) = node.get(1) else {
                return Err(bad());
            };
            let addr = format!("{host}:{port}");
            let i = match map.nodes.iter().position(|n| *n == addr) {
                Some(i) => i,
                None => {
                    map.nodes.push(addr);
                    map.nodes.len() - 1
                }
            };
            for s in (*a as usize)..=(*b as usize).min(SLOTS - 1) {
                map.owner[s] = i as u16;
            }
        }
        if map.owner.iter().all(|&o| o == u16::MAX) {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("redis cluster at {seed} serves no slots"),
            ));
        }
        *sync::write(&self.slots) = map;
        Ok(())
    }

    fn sentinel_query(&self, args: &[&[u8]]) -> Result<Reply> {
        let n = self.cfg.redis_host_ip.len();
        let mut last = None;
        for k in 0..n {
            let ep = Endpoint::sentinel(&self.cfg, self.cfg.addr(k), self.tls.clone());
            let r = Conn::open(&ep).and_then(|mut c| {
                c.cmd(args);
                c.flush()?;
                c.read_reply()
            });
            match r {
                Ok(Reply::Nil) => {
                    last = Some(Error::new(
                        ErrorKind::Connection,
                        format!(
                            "sentinel {} does not know master {:?}",
                            ep.addr, self.cfg.redis_master_name
                        ),
                    ))
                }
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::Connection, "no sentinels configured")))
    }

    fn refresh_master(&self) -> Result<()> {
        let name = self.cfg.redis_master_name.as_bytes();
        let reply = self.sentinel_query(&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name])?;
        let addr = match reply {
            Reply::Array(v) if v.len() == 2 => match (&v[0], &v[1]) {
                (Reply::Bulk(h), Reply::Bulk(p)) => format!(
                    "{}:{}",
                    String::from_utf8_lossy(h),
                    String::from_utf8_lossy(p)
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::Server,
                        "sentinel returned a malformed master address",
                    ))
                }
            },
            other => {
                return Err(Error::new(
                    ErrorKind::Server,
                    format!("sentinel replied {other:?}"),
                ))
            }
        };
        // During a failover the sentinels may still name the old master: insist on the role.
        let role = self.role(&addr)?;
        if role_name(&role) != Some(b"master".as_slice()) {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("{addr}, named master of {:?} by the sentinels, is not a master (failover in progress)", self.cfg.redis_master_name),
            ));
        }
        *sync::write(&self.master) = Some(addr);
        if self.cfg.redis_read_access_slave {
            *sync::write(&self.replica) = self.find_replica().ok().flatten();
        }
        Ok(())
    }

    fn find_replica(&self) -> Result<Option<String>> {
        let reply = self.sentinel_query(&[
            b"SENTINEL",
            b"REPLICAS",
            self.cfg.redis_master_name.as_bytes(),
        ])?;
        let Reply::Array(replicas) = reply else {
            return Ok(None);
        };
        for r in replicas {
            let Reply::Array(kv) = r else { continue };
            let get = |k: &[u8]| {
                kv.chunks(2).find_map(|p| match p {
                    [Reply::Bulk(key), Reply::Bulk(v)] if key.as_slice() == k => {
                        Some(String::from_utf8_lossy(v).into_owned())
                    }
                    _ => None,
                })
            };
            let flags = get(b"flags").unwrap_or_default();
            if flags.contains("s_down") || flags.contains("o_down") {
                continue;
            }
            let (Some(ip), Some(port)) = (get(b"ip"), get(b"port")) else {
                continue;
            };
            let addr = format!("{ip}:{port}");
            // Use it only if it answers as a replica; otherwise reads stay on the master.
            let role = self.role(&addr);
            if matches!(&role, Ok(r) if role_name(r) == Some(b"slave".as_slice())) {
                return Ok(Some(addr));
            }
        }
        Ok(None)
    }
}
