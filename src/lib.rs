//! redis-embedding: dynamic embedding tables for TensorFlow, kept in Redis with the exact
//! byte layout of TensorFlow Recommenders-Addons' Redis backend.
//!
//! The core is TensorFlow-free: [`Table`] takes keys and values as byte slices and talks to
//! Redis over pooled, pipelined connections. The `tf` feature adds the `cxx` bridge that the
//! C++ op kernels in `cc/` call.
//!
//! ```no_run
//! use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};
//! let cfg = Config::from_json(r#"{"redis_connection_mode": 2, "redis_host_port": [7000]}"#)?;
//! let spec = TableSpec::new("emb", KeyType::I64, ValueType::F32, 2);
//! let table = Table::open(cfg, spec)?;
//! let keys: Vec<u8> = [1i64, 2].iter().flat_map(|k| k.to_le_bytes()).collect();
//! let vals: Vec<u8> = [0.5f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let k = table.keys(&keys, &[])?;
//! table.insert(&k, &Rows::Fixed { data: &vals, row: 8 })?;
//! # Ok::<(), redis_embedding::Error>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), forbid(clippy::print_stdout))]

// Layers, bottom up (see ARCHITECTURE.md): shared ground (error, config, codec, plan, exec,
// stats, sync, progress, handoff), `resp` (one server), `cluster` (which server, fan-out, layout),
// `persist` (files), `table` (the ops), `admin` (operator commands for the CLI), `ffi` (the
// TensorFlow bridge).
mod accum;
pub mod admin;
mod cluster;
mod codec;
mod config;
mod error;
mod exec;
#[cfg(test)]
mod fuzz;
mod handoff;
mod memory;
mod optim;
mod persist;
mod plan;
mod progress;
mod resp;
mod stats;
mod sync;
mod table;

#[cfg(feature = "bridge")]
mod ffi;
#[cfg(feature = "bridge")]
mod logging;

pub use cluster::layout::{
    bucket_of, crc32c_raw, hash_tags, key_slot, prefix, slot_tag_table, topology_tags, Buckets,
};
pub use codec::{KeyType, Keys, Rows, ValueType};
pub use config::{
    resolve_path, Backend, Config, ConnectionMode, StoreMode, TrainUpdates, DEFAULT_CONFIG_ENV,
};
pub use error::{Error, ErrorKind, Result, ServerError};
pub use optim::{Accumulate, Clip, Init, Optimizer, Step};
pub use persist::files::resolve_dir;
pub use stats::stats;
pub use table::stats::TableStats;
pub use table::train::{LookupOut, Slots, Starts, Trainer};
pub use table::{ExportPlan, Exported, Shard, StrRows, Table, TableSpec};
