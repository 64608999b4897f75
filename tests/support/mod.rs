//! Real redis-server processes for integration tests: each on its own free port (never
//! 6379), with a pidfile in a temp dir, stopped by pid on drop. A start checks that the server
//! answering on the port is the process it started (pidfile = `INFO server` process_id), and
//! a stop or crash waits (bounded) until that process is gone; each fails loudly otherwise.

#![allow(dead_code)]

/// Only integration tests (cfg(test)) have the CLI binary built beside them; examples do not.
#[cfg(all(feature = "cli", test))]
pub mod cli;
pub mod cluster;
pub mod proxy;
pub mod sentinel;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis_embedding::Config;

/// Serialises the tests of one test binary: every test of a binary that reads the
/// process-wide counters (`redis_embedding::stats()`) holds this guard for its whole run, so
/// a counter delta is caused by the test that checks it. Poison-tolerant: a failed test does
/// not fail the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a server may take to start, or to exit after a signal.
const PROCESS_DEADLINE: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct Server {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The arguments after the harness' own, kept for [`Server::restart`].
    extra: Vec<String>,
    /// The password the server requires at start (sentinels), for the harness' own checks.
    password: String,
    /// The pid of the running process this harness started, 0 when none is running.
    pid: AtomicU32,
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    assert_ne!(p, 6379);
    p
}

