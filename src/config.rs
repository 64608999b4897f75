//! TFRA's Redis JSON config: the schema with its defaults and strict types, and where the
//! file is looked up. Everything here is validated before a connection is made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The environment variable TFRA consults when the op's own env attribute is not set.
pub const DEFAULT_CONFIG_ENV: &str = "TFRA_REDIS_CONFIG_PATH";

/// How the table reaches Redis (`redis_connection_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// 0: Redis Cluster.
    Cluster,
    /// 1: Sentinel-managed master (TFRA's default).
    Sentinel,
    /// 2: one standalone server.
    Standalone,
}

/// Where checkpoints keep the table (`table_store_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// 0: rows travel through the TF checkpoint as tensors.
    Tensors,
    /// 1: DUMP/RESTORE files under `model_lib_abs_dir`.
    RdbFiles,
    /// 2: nothing is saved; the data stays in Redis.
    InRedis,
}

/// Where a table's rows live (`rde_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `"redis"` (the default): Redis servers, as TFRA's Redis backend.
    Redis,
    /// `"memory"`: in this process, shared by model tag and name; nothing connects.
    Memory,
}

/// How the Keras layer's optimizer step writes a row (`rde_train_updates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainUpdates {
    /// `"exact"` (the default): each step's update is applied once to the row as it stands
    /// in Redis (compare-and-set against what the step read, recomputed when another writer
    /// changed the row), so no worker's update is lost.
    Exact,
    /// `"last_writer_wins"`: the row computed from the step's lookup is written as it is
    /// (TFRA's behaviour): concurrent workers overwrite each other's updates.
    LastWriterWins,
}

