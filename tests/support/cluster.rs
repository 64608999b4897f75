//! Redis Cluster of real redis-server processes: free port pairs, `redis-cli --cluster create`,
//! slot moves and node failures.

#![allow(unused_imports)]

use super::*;

/// A Redis Cluster of real redis-server processes (masters and optional replicas).
pub struct Cluster {
    pub nodes: Vec<Server>,
}

/// A free port whose cluster bus port (port + 10000) is valid and free too.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        if p <= 55535 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// Runs redis-cli with arguments and asserts success.
pub fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each, created with `redis-cli --cluster create`.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        let nodes: Vec<Server> = (0..masters * (1 + replicas))
            .map(|_| Server::cluster_node())
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(Server::addr));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        redis_cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// Waits (bounded) until every node reports `cluster_state:ok` and agrees on the slots.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = String::from_utf8_lossy(&n.cli(&[b"CLUSTER", b"INFO"])).into_owned();
                info.contains("cluster_state:ok")
            });
            // A replica that never finished its first sync cannot take over: wait for it.
            let synced = self.nodes.iter().all(|n| {
                let info = String::from_utf8_lossy(&n.cli(&[b"INFO", b"replication"])).into_owned();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            // Every node knows every replica, and every master streams to its replicas: a
            // probe write is acknowledged by them (WAIT).
            let replicas = self
                .nodes
                .iter()
                .filter(|n| !String::from_utf8_lossy(&n.cli(&[b"ROLE"])).contains("master"))
                .count();
            let known = self.nodes.iter().all(|n| {
                String::from_utf8_lossy(&n.cli(&[b"CLUSTER", b"NODES"]))
                    .matches("slave")
                    .count()
                    == replicas
            });
            if ok && synced && known && self.replicas_acknowledge() {
                let check = Command::new("redis-cli")
                    .args(["--cluster", "check", &self.nodes[0].addr()])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&check.stdout).contains("[OK] All 16384 slots covered")
                    && check.status.success()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until every replica has everything its master has written.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.replicas_acknowledge() {
            assert!(Instant::now() < deadline, "replicas never caught up");
        }
    }

    /// Writes a probe key on each master that has replicas and waits for them to acknowledge
    /// it (WAIT on the probe's own connection: a WAIT only covers that connection's writes):
    /// true if they all did.
    fn replicas_acknowledge(&self) -> bool {
        for n in &self.nodes {
            let info = String::from_utf8_lossy(&n.cli(&[b"INFO", b"replication"])).into_owned();
            let Some(count) = info
                .lines()
                .find_map(|l| l.strip_prefix("connected_slaves:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&c| c > 0 && info.contains("role:master"))
            else {
                continue;
            };
            // A key this master owns: the first probe that is not redirected.
            let key = (0..10_000)
                .map(|i| format!("rde-probe{{{i}}}"))
                .find(|k| n.cli(&[b"SET", k.as_bytes(), b"1"]) == b"+OK\r\n")
                .expect("a probe key for this master");
            // WAIT counts replicas that have this connection's writes, so the probe write and
            // the WAIT must share one connection.
            let replies = n.pipeline(&[
                &[b"SET", key.as_bytes(), b"1"],
                &[b"WAIT", count.to_string().as_bytes(), b"2000"],
                &[b"DEL", key.as_bytes()],
            ]);
            if replies != format!("+OK\r\n:{count}\r\n:1\r\n").as_bytes() {
                return false;
            }
        }
        true
    }

    /// A cluster-mode config with every node as a seed.
    pub fn config(&self, extra: &str) -> Config {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|_| "\"127.0.0.1\"".to_string())
            .collect();
        let ports: Vec<String> = self.nodes.iter().map(|n| n.port.to_string()).collect();
        let sep = if extra.is_empty() { "" } else { "," };
        Config::from_json(&format!(
            r#"{{"redis_connection_mode": 0, "redis_host_ip": [{}], "redis_host_port": [{}], "table_store_mode": 0{sep}{extra}}}"#,
            hosts.join(","),
            ports.join(",")
        ))
        .unwrap()
    }
}
