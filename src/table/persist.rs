//! The Redis side of `crate::persist`: `table_store_mode` 1 (each bucket DUMPed to a file,
//! RESTOREd on import) and the model-tag copy done when a table opens (`save_to_files` /
//! `load_from_files` for both backends are in `files_io.rs`).

use super::{RedisTable, TableSpec};
use crate::cluster::dispatch::Retry;
use crate::cluster::layout::{self, display_bytes, Buckets};
use crate::cluster::layout_store::{self, Layout};
use crate::cluster::rehash::Mover;
use crate::cluster::route::{Access, Router};
use crate::codec::KeyType;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::exec;
use crate::persist::rdb;
use crate::resp::conn::Reply;

impl RedisTable {
    pub(super) fn dump_buckets(&self) -> Result<()> {
        let dir = rdb::dir(&self.cfg.model_lib_abs_dir, &self.cfg.model_tag_runtime)?;
        // One bucket's file is written while the server dumps the next; each worker holds
        // one bucket's payload.
        self.each_bucket_in_parallel(&self.all_buckets(), |i| {
            let b = self.buckets.name(i);
            let payload =
                match layout_store::call(&self.router, self.retry, b, Access::Read, &[b"DUMP", b])?
                {
                    Reply::Bulk(p) => p,
                    Reply::Nil => Vec::new(), // an empty bucket: an empty file
                    other => {
                        return Err(Error::new(
                            ErrorKind::Server,
                            format!("DUMP of {} replied {other:?}", display_bytes(b)),
                        ))
                    }
                };
            rdb::write_file(&dir.join(rdb::file_name(b)), &payload)
        })?;
        exec::trim_heap();
        log::info!(
            "saved {} bucket(s) of {} to {}",
            self.buckets.len(),
            self.spec.embedding_name,
            dir.display()
        );
        Ok(())
    }

    /// Mode 1 restore: every import bucket's file is RESTOREd (REPLACE) into the runtime
    /// bucket of the same tag; when the import and runtime layouts differ, into a staging
    /// bucket that is then rehashed into the runtime layout. An empty file empties its bucket.
    pub(super) fn restore_buckets(&self) -> Result<()> {
        let cfg = &self.cfg;
        let dir = rdb::dir(&cfg.model_lib_abs_dir, &cfg.model_tag_import)?;
        let name = &self.spec.embedding_name;
        let import = layout_store::import_layout(cfg, name, &self.router, self.retry)?;
        let runtime_prefix =
            layout::prefix(&cfg.model_tag_runtime, name, cfg.using_md5_prefix_name);
        // The import buckets under the runtime prefix: the runtime layout itself when the tags
        // and rule agree, else a staging layout to rehash from.
        let staging = Layout {
            buckets: Buckets::new(&runtime_prefix, &import.tags),
            ..import.clone()
        };
        let direct = staging.buckets == self.buckets && staging.rule == self.layout.rule;
        if !direct {
            self.per_bucket(&self.all_buckets(), b"UNLINK", &[], Access::Write)?;
        }
        for (src, dst) in import.buckets.names().iter().zip(staging.buckets.names()) {
            let payload = rdb::read_file(&dir.join(rdb::file_name(src)))?;
            if payload.is_empty() {
                layout_store::call(
                    &self.router,
                    self.retry,
                    dst,
                    Access::Write,
                    &[b"UNLINK", dst],
                )?;
            } else {
                layout_store::call(
                    &self.router,
                    self.retry,
                    dst,
                    Access::Write,
                    &[b"RESTORE", dst, b"0", &payload, b"REPLACE"],
                )
                .map_err(|e| {
                    e.context(format!(
                        "restoring {} from {}",
                        display_bytes(dst),
                        dir.display()
                    ))
                })?;
            }
        }
        if !direct {
            let mover = Mover {
                router: &self.router,
                retry: self.retry,
                batch: cfg.keys_sending_size,
                numeric: self.spec.key_type != KeyType::Str,
                hashed: cfg.using_hash_storage_slice,
                name,
            };
            mover.migrate("rehash after restore", &staging, &self.layout, true)?;
        }
        self.note_armed(&self.all_buckets(), &vec![0; self.buckets.len()]);
        self.touch(&self.bucket_chunks());
        Ok(())
    }
}

/// Copies the model version `model_tag_import` into this table's runtime buckets when the
/// runtime version is empty (or an earlier copy was interrupted). The source is left as is.
pub(super) fn copy_model_tag(
    cfg: &Config,
    spec: &TableSpec,
    router: &Router,
    retry: Retry,
    mover: &Mover<'_>,
    target: &Layout,
) -> Result<()> {
    let source = layout_store::import_layout(cfg, &spec.embedding_name, router, retry)?;
    let runtime_prefix = layout::prefix(
        &cfg.model_tag_runtime,
        &spec.embedding_name,
        cfg.using_md5_prefix_name,
    );
    let mut marker = b"rde-copy:".to_vec();
    marker.extend(layout_store::record_key(&runtime_prefix));
    let interrupted = !matches!(
        layout_store::call(router, retry, &marker, Access::Write, &[b"GET", &marker])?,
        Reply::Nil
    );
    if !interrupted && mover.count(target)? > 0 {
        return Ok(());
    }
    let n_src = mover.count(&source)?;
    if n_src == 0 {
        return Ok(());
    }
    layout_store::call(
        router,
        retry,
        &marker,
        Access::Write,
        &[b"SET", &marker, cfg.model_tag_import.as_bytes()],
    )?;
    mover.migrate("model-tag copy", &source, target, false)?;
    let n_dst = mover.count(target)?;
    if n_dst < n_src {
        return Err(Error::data(format!(
            "model-tag copy {:?} → {:?} of {:?}: {n_src} rows in the source but only {n_dst} in the copy",
            cfg.model_tag_import, cfg.model_tag_runtime, spec.embedding_name
        )));
    }
    layout_store::call(router, retry, &marker, Access::Write, &[b"DEL", &marker])?;
    Ok(())
}