/// A parsed config with TFRA's field names and defaults. Each field means what it means in
/// TFRA; docs/config.md describes them all.
#[allow(missing_docs)]
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    pub redis_connection_mode: ConnectionMode,
    /// Whether the file sets `redis_connection_mode` (TFRA's default, 1, applies otherwise).
    pub redis_connection_mode_set: bool,
    pub redis_master_name: String,
    pub redis_host_ip: Vec<String>,
    pub redis_host_port: Vec<u16>,
    pub redis_user: String,
    pub redis_password: String,
    pub redis_db: i64,
    pub redis_read_access_slave: bool,
    pub redis_connect_keep_alive: bool,
    /// Milliseconds.
    pub redis_connect_timeout: u64,
    /// Milliseconds.
    pub redis_socket_timeout: u64,
    pub redis_conn_pool_size: usize,
    /// Milliseconds to wait for a free pooled connection.
    pub redis_wait_timeout: u64,
    /// Minutes after which a pooled connection is replaced.
    pub redis_connection_lifetime: u64,
    pub redis_sentinel_user: String,
    pub redis_sentinel_password: String,
    pub redis_sentinel_connect_timeout: u64,
    pub redis_sentinel_socket_timeout: u64,
    /// `storage_slice` of the stored layout; equals `storage_slice` when the JSON value is ≤ 0.
    pub storage_slice_import: u32,
    pub storage_slice: u32,
    pub using_hash_storage_slice: bool,
    pub keys_sending_size: usize,
    pub using_md5_prefix_name: bool,
    pub redis_hash_tags_hypodispersion: bool,
    pub model_tag_import: String,
    pub redis_hash_tags_import: Vec<String>,
    pub model_tag_runtime: String,
    pub redis_hash_tags_runtime: Vec<String>,
    pub expire_model_tag_in_seconds: i64,
    pub table_store_mode: StoreMode,
    pub model_lib_abs_dir: String,
    /// Extension: retries of a request after a redirect, a refused command or (for idempotent
    /// operations) a failed connection.
    pub rde_max_retries: u32,
    /// Extension: first backoff between retries in ms, doubled per retry up to 1 s.
    pub rde_retry_backoff_ms: u64,
    /// Extension: outside cluster mode, spread keys over all `storage_slice` buckets with
    /// TFRA's bucket rule instead of keeping them in bucket 0 (existing rows are moved once).
    pub rde_standalone_buckets: bool,
    /// Extension: how float32 rows are stored (`native`, `bfloat16` or `float16`).
    pub rde_value_storage: crate::codec::Storage,
    /// Extension: after each write pipeline, wait (Redis `WAIT`) until this many replicas
    /// have the writes; fewer within `rde_wait_replicas_timeout_ms` fails the write. 0 = off.
    pub rde_wait_replicas: u32,
    /// Extension: how long a write waits for `rde_wait_replicas` replicas, in ms.
    pub rde_wait_replicas_timeout_ms: u64,
    /// Extension: connect with TLS (to data nodes and sentinels).
    pub rde_tls: bool,
    /// Extension: PEM file of the CA certificates that sign the servers' certificates.
    pub rde_tls_ca_cert_file: String,
    /// Extension: PEM client certificate for servers that authenticate clients (optional).
    pub rde_tls_cert_file: String,
    /// Extension: PEM private key of `rde_tls_cert_file`.
    pub rde_tls_key_file: String,
    /// Extension: the name checked against the server certificates, instead of each host.
    pub rde_tls_server_name: String,
    /// Extension: open the table even when a server's `maxmemory-policy` can evict its keys
    /// (see `Table::open`'s eviction guard).
    pub rde_allow_eviction: bool,
    /// Extension: where rows live; with [`Backend::Memory`] no Redis field is used.
    pub rde_backend: Backend,
    /// Extension: for the memory backend, the most rows a table may hold (inserts past it
    /// fail with ResourceExhausted); None = no cap.
    pub rde_memory_max_rows: Option<u64>,
    /// Extension: how training steps write rows (see [`TrainUpdates`]).
    pub rde_train_updates: TrainUpdates,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_connection_mode: ConnectionMode::Sentinel,
            redis_connection_mode_set: false,
            redis_master_name: "master".into(),
            redis_host_ip: vec!["127.0.0.1".into()],
            redis_host_port: vec![6379],
            redis_user: "default".into(),
            redis_password: String::new(),
            redis_db: 0,
            redis_read_access_slave: false,
            redis_connect_keep_alive: false,
            redis_connect_timeout: 1000,
            redis_socket_timeout: 1000,
            redis_conn_pool_size: 20,
            redis_wait_timeout: 100_000_000,
            redis_connection_lifetime: 100,
            redis_sentinel_user: "default".into(),
            redis_sentinel_password: String::new(),
            redis_sentinel_connect_timeout: 1000,
            redis_sentinel_socket_timeout: 1000,
            storage_slice_import: 1,
            storage_slice: 1,
            using_hash_storage_slice: false,
            keys_sending_size: 1024,
            using_md5_prefix_name: false,
            redis_hash_tags_hypodispersion: false,
            model_tag_import: "test".into(),
            redis_hash_tags_import: Vec::new(),
            model_tag_runtime: "test".into(),
            redis_hash_tags_runtime: Vec::new(),
            expire_model_tag_in_seconds: 604_800,
            table_store_mode: StoreMode::RdbFiles,
            model_lib_abs_dir: "/tmp/".into(),
            rde_max_retries: 8,
            rde_retry_backoff_ms: 50,
            rde_standalone_buckets: false,
            rde_value_storage: crate::codec::Storage::Native,
            rde_wait_replicas: 0,
            rde_wait_replicas_timeout_ms: 1000,
            rde_tls: false,
            rde_tls_ca_cert_file: String::new(),
            rde_tls_cert_file: String::new(),
            rde_tls_key_file: String::new(),
            rde_tls_server_name: String::new(),
            rde_allow_eviction: false,
            rde_backend: Backend::Redis,
            rde_memory_max_rows: None,
            rde_train_updates: TrainUpdates::Exact,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords never leave the process through Debug output.
        f.debug_struct("Config")
            .field("redis_connection_mode", &self.redis_connection_mode)
            .field("redis_host_ip", &self.redis_host_ip)
            .field("redis_host_port", &self.redis_host_port)
            .field("redis_user", &self.redis_user)
            .field("redis_password", &"<redacted>")
            .field("redis_db", &self.redis_db)
            .field("storage_slice", &self.storage_slice)
            .field("model_tag_runtime", &self.model_tag_runtime)
            .field("table_store_mode", &self.table_store_mode)
            .field("rde_tls", &self.rde_tls)
            .field("rde_backend", &self.rde_backend)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Parses TFRA's JSON. Unknown fields are ignored (with a log line); a duplicate field
    /// keeps its last value; every type or range error names the field.
    pub fn from_json(text: &str) -> Result<Config> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("redis config is not valid JSON: {e}")))?;
        let obj = root
            .as_object()
            .ok_or_else(|| Error::invalid("redis config must be a JSON object"))?;
        let mut c = Config::default();
        let mut slice_import: i64 = -1;
        for (name, v) in obj {
            let f = Field { name, v };
            if !c.set_tfra_field(&f, &mut slice_import)? && !c.set_rde_field(&f)? {
                log::warn!("redis config: unknown field {name:?} is ignored");
            }
        }
        c.storage_slice_import = if slice_import <= 0 {
            c.storage_slice
        } else {
            slice_import as u32
        };
        c.validate()?;
        Ok(c)
    }

    /// Sets the TFRA field `f` (`storage_slice_import` into `slice_import`, resolved once
    /// every field is read); false if `f` is not one of TFRA's.
    fn set_tfra_field(&mut self, f: &Field<'_>, slice_import: &mut i64) -> Result<bool> {
        match f.name {
            "redis_connection_mode" => {
                self.redis_connection_mode_set = true;
                self.redis_connection_mode = match f.int()? {
                    0 => ConnectionMode::Cluster,
                    1 => ConnectionMode::Sentinel,
                    2 => ConnectionMode::Standalone,
                    n => return Err(f.range(n, "0 (cluster), 1 (sentinel) or 2 (standalone)")),
                }
            }
            "redis_master_name" => self.redis_master_name = f.string()?,
            "redis_host_ip" => self.redis_host_ip = f.strings()?,
            "redis_host_port" => {
                self.redis_host_port = f
                    .ints()?
                    .into_iter()
                    .map(|p| u16::try_from(p).map_err(|_| f.range(p, "a TCP port 0..=65535")))
                    .collect::<Result<_>>()?
            }
            "redis_user" => self.redis_user = f.string()?,
            "redis_password" => self.redis_password = f.string()?,
            "redis_db" => self.redis_db = f.int_in(0, i64::from(u32::MAX))?,
            "redis_read_access_slave" => self.redis_read_access_slave = f.boolean()?,
            "redis_connect_keep_alive" => self.redis_connect_keep_alive = f.boolean()?,
            "redis_connect_timeout" => self.redis_connect_timeout = f.millis()?,
            "redis_socket_timeout" => self.redis_socket_timeout = f.millis()?,
            "redis_conn_pool_size" => self.redis_conn_pool_size = f.int_in(1, 4096)? as usize,
            "redis_wait_timeout" => self.redis_wait_timeout = f.millis()?,
            "redis_connection_lifetime" => {
                self.redis_connection_lifetime = f.int_in(0, i64::MAX)? as u64
            }
            "redis_sentinel_user" => self.redis_sentinel_user = f.string()?,
            "redis_sentinel_password" => self.redis_sentinel_password = f.string()?,
            "redis_sentinel_connect_timeout" => self.redis_sentinel_connect_timeout = f.millis()?,
            "redis_sentinel_socket_timeout" => self.redis_sentinel_socket_timeout = f.millis()?,
            "storage_slice_import" => *slice_import = f.int_in(i64::MIN, 16384)?,
            "storage_slice" => self.storage_slice = f.int_in(1, 16384)? as u32,
            "using_hash_storage_slice" => self.using_hash_storage_slice = f.boolean()?,
            "keys_sending_size" => self.keys_sending_size = f.int_in(1, 1 << 20)? as usize,
            "using_md5_prefix_name" => self.using_md5_prefix_name = f.boolean()?,
            "redis_hash_tags_hypodispersion" => {
                self.redis_hash_tags_hypodispersion = f.boolean()?
            }
            "model_tag_import" => self.model_tag_import = f.string()?,
            "redis_hash_tags_import" => self.redis_hash_tags_import = f.strings()?,
            "model_tag_runtime" => self.model_tag_runtime = f.string()?,
            "redis_hash_tags_runtime" => self.redis_hash_tags_runtime = f.strings()?,
            "expire_model_tag_in_seconds" => self.expire_model_tag_in_seconds = f.int()?,
            "table_store_mode" => {
                self.table_store_mode = match f.int()? {
                    0 => StoreMode::Tensors,
                    1 => StoreMode::RdbFiles,
                    2 => StoreMode::InRedis,
                    n => return Err(f.range(n, "0, 1 or 2")),
                }
            }
            "model_lib_abs_dir" => self.model_lib_abs_dir = f.string()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Sets the field `f` of this library's own (`rde_…`); false if it is not one.
    fn set_rde_field(&mut self, f: &Field<'_>) -> Result<bool> {
        match f.name {
            "rde_max_retries" => self.rde_max_retries = f.int_in(0, 1000)? as u32,
            "rde_retry_backoff_ms" => self.rde_retry_backoff_ms = f.int_in(0, 60_000)? as u64,
            "rde_standalone_buckets" => self.rde_standalone_buckets = f.boolean()?,
            "rde_value_storage" => {
                let v = f.string()?;
                self.rde_value_storage = crate::codec::Storage::parse(&v).ok_or_else(|| {
                    Error::invalid(format!(
                    "rde_value_storage = {v:?} is not one of \"native\", \"bfloat16\", \"float16\""
                ))
                })?;
            }
            "rde_wait_replicas" => self.rde_wait_replicas = f.int_in(0, 64)? as u32,
            "rde_wait_replicas_timeout_ms" => {
                self.rde_wait_replicas_timeout_ms = f.int_in(1, 3_600_000)? as u64
            }
            "rde_tls" => self.rde_tls = f.boolean()?,
            "rde_tls_ca_cert_file" => self.rde_tls_ca_cert_file = f.string()?,
            "rde_tls_cert_file" => self.rde_tls_cert_file = f.string()?,
            "rde_tls_key_file" => self.rde_tls_key_file = f.string()?,
            "rde_tls_server_name" => self.rde_tls_server_name = f.string()?,
            "rde_allow_eviction" => self.rde_allow_eviction = f.boolean()?,
            "rde_backend" => {
                self.rde_backend = match f.string()?.as_str() {
                    "redis" => Backend::Redis,
                    "memory" => Backend::Memory,
                    v => {
                        return Err(Error::invalid(format!(
                            "rde_backend = {v:?} is not one of \"redis\", \"memory\""
                        )))
                    }
                }
            }
            "rde_memory_max_rows" => self.rde_memory_max_rows = Some(f.int_in(1, i64::MAX)? as u64),
            "rde_train_updates" => {
                self.rde_train_updates = match f.string()?.as_str() {
                    "exact" => TrainUpdates::Exact,
                    "last_writer_wins" => TrainUpdates::LastWriterWins,
                    v => {
                        return Err(Error::invalid(format!(
                        "rde_train_updates = {v:?} is not one of \"exact\", \"last_writer_wins\""
                    )))
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Reads and parses the file at `path`. A missing or empty file is NotFound.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file("unable to read redis config file", path, e))?;
        if text.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("redis config file {} is empty", path.display()),
            ));
        }
        let cfg = Config::from_json(&text)
            .map_err(|e| e.context(format!("redis config file {}", path.display())))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if let Some(w) = cfg.exposure_warning(path, meta.permissions().mode()) {
                log::warn!("{w}");
            }
        }
        Ok(cfg)
    }

    /// A warning when a config file holding a password can be read by other users.
    fn exposure_warning(&self, path: &Path, mode: u32) -> Option<String> {
        let secret = !self.redis_password.is_empty() || !self.redis_sentinel_password.is_empty();
        (secret && mode & 0o077 != 0).then(|| {
            format!(
                "redis config file {} holds a password but its mode is {:o}: other users can read it; run chmod 600 on it",
                path.display(),
                mode & 0o777
            )
        })
    }

    /// Cross-field checks.
    fn validate(&self) -> Result<()> {
        if self.rde_backend == Backend::Memory {
            // Nothing connects: the server fields are not used.
            return Ok(());
        }
        if self.rde_memory_max_rows.is_some() {
            log::warn!(
                "redis config: rde_memory_max_rows applies to rde_backend \"memory\" only; ignored"
            );
        }
        if self.redis_host_ip.is_empty() {
            return Err(Error::invalid("redis_host_ip must list at least one host"));
        }
        if self.redis_host_ip.len() != self.redis_host_port.len() {
            return Err(Error::invalid(format!(
                "redis_host_ip has {} entries but redis_host_port has {}; they must be parallel lists",
                self.redis_host_ip.len(),
                self.redis_host_port.len()
            )));
        }
        if self.rde_tls && self.rde_tls_ca_cert_file.is_empty() {
            return Err(Error::invalid(
                "rde_tls is true but rde_tls_ca_cert_file is not set: give the PEM file of the CA that signed the servers' certificates",
            ));
        }
        if self.rde_tls_cert_file.is_empty() != self.rde_tls_key_file.is_empty() {
            return Err(Error::invalid(
                "rde_tls_cert_file and rde_tls_key_file must be given together (client certificate and its key)",
            ));
        }
        if self.redis_connection_mode == ConnectionMode::Cluster && self.redis_db != 0 {
            return Err(Error::invalid(
                "redis_db must be 0 in cluster mode (redis_connection_mode 0)",
            ));
        }
        Ok(())
    }

    /// Connect timeout as a Duration (at least 1 ms: zero would mean "no timeout" to the OS).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_connect_timeout.max(1))
    }

    /// Per-request socket timeout.
    pub fn socket_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_socket_timeout.max(1))
    }

    /// `host:port` of server `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.redis_host_ip[i], self.redis_host_port[i])
    }

    /// The connection mode in effect and the hosts it uses, for errors at table creation:
    /// `redis_connection_mode 1 (sentinel, TFRA's default: the config does not set it) via
    /// sentinels 127.0.0.1:26379`.
    pub fn mode_in_effect(&self) -> String {
        let hosts = (0..self.redis_host_ip.len().min(self.redis_host_port.len()))
            .map(|i| self.addr(i))
            .collect::<Vec<_>>()
            .join(", ");
        let (n, name, via) = match self.redis_connection_mode {
            ConnectionMode::Cluster => (0, "cluster", "seeds"),
            ConnectionMode::Sentinel => (1, "sentinel", "sentinels"),
            ConnectionMode::Standalone => (2, "standalone", "server"),
        };
        let default = if self.redis_connection_mode_set {
            ""
        } else {
            ", TFRA's default: the config does not set it"
        };
        format!("redis_connection_mode {n} ({name}{default}) via {via} {hosts}")
    }

    /// What to set when the mode in effect does not match the servers.
    pub fn mode_hint(&self) -> &'static str {
        match self.redis_connection_mode {
            ConnectionMode::Cluster => {
                "If these are not Redis Cluster nodes, set \"redis_connection_mode\": 2 for one \
                 plain server or 1 for sentinels"
            }
            ConnectionMode::Sentinel => {
                "For one plain Redis server set \"redis_connection_mode\": 2, for a Redis Cluster \
                 set 0; in mode 1 every redis_host_ip/redis_host_port entry is a sentinel"
            }
            ConnectionMode::Standalone => {
                "If these are sentinels set \"redis_connection_mode\": 1, for a Redis Cluster \
                 set 0"
            }
        }
    }

    /// The same settings for one plain server at `redis_host_ip[0]:redis_host_port[0]`:
    /// what mode 1 falls back to when that host is a Redis master rather than a sentinel.
    pub(crate) fn as_standalone(&self) -> Config {
        let mut c = self.clone();
        c.redis_connection_mode = ConnectionMode::Standalone;
        c.redis_host_ip.truncate(1);
        c.redis_host_port.truncate(1);
        c
    }
}

