//! The file layer: checkpoint files on local disk (TFRA's key/value file pairs, the bucket
//! files of `table_store_mode` 1, and the block writer under both). It never talks to Redis.

pub(crate) mod block_file;
pub(crate) mod files;
pub(crate) mod rdb;
