//! Server-side figures from `INFO`: memory, evictions, keyspace hits and misses, throughput
//! and replication lag, per master.

use super::Admin;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::conn::Reply;

/// One replica as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// `ip:port`.
    pub addr: String,
    /// Bytes of the replication stream it has not applied: the master's offset less the
    /// replica's own (`slave_repl_offset`, read after the master's), or less its last
    /// acknowledgement (sent once a second) when the replica does not answer.
    pub lag_bytes: u64,
    /// Seconds since its last acknowledgement.
    pub lag_secs: u64,
}

/// The figures of one master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// `host:port`.
    pub addr: String,
    /// `used_memory`.
    pub used_memory: u64,
    /// `maxmemory` (0 = no limit).
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub maxmemory_policy: String,
    /// Keys evicted since the server started (`evicted_keys`).
    pub evicted_keys: u64,
    /// `keyspace_hits`.
    pub keyspace_hits: u64,
    /// `keyspace_misses`.
    pub keyspace_misses: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// `connected_clients`.
    pub connected_clients: u64,
    /// Keys in the selected database.
    pub keys: u64,
    /// `master_repl_offset`.
    pub repl_offset: u64,
    /// Its replicas.
    pub replicas: Vec<Replica>,
}

impl ServerStats {
    /// Parses `INFO` text.
    pub fn parse(addr: &str, info: &str, db: i64) -> ServerStats {
        let mut s = ServerStats {
            addr: addr.to_owned(),
            ..ServerStats::default()
        };

        let mut replicas: Vec<(String, u64, u64)> = Vec::new();
        let db_field = format!("db{db}");
        for line in info.lines() {
            let Some((field, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            let n = value.parse::<u64>().unwrap_or(0);
            match field {
                "used_memory" => s.used_memory = n,
                "maxmemory" => s.maxmemory = n,
                "maxmemory_policy" => s.maxmemory_policy = value.to_owned(),
                "evicted_keys" => s.evicted_keys = n,
                "keyspace_hits" => s.keyspace_hits = n,
                "keyspace_misses" => s.keyspace_misses = n,
                "instantaneous_ops_per_sec" => s.ops_per_sec = n,
                "connected_clients" => s.connected_clients = n,
                "master_repl_offset" => s.repl_offset = n,
                f if f == db_field => s.keys = fields(value, "keys"),
                f if f.starts_with("slave") && f[5..].parse::<u32>().is_ok() => {
                    let ip = text_field(value, "ip");
                    let port = text_field(value, "port");
                    replicas.push((
                        format!("{ip}:{port}"),
                        fields(value, "offset"),
                        fields(value, "lag"),
                    ));
                }
                _ => {}
            }
        }
        s.replicas = replicas
            .into_iter()
            .map(|(addr, offset, lag_secs)| Replica {
                addr,
                lag_bytes: s.repl_offset.saturating_sub(offset),
                lag_secs,
            })
            .collect();
        s
    }
}

/// `name=value` from a comma-separated INFO value.
fn text_field<'a>(value: &'a str, name: &str) -> &'a str {
    value
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| v)
}

/// A numeric `field:value` line of INFO text.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
}

fn fields(value: &str, name: &str) -> u64 {
    text_field(value, name).parse().unwrap_or(0)
}

impl Admin {
    /// `INFO` of every master, with each replica's lag read from the replica itself.
    pub fn server_stats(&self) -> Result<Vec<ServerStats>> {
        self.servers()
            .iter()
            .map(|addr| {
                let mut s =
                    ServerStats::parse(addr, &self.info(addr, b"all")?, self.config().redis_db);
                for r in &mut s.replicas {
                    if let Some(offset) = self
                        .info(&r.addr, b"replication")
                        .ok()
                        .and_then(|info| info_field(&info, "slave_repl_offset"))
                    {
                        r.lag_bytes = s.repl_offset.saturating_sub(offset);
                    }
                }
                Ok(s)
            })
            .collect()
    }

    fn info(&self, addr: &str, section: &[u8]) -> Result<String> {
        match self.on(addr, &[b"INFO", section])? {
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => Err(Error::new(
                ErrorKind::Server,
                format!("{addr}: INFO replied {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_text_is_read_field_by_field() {
        let info = "# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\
                    # Stats\r\nevicted_keys:7\r\nkeyspace_hits:30\r\nkeyspace_misses:10\r\n\
                    instantaneous_ops_per_sec:5\r\n# Replication\r\nrole:master\r\n\
                    slave0:ip=127.0.0.1,port=7001,state=online,offset=90,lag=1\r\n\
                    master_repl_offset:100\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n";
        let s = ServerStats::parse("h:1", info, 0);
        assert_eq!(s.used_memory, 1024);
        assert_eq!(s.maxmemory_policy, "noeviction");
        assert_eq!(
            (s.evicted_keys, s.keyspace_hits, s.keyspace_misses),
            (7, 30, 10)
        );
        assert_eq!(s.ops_per_sec, 5);
        assert_eq!(s.keys, 3);
        assert_eq!(
            s.replicas,
            vec![Replica {
                addr: "127.0.0.1:7001".into(),
                lag_bytes: 10,
                lag_secs: 1
            }]
        );
        assert_eq!(ServerStats::parse("h:1", info, 1).keys, 0);
    }
}
