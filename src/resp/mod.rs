//! The RESP layer: one connection (TCP or TLS), its pool, and the TLS settings. It speaks
//! RESP2 to one server and knows nothing of tables, buckets or cluster topology.

pub(crate) mod conn;
mod decode;
mod encode;
pub(crate) mod pool;
pub(crate) mod tls;
