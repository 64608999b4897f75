//! The cluster layer: which server owns a key (topology, routing), how a batch of commands
//! is fanned out and retried across servers (dispatch over the `Servers` trait, with Redis
//! pipelines as its real implementation), and where a table's rows live (bucket layout, its
//! persisted record, rehash, the page reader of a bucket hash). It works on commands and buckets, never on a `Table`.

pub(crate) mod dispatch;
pub(crate) mod layout;
pub(crate) mod layout_store;
pub(crate) mod md5;
pub(crate) mod pipeline;
pub(crate) mod rehash;
pub(crate) mod route;
pub(crate) mod scan;
