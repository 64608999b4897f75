//! The process's memory tables by (model tag, embedding name): every table opened under the
//! same pair shares one [`Store`] (a Variable's shards and its optimizer's slot tables see
//! the same rows, as they share buckets on Redis). Entries are weak, so a store is freed with
//! its last table.

use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap;

use super::{Layout, Store};
use crate::error::{Error, Result};
use crate::sync;

type Key = (String, String);

static TABLES: Mutex<Option<FxHashMap<Key, Weak<Store>>>> = Mutex::new(None);

/// The store of (`model_tag`, `name`), created empty if no live table holds it. An existing
/// store of another layout is refused; its row cap is the one it was created with.
pub fn open(
    model_tag: &str,
    name: &str,
    layout: Layout,
    max_rows: Option<u64>,
) -> Result<Arc<Store>> {
    let mut guard = sync::lock(&TABLES);
    let tables = guard.get_or_insert_with(FxHashMap::default);
    tables.retain(|_, w| w.strong_count() > 0);
    let key = (model_tag.to_owned(), name.to_owned());
    if let Some(store) = tables.get(&key).and_then(Weak::upgrade) {
        let have = store.layout();
        if have != layout {
            return Err(Error::invalid(format!(
                "memory table {name:?} (model tag {model_tag:?}) is already open in this process \
                 with {:?} keys, {} values of dim {}; this one has {:?} keys, {} values of dim {}",
                have.key,
                have.value.tf_name(),
                have.dim,
                layout.key,
                layout.value.tf_name(),
                layout.dim
            )));
        }
        return Ok(store);
    }
    let store = Arc::new(Store::new(name, layout, max_rows));
    tables.insert(key, Arc::downgrade(&store));
    Ok(store)
}