/// Chooses the config file as TFRA's kernel does: the env var named by the op attribute
/// `env_attr`, then `TFRA_REDIS_CONFIG_PATH`, then the op attribute `path_attr`.
pub fn resolve_path(path_attr: &str, env_attr: &str) -> Result<PathBuf> {
    if !env_attr.is_empty() {
        if let Some(p) = std::env::var_os(env_attr).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
    }
    if let Some(p) = std::env::var_os(DEFAULT_CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if path_attr.is_empty() {
        let env_hint = if env_attr.is_empty() {
            String::new()
        } else {
            format!(", environment variable {env_attr}")
        };
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no redis config file given: set redis_config_abs_dir{env_hint} or {DEFAULT_CONFIG_ENV}"
            ),
        ));
    }
    Ok(PathBuf::from(path_attr))
}

/// One JSON field being read, so every error names it.
struct Field<'a> {
    name: &'a str,
    v: &'a Value,
}

impl Field<'_> {
    fn wrong(&self, want: &str) -> Error {
        // A mistyped secret is still a secret: name the field, not the value.
        let got = if self.name.contains("password") {
            "a value of another type".to_owned()
        } else {
            self.v.to_string()
        };
        Error::invalid(format!("{} should be json {want}, got {got}", self.name))
    }

    fn range(&self, n: i64, want: &str) -> Error {
        Error::invalid(format!(
            "{} = {n} is out of range: expected {want}",
            self.name
        ))
    }

    fn int(&self) -> Result<i64> {
        self.v.as_i64().ok_or_else(|| self.wrong("integer"))
    }

    fn int_in(&self, lo: i64, hi: i64) -> Result<i64> {
        let n = self.int()?;
        if n < lo || n > hi {
            return Err(self.range(n, &format!("{lo}..={hi}")));
        }
        Ok(n)
    }

    fn millis(&self) -> Result<u64> {
        Ok(self.int_in(0, i64::MAX)? as u64)
    }

    fn boolean(&self) -> Result<bool> {
        self.v.as_bool().ok_or_else(|| self.wrong("boolean"))
    }

    fn string(&self) -> Result<String> {
        self.v
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.wrong("string"))
    }

    fn array(&self, want: &str) -> Result<&Vec<Value>> {
        self.v.as_array().ok_or_else(|| self.wrong(want))
    }

    fn ints(&self) -> Result<Vec<i64>> {
        self.array("integer array")?
            .iter()
            .map(|x| x.as_i64().ok_or_else(|| self.wrong("integer array")))
            .collect()
    }

    fn strings(&self) -> Result<Vec<String>> {
        self.array("string array")?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.wrong("string array"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> Error {
        Config::from_json(json).unwrap_err()
    }

    #[test]
    fn defaults_are_tfras() {
        let c = Config::from_json("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.redis_connection_mode, ConnectionMode::Sentinel);
        assert_eq!(c.table_store_mode, StoreMode::RdbFiles);
        assert_eq!(c.storage_slice_import, 1);
        assert_eq!(c.keys_sending_size, 1024);
        // The defaults docs/operations.md states.
        assert_eq!((c.rde_max_retries, c.rde_retry_backoff_ms), (8, 50));
        assert_eq!(c.redis_wait_timeout, 100_000_000, "TFRA's 27.8 hours");
        assert_eq!(c.expire_model_tag_in_seconds, 7 * 24 * 3600);
    }

    #[test]
    fn the_backend_field_is_strict_and_memory_needs_no_server() {
        let c = Config::from_json(r#"{"rde_backend": "memory", "redis_host_ip": []}"#).unwrap();
        assert_eq!(
            (c.rde_backend, c.rde_memory_max_rows),
            (Backend::Memory, None)
        );
        let c = Config::from_json(r#"{"rde_backend": "memory", "rde_memory_max_rows": 5}"#);
        assert_eq!(c.unwrap().rde_memory_max_rows, Some(5));
        assert_eq!(Config::default().rde_backend, Backend::Redis);
        assert_eq!(Config::default().rde_train_updates, TrainUpdates::Exact);
        let c = Config::from_json(r#"{"rde_train_updates": "last_writer_wins"}"#).unwrap();
        assert_eq!(c.rde_train_updates, TrainUpdates::LastWriterWins);
        let e = err(r#"{"rde_train_updates": "lww"}"#).to_string();
        assert!(
            e.contains(r#"rde_train_updates = "lww" is not one of"#),
            "{e}"
        );
        let e = err(r#"{"rde_backend": "Memory"}"#).to_string();
        assert!(e.contains(r#"rde_backend = "Memory" is not one of"#), "{e}");
        assert!(err(r#"{"rde_backend": 1}"#)
            .message()
            .starts_with("rde_backend should be"));
        assert!(err(r#"{"rde_memory_max_rows": 0}"#)
            .message()
            .contains("rde_memory_max_rows = 0"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = err(r#"{"redis_host_port": 6379}"#);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message()
                .starts_with("redis_host_port should be json integer array"),
            "{e}"
        );
        assert!(err(r#"{"storage_slice": 1.5}"#)
            .message()
            .starts_with("storage_slice should be json integer"));
        assert!(err(r#"{"redis_read_access_slave": 1}"#)
            .message()
            .starts_with("redis_read_access_slave should be json boolean"));
        assert!(err(r#"{"model_tag_runtime": 3}"#)
            .message()
            .starts_with("model_tag_runtime should be json string"));
        assert!(err(r#"{"redis_host_ip": ["a", 1]}"#)
            .message()
            .starts_with("redis_host_ip should be json string array"));
    }

    #[test]
    fn range_and_cross_field_errors() {
        assert!(err(r#"{"storage_slice": 0}"#)
            .message()
            .contains("storage_slice = 0"));
        assert!(err(r#"{"redis_connection_mode": 3}"#)
            .message()
            .contains("redis_connection_mode = 3"));
        assert!(err(r#"{"table_store_mode": -1}"#)
            .message()
            .contains("table_store_mode"));
        assert!(err(r#"{"redis_host_port": [70000]}"#)
            .message()
            .contains("redis_host_port = 70000"));
        let e = err(r#"{"redis_host_ip": ["a", "b"], "redis_host_port": [1]}"#);
        assert!(
            e.message()
                .contains("redis_host_ip has 2 entries but redis_host_port has 1"),
            "{e}"
        );
        assert!(err("{not json").message().contains("not valid JSON"));
        assert!(err("[1]").message().contains("JSON object"));
    }

    #[test]
    fn storage_slice_import_defaults_to_storage_slice_and_last_duplicate_wins() {
        let c = Config::from_json(r#"{"storage_slice": 4, "storage_slice": 3}"#).unwrap();
        assert_eq!((c.storage_slice, c.storage_slice_import), (3, 3));
        let c = Config::from_json(r#"{"storage_slice": 4, "storage_slice_import": 2}"#).unwrap();
        assert_eq!(c.storage_slice_import, 2);
    }

    #[test]
    fn missing_or_empty_files_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::from_file(&dir.path().join("nope.json")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("nope.json"));
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "  \n").unwrap();
        assert_eq!(
            Config::from_file(&empty).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = Config::from_json(r#"{"redis_password": "hunter2"}"#).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn readable_files_with_passwords_are_flagged() {
        let p = Path::new("/etc/redis.json");
        let with = Config::from_json(r#"{"redis_password": "pw"}"#).unwrap();
        let w = with.exposure_warning(p, 0o100644).unwrap();
        assert!(w.contains("mode is 644") && w.contains("chmod 600"), "{w}");
        assert!(!w.contains("pw\""));
        assert_eq!(with.exposure_warning(p, 0o100600), None);
        let sentinel = Config::from_json(r#"{"redis_sentinel_password": "pw"}"#).unwrap();
        assert!(sentinel.exposure_warning(p, 0o100640).is_some());
        assert_eq!(Config::default().exposure_warning(p, 0o100666), None);
    }

    #[test]
    fn a_mistyped_password_is_not_echoed() {
        let e = err(r#"{"redis_password": 271828}"#);
        assert!(e
            .message()
            .starts_with("redis_password should be json string"));
        assert!(!e.message().contains("271828"), "{e}");
        let e = err(r#"{"redis_sentinel_password": ["s3cret"]}"#);
        assert!(!e.message().contains("s3cret"), "{e}");
    }

    #[test]
    fn tls_fields_are_checked_together() {
        assert!(err(r#"{"rde_tls": true}"#)
            .message()
            .contains("rde_tls_ca_cert_file is not set"));
        assert!(err(r#"{"rde_tls_cert_file": "c.pem"}"#)
            .message()
            .contains("must be given together"));
        let c = Config::from_json(
            r#"{"rde_tls": true, "rde_tls_ca_cert_file": "ca.pem", "rde_tls_server_name": "redis"}"#,
        )
        .unwrap();
        assert!(c.rde_tls);
        assert_eq!(c.rde_tls_server_name, "redis");
    }

    #[test]
    fn allow_eviction_is_a_boolean_that_defaults_to_false() {
        assert!(!Config::from_json("{}").unwrap().rde_allow_eviction);
        let c = Config::from_json(r#"{"rde_allow_eviction": true}"#).unwrap();
        assert!(c.rde_allow_eviction);
        assert!(err(r#"{"rde_allow_eviction": "yes"}"#)
            .message()
            .starts_with("rde_allow_eviction should be json boolean"));
    }
}
