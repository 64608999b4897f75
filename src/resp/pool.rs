//! A bounded pool of connections to one server. Checkout waits at most
//! `redis_wait_timeout`; connections older than `redis_connection_lifetime` are replaced; a
//! forked child never reuses its parent's sockets.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::{Conn, Endpoint};
use crate::stats::{self, Counter};
use crate::sync;

struct State {
    idle: Vec<Conn>,
    /// Connections alive (idle + checked out) in this process.
    open: usize,
    /// Checkouts waiting for a connection to be returned.
    waiting: usize,
    pid: u32,
}

/// Connections to one server.
pub struct Pool {
    ep: Endpoint,
    size: usize,
    wait: Duration,
    lifetime: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

impl Pool {
    /// A pool for `ep` with `cfg`'s size, wait timeout and lifetime; no connection is made yet.
    pub fn new(ep: Endpoint, cfg: &Config) -> Pool {
        Pool {
            ep,
            size: cfg.redis_conn_pool_size,
            wait: Duration::from_millis(cfg.redis_wait_timeout),
            lifetime: Duration::from_secs(cfg.redis_connection_lifetime.saturating_mul(60)),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
                pid: std::process::id(),
            }),
            freed: Condvar::new(),
        }
    }

    /// `host:port` this pool connects to.
    pub fn addr(&self) -> &str {
        &self.ep.addr
    }

    /// Takes a connection, opening one if the pool has room, else waiting for one.
    pub fn get(&self) -> Result<Conn> {
        let deadline = Instant::now() + self.wait;
        let lifetime = self.lifetime;
        let mut st = sync::lock(&self.state);
        loop {
            let pid = std::process::id();
            if st.pid != pid {
                // After fork the parent's sockets are shared with the parent: never touch them.
                std::mem::forget(std::mem::take(&mut st.idle));
                st.open = 0;
                st.pid = pid;
            }
            while let Some(c) = st.idle.pop() {
                if !lifetime.is_zero() && c.born.elapsed() >= lifetime {
                    st.open -= 1;
                    c.kill();
                    continue;
                }
                if !c.is_stale() {
                    return Ok(c);
                }
                stats::add(Counter::StaleConnections, 1);
                st.open -= 1;
                c.kill();
            }
            if st.open < self.size {
                st.open += 1;
                drop(st);
                return Conn::open(&self.ep).inspect_err(|_| {
                    sync::lock(&self.state).open -= 1;
                    self.freed.notify_one();
                });
            }
            let now = Instant::now();
            if now >= deadline {
                stats::add(Counter::PoolWaitTimeouts, 1);
                stats::add(Counter::Timeouts, 1);
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "redis at {}: no pooled connection became free within redis_wait_timeout = {} ms (redis_conn_pool_size = {})",
                        self.addr(),
                        self.wait.as_millis(),
                        self.size
                    ),
                ));
            }
            st.waiting += 1;
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            st.waiting -= 1;
        }
    }

    /// Returns a connection. `healthy = false` closes it instead (unknown protocol state).
    pub fn put(&self, c: Conn, healthy: bool) {
        let mut st = sync::lock(&self.state);
        if st.pid != std::process::id() {
            std::mem::forget(c);
            return;
        }
        if healthy && c.pending() == 0 {
            st.idle.push(c);
        } else {
            st.open -= 1;
            c.kill();
        }
        drop(st);
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled connection, discarding the connection if `f` fails.
    pub fn with<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut c = self.get()?;
        let r = f(&mut c);
        self.put(c, r.is_ok());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A real redis-server child process on a free port, killed (by its pid) on drop.
    struct Server(Child, u16);

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::yield_now();
            }
            Server(child, port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn config(port: u16, size: usize, wait_ms: u64) -> Config {
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 2, "redis_host_port": [{port}], "redis_conn_pool_size": {size}, "redis_wait_timeout": {wait_ms}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn checkout_waits_at_most_redis_wait_timeout() {
        let s = Server::start();
        let cfg = config(s.1, 1, 50);
        let pool = Pool::new(Endpoint::data(&cfg, cfg.addr(0), None), &cfg);
        let held = pool.get().unwrap();
        let e = pool.get().err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.message().contains("redis_wait_timeout = 50 ms"), "{e}");
        pool.put(held, true);
        pool.get().unwrap();
    }

    /// The waiter is seen waiting (the pool counts it) before the connection is returned,
    /// and it gets the connection long before its 10 s `redis_wait_timeout`: the return woke
    /// it (a waiter that was not woken would only find the connection at its deadline).
    #[test]
    fn a_returned_connection_wakes_a_waiter() {
        let s = Server::start();
        let cfg = config(s.1, 1, 10_000);
        let pool = Pool::new(Endpoint::data(&cfg, cfg.addr(0), None), &cfg);
        let held = pool.get().unwrap();
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| pool.get().map(|c| pool.put(c, true)));
            let deadline = Instant::now() + Duration::from_secs(10);
            while sync::lock(&pool.state).waiting == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the second checkout never waited"
                );
                std::thread::yield_now();
            }
            let returned = Instant::now();
            pool.put(held, true);
            waiter.join().unwrap().unwrap();
            let woke = returned.elapsed();
            assert!(
                woke < Duration::from_secs(5),
                "the waiter got the connection {woke:?} after it was returned"
            );
        });
        assert_eq!(sync::lock(&pool.state).waiting, 0);
    }

    #[test]
    fn broken_connections_free_their_slot() {
        let s = Server::start();
        let cfg = config(s.1, 1, 50);
        let pool = Pool::new(Endpoint::data(&cfg, cfg.addr(0), None), &cfg);
        let c = pool.get().unwrap();
        pool.put(c, false);
        pool.get().unwrap();
    }
}
