//! A master, a replica and a sentinel: failovers, demotions, paused servers.

#![allow(unused_imports)]

use super::*;

/// A master, one replica and one sentinel monitoring them as `mymaster`.
pub struct Sentinel {
    pub master: Server,
    pub replica: Server,
    pub sentinel: Server,
}

impl Server {
    /// The replication offset this server reports.
    pub fn repl_offset(&self) -> i64 {
        let info = String::from_utf8_lossy(&self.cli(&[b"INFO", b"replication"])).into_owned();
        info.lines()
            .find_map(|l| {
                l.strip_prefix("master_repl_offset:")
                    .or_else(|| l.strip_prefix("slave_repl_offset:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    }

    /// Calls of `command` served, from INFO commandstats.
    pub fn calls(&self, command: &str) -> u64 {
        let info = String::from_utf8_lossy(&self.cli(&[b"INFO", b"commandstats"])).into_owned();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Stops the process (SIGSTOP by its pid), as a process starved of CPU looks to its
    /// peers: connected, silent. It runs again (SIGCONT) when the guard is dropped.
    pub fn pause(&self) -> Paused<'_> {
        let pid = self.pid.load(Ordering::SeqCst);
        assert!(
            pid != 0,
            "pause(): redis-server on {} is not running",
            self.port
        );
        // SAFETY: kill(2) with a pid this harness started and a valid signal number.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(
            sent, 0,
            "SIGSTOP to redis-server pid {pid} on {}",
            self.port
        );
        Paused(self, pid)
    }
}

/// A server stopped by [`Server::pause`] (and its pid); dropping this resumes it.
pub struct Paused<'a>(&'a Server, u32);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `pause`.
        unsafe { libc::kill(self.1 as libc::pid_t, libc::SIGCONT) };
    }
}

impl Sentinel {
    /// Starts the three processes and waits until the sentinel knows master and replica.
    pub fn start() -> Sentinel {
        Sentinel::start_with_password("")
    }

    /// Like [`Sentinel::start`], with the sentinel requiring `password` (if not empty).
    pub fn start_with_password(password: &str) -> Sentinel {
        Sentinel::launch(password, &[])
    }

    /// Like [`Sentinel::start`], with extra arguments for master and replica (kept by
    /// [`Server::restart`]), for example an append-only file.
    pub fn start_with_data_args(args: &[&str]) -> Sentinel {
        Sentinel::launch("", args)
    }

    fn launch(password: &str, data_args: &[&str]) -> Sentinel {
        let master = Server::start_with(data_args);
        let master_port = master.port.to_string();
        let mut replica_args = data_args.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &master_port]);
        let replica = Server::start_with(&replica_args);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\npidfile {pid}\nlogfile {log}\ndir {d}\n\
                 sentinel monitor mymaster 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 3000\n{auth}",
                pid = dir.path().join("redis.pid").display(),
                log = dir.path().join("redis.log").display(),
                d = dir.path().display(),
                m = master.port,
                auth = if password.is_empty() { String::new() } else { format!("requirepass {password}\n") },
            ),
        )
        .unwrap();
        let status = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .status()
            .unwrap();
        assert!(status.success());
        let sentinel = Server {
            port,
            dir,
            extra: Vec::new(),
            password: password.to_string(),
            pid: AtomicU32::new(0),
        };
        sentinel.wait_ready();
        let s = Sentinel {
            master,
            replica,
            sentinel,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !password.is_empty() {
                let port = s.sentinel.port.to_string();
                let args = [
                    "-p",
                    &port,
                    "-a",
                    password,
                    "--no-auth-warning",
                    "SENTINEL",
                    "REPLICAS",
                    "mymaster",
                ];
                let out = Command::new("redis-cli").args(args).output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains(&s.replica.port.to_string()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel did not discover the replica"
                );
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let info =
                String::from_utf8_lossy(&s.sentinel.cli(&[b"SENTINEL", b"REPLICAS", b"mymaster"]))
                    .into_owned();
            // Wait until the sentinel is connected to the replica (flags exactly "slave").
            let healthy =
                info.contains(&s.replica.port.to_string()) && info.contains("\r\nslave\r\n");
            if healthy && s.replica.repl_offset() >= 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sentinel did not discover the replica"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// Waits (bounded) until the replica has everything the master has.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let linked = |r: &Server| {
            String::from_utf8_lossy(&r.cli(&[b"INFO", b"replication"]))
                .contains("master_link_status:up")
        };
        while !linked(&self.replica) || self.replica.repl_offset() < self.master.repl_offset() {
            assert!(Instant::now() < deadline, "replica did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Copies the three logs (and the sentinel's rewritten config) into `dest`, which is
    /// created, so that a failing run can be read after the temp dirs are gone.
    pub fn keep_logs(&self, dest: &std::path::Path) {
        std::fs::create_dir_all(dest).unwrap();
        for (name, s) in [
            ("master", &self.master),
            ("replica", &self.replica),
            ("sentinel", &self.sentinel),
        ] {
            for f in ["redis.log", "sentinel.conf"] {
                let _ = std::fs::copy(s.dir().join(f), dest.join(format!("{name}.{f}")));
            }
        }
    }

    /// A sentinel-mode config.
    pub fn config(&self, extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { "," };
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 1, "redis_master_name": "mymaster", "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{}], "table_store_mode": 0{sep}{extra}}}"#,
            self.sentinel.port
        ))
        .unwrap()
    }
}
