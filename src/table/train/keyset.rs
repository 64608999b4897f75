//! `KeySet`: a batch's distinct keys, owned, with each position's distinct index.

use rustc_hash::FxHashMap;

use crate::codec::Keys;
use crate::error::Result;

/// Distinct keys in first-seen order (owned bytes) and, per input position, its key's index.
pub(super) struct KeySet {
    width: Option<usize>,
    data: Vec<u8>,
    offsets: Vec<u64>,
    /// Position → distinct index.
    pub of: Vec<u32>,
}

impl KeySet {
    /// De-duplicates `keys`.
    pub fn new(keys: &Keys<'_>) -> KeySet {
        let n = keys.len();
        let mut set = KeySet {
            width: match *keys {
                Keys::Fixed { width, .. } => Some(width),
                Keys::Var { .. } => None,
            },
            data: Vec::new(),
            offsets: vec![0],
            of: Vec::with_capacity(n),
        };
        let mut index: FxHashMap<&[u8], u32> = FxHashMap::default();
        index.reserve(n);
        for i in 0..n {
            let key = keys.get(i);
            let next = index.len() as u32;
            let d = *index.entry(key).or_insert_with(|| {
                set.data.extend_from_slice(key);
                set.offsets.push(set.data.len() as u64);
                next
            });
            set.of.push(d);
        }
        set
    }

    /// An empty set with the key layout of `like`.
    pub fn empty_like(like: &KeySet) -> KeySet {
        KeySet {
            width: like.width,
            data: Vec::new(),
            offsets: vec![0],
            of: Vec::new(),
        }
    }

    /// Appends a distinct key (the caller checks it is new).
    pub fn push(&mut self, key: &[u8]) {
        self.data.extend_from_slice(key);
        self.offsets.push(self.data.len() as u64);
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Distinct key `d`.
    pub fn get(&self, d: usize) -> &[u8] {
        &self.data[self.offsets[d] as usize..self.offsets[d + 1] as usize]
    }

    /// The distinct keys as a batch for the table ops.
    pub fn keys(&self) -> Result<Keys<'_>> {
        Ok(match self.width {
            Some(width) => Keys::Fixed {
                data: &self.data,
                width,
            },
            None => Keys::Var {
                data: &self.data,
                offsets: &self.offsets,
            },
        })
    }
}
