//! The process's memory tables by (model tag, embedding name, layout): every table opened
//! under the same triple shares one [`Store`] (a Variable's shards and its optimizer's slot
//! tables see the same rows, as they share buckets on Redis). A table of the same name with
//! another layout (the Keras layer's fused-layout handle table, whose rows are never read)
//! gets a store of its own: on Redis such rows would share a bucket and fail to read at the
//! other width. Entries are weak, so a store is freed with its last table.

use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap;

use super::{Layout, Store};
use crate::error::Result;
use crate::sync;

type Key = (String, String, Layout);

static TABLES: Mutex<Option<FxHashMap<Key, Weak<Store>>>> = Mutex::new(None);

/// The store of (`model_tag`, `name`, `layout`), created empty if no live table holds it;
/// its row cap is the one it was created with.
pub fn open(
    model_tag: &str,
    name: &str,
    layout: Layout,
    max_rows: Option<u64>,
) -> Result<Arc<Store>> {
    let mut guard = sync::lock(&TABLES);
    sync::panic_point("memory_registry");
    let tables = guard.get_or_insert_with(FxHashMap::default);
    tables.retain(|_, w| w.strong_count() > 0);
    let key = (model_tag.to_owned(), name.to_owned(), layout);
    if let Some(store) = tables.get(&key).and_then(Weak::upgrade) {
        return Ok(store);
    }
    let store = Arc::new(Store::new(name, layout, max_rows));
    tables.insert(key, Arc::downgrade(&store));
    Ok(store)
}