impl Server {
    /// Starts a standalone server and waits (bounded) until it answers PING.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("redis.pid")
    }

    /// Sends raw RESP bytes and returns the first reply chunk, or None if unreachable.
    pub fn raw(&self, cmd: &[u8]) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(cmd).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Sends several single-line-reply commands on one connection and returns all the raw
    /// reply bytes (read until one CRLF-terminated line per command has arrived).
    pub fn pipeline(&self, cmds: &[&[&[u8]]]) -> Vec<u8> {
        let mut out = Vec::new();
        for args in cmds {
            out.extend(format!("*{}\r\n", args.len()).into_bytes());
            for a in *args {
                out.extend(format!("${}\r\n", a.len()).into_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("server reachable");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&out).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.windows(2).filter(|w| w == b"\r\n").count() < cmds.len() {
            let n = s.read(&mut buf).expect("replies");
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// Runs one command (binary-safe argv) and returns the raw reply bytes.
    pub fn cli(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            cmd.extend_from_slice(a);
            cmd.extend_from_slice(b"\r\n");
        }
        self.raw(&cmd).expect("server reachable")
    }

    /// A standalone config for this server.
    pub fn config(&self, extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { "," };
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{}], "table_store_mode": 0{sep}{extra}}}"#,
            self.port
        ))
        .unwrap()
    }

    /// Stops the server (SIGTERM by its pid) and waits until the process is gone. Does
    /// nothing if it is not running (never started, stopped or crashed). Panics if the process
    /// had already died on its own, or is still there after 10 s (it is then SIGKILLed).
    pub fn stop(&self) {
        if let Err(e) = self.signal(libc::SIGTERM) {
            panic!("{e}");
        }
    }

    /// Kills the server hard (SIGKILL by its pid), as a crash would, and waits until the
    /// process is gone. Panics if it was not running or is still there after 10 s.
    pub fn crash(&self) {
        assert!(
            self.pid.load(Ordering::SeqCst) != 0,
            "crash(): redis-server on {} is not running",
            self.port
        );
        if let Err(e) = self.signal(libc::SIGKILL) {
            panic!("{e}");
        }
    }

    /// Sends `sig` to the running server and waits (bounded) until the process has exited.
    fn signal(&self, sig: libc::c_int) -> Result<(), String> {
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid == 0 {
            return Ok(());
        }
        // A zombie (exited, not yet reaped) still accepts signals: check it is alive first.
        // SAFETY: kill(2) with a pid this harness started and a valid signal number.
        if !alive(pid) || unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(format!(
                "redis-server pid {pid} on port {} had already exited before signal {sig}; its log ends:\n{}",
                self.port,
                self.log_tail(20)
            ));
        }
        let deadline = Instant::now() + PROCESS_DEADLINE;
        while alive(pid) {
            if Instant::now() >= deadline {
                // SAFETY: as above; no process is left behind.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return Err(format!(
                    "redis-server pid {pid} on port {} was still running {PROCESS_DEADLINE:?} after signal {sig} (now SIGKILLed); its log ends:\n{}",
                    self.port,
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.signal(libc::SIGTERM) {
            // Never a panic inside a panic (that aborts the test binary): the first failure
            // is the one to read.
            if std::thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// Little-endian bytes of a slice of i64 keys.
pub fn i64_keys(k: &[i64]) -> Vec<u8> {
    k.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// f32 values from little-endian bytes.
pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Every test binary includes the whole harness and uses part of it.
#[allow(unused_imports)]
pub use cluster::{free_cluster_port, redis_cli, Cluster};
#[allow(unused_imports)]
pub use sentinel::{Paused, Sentinel};
#[allow(unused_imports)]
pub use tls::Certs;

impl Server {
    /// Starts a server with extra arguments (for example cluster mode).
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cluster = extra.contains(&"--cluster-enabled");
        let port = if cluster {
            free_cluster_port()
        } else {
            free_port()
        };
        let s = Server {
            port,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            password: String::new(),
            pid: AtomicU32::new(0),
        };
        s.launch(&[]);
        s
    }

    /// Starts the server process again on the same port and directory (after a crash or a
    /// stop); with AOF on, it reloads what it had acknowledged.
    pub fn restart(&self) {
        self.launch(&[]);
    }

    /// Like [`Server::restart`], with `more` arguments after the original ones, for this
    /// start only.
    pub fn restart_with(&self, more: &[&str]) {
        self.launch(more);
    }

    fn launch(&self, more: &[&str]) {
        assert!(
            self.pid.load(Ordering::SeqCst) == 0,
            "redis-server on {} is already running",
            self.port
        );
        let (port, dir) = (self.port, &self.dir);
        // A pidfile left by a crash must not be mistaken for the new process'.
        let _ = std::fs::remove_file(self.pidfile());
        let status = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // Replicas sync at once instead of after Redis' 5 s default delay.
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(["--daemonize", "yes", "--dir"])
            .arg(dir.path())
            .arg("--pidfile")
            .arg(dir.path().join("redis.pid"))
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(&self.extra)
            .args(more)
            .status()
            .expect("redis-server must be installed (apt-get install redis-server)");
        assert!(status.success());
        self.wait_ready();
    }

    /// Waits (bounded) until the server answers PING (PONG, or NOAUTH from a server that
    /// wants a password) and checks that the process answering is the one started: the pid
    /// in its pidfile equals the process_id it reports. A daemonized server that failed to
    /// bind its port (another process took the free port first) exits without a pidfile
    /// while whatever holds the port answers PING; that fails here, with the log tail.
    fn wait_ready(&self) {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let fail = |what: String| -> ! {
            panic!(
                "redis-server on port {} (dir {}): {what}; its log ends:\n{}",
                self.port,
                self.dir.path().display(),
                self.log_tail(20)
            )
        };
        let pid = loop {
            let pong = self
                .raw(b"*1\r\n$4\r\nPING\r\n")
                .is_some_and(|r| r.starts_with(b"+PONG") || r.starts_with(b"-NOAUTH"));
            let pid = std::fs::read_to_string(self.pidfile())
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            match pid {
                Some(pid) if pong => break pid,
                // The pidfile is written before the server serves: no pid means not started.
                _ if Instant::now() >= deadline => fail(format!(
                    "not started within {PROCESS_DEADLINE:?} (answers PING: {pong}, pidfile: {pid:?})"
                )),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if !alive(pid) {
            fail(format!("process {pid} from the pidfile is not running"));
        }
        match self.process_id() {
            Ok(answering) if answering == pid => self.pid.store(pid, Ordering::SeqCst),
            Ok(answering) => fail(format!(
                "the server answering on the port is process {answering}, not the one started \
                 (pid {pid}): the port was taken by another server"
            )),
            Err(e) => fail(format!("INFO server failed: {e}")),
        }
    }

    /// The process_id the server answering on this port reports (`INFO server`).
    pub fn process_id(&self) -> Result<u32, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(PROCESS_DEADLINE))
            .map_err(|e| e.to_string())?;
        let mut cmd = Vec::new();
        if !self.password.is_empty() {
            let p = &self.password;
            cmd.extend(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()).into_bytes());
        }
        cmd.extend_from_slice(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n");
        s.write_all(&cmd).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if !self.password.is_empty() {
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            if line != "+OK\r\n" {
                return Err(format!("AUTH replied {line:?}"));
            }
            line.clear();
        }
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let len: usize = line
            .strip_prefix('$')
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("INFO replied {line:?}"))?;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "INFO server has no process_id".to_string())
    }

    /// A cluster-enabled node (not yet part of a cluster).
    pub fn cluster_node() -> Server {
        Server::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ])
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// This node's cluster id.
    pub fn node_id(&self) -> String {
        let out = self.cli(&[b"CLUSTER", b"MYID"]);
        String::from_utf8_lossy(&out)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// `CLUSTER SETSLOT slot how id` on this node; asserts OK.
    pub fn set_slot(&self, slot: usize, how: &[u8], id: &str) {
        let slot = slot.to_string();
        let reply = self.cli(&[b"CLUSTER", b"SETSLOT", slot.as_bytes(), how, id.as_bytes()]);
        assert_eq!(reply, b"+OK\r\n", "SETSLOT {slot} {how:?} on {}", self.port);
    }

    /// Starts moving `slot` from this node to `to` (IMPORTING there, MIGRATING here).
    pub fn start_migrating(&self, slot: usize, to: &Server) {
        to.set_slot(slot, b"IMPORTING", &self.node_id());
        self.set_slot(slot, b"MIGRATING", &to.node_id());
    }

    /// MIGRATEs `keys` from this node to `to`; asserts OK.
    pub fn migrate_keys(&self, to: &Server, keys: &[&[u8]]) {
        let port = to.port.to_string();
        let mut args: Vec<&[u8]> = vec![b"MIGRATE", b"127.0.0.1", port.as_bytes(), b"", b"0"];
        args.extend([b"5000".as_slice(), b"KEYS"]);
        args.extend(keys);
        assert_eq!(self.cli(&args), b"+OK\r\n", "MIGRATE to {}", to.port);
    }
}

impl Server {
    /// This server's directory (its `redis.log`, and `sentinel.conf` for a sentinel).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The last `n` lines of this server's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Server {
    /// Field `field` (`calls`, `rejected_calls`, `failed_calls`) of `command` in INFO
    /// commandstats: `rejected_calls` counts replies refused before running (OOM, NOPERM,
    /// READONLY), `failed_calls` errors while running (WRONGTYPE).
    pub fn cmdstat(&self, command: &str, field: &str) -> u64 {
        let info = String::from_utf8_lossy(&self.cli(&[b"INFO", b"commandstats"])).into_owned();
        let prefix = format!("cmdstat_{command}:");
        let want = format!("{field}=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix(&want)))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts a sentinel from `conf` (sentinel directives; the harness adds port, bind,
    /// daemonize, pidfile, logfile and dir) and waits (bounded) until it answers PING on its
    /// plain port, checking its pid like any server.
    pub fn start_sentinel(conf: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = dir.path().join("sentinel.conf");
        std::fs::write(
            &file,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\npidfile {pid}\nlogfile {log}\ndir {d}\n{conf}",
                pid = dir.path().join("redis.pid").display(),
                log = dir.path().join("redis.log").display(),
                d = dir.path().display(),
            ),
        )
        .unwrap();
        let status = Command::new("redis-server")
            .arg(&file)
            .arg("--sentinel")
            .status()
            .expect("redis-server must be installed");
        assert!(status.success());
        let s = Server {
            port,
            dir,
            extra: Vec::new(),
            password: String::new(),
            pid: AtomicU32::new(0),
        };
        s.wait_ready();
        s
    }
}

/// Waits (bounded) until `cond` holds, polling every few milliseconds; panics naming `what`
/// if it does not within `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` with stderr on a terminal (a pseudo-terminal from `openpty`, 160 columns) and
/// stdout discarded; returns its exit status and what it drew on the terminal. The terminal is
/// read while the command runs, so no amount of output can block it.
pub fn on_a_pty(mut cmd: Command) -> (std::process::ExitStatus, String) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the locals; the size is read only.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let mut child = cmd
        .stderr(slave)
        .stdout(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The command holds the terminal's other end until dropped; the reader's end-of-output
    // is that every holder (then only the child) has closed it.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EIO once the child (the only holder of the slave) has exited.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let status = child.wait().unwrap();
    (
        status,
        String::from_utf8_lossy(&reader.join().unwrap()).into_owned(),
    )
}
