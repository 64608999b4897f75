//! One shard of a memory table: a hash index from key to a slot, and the slots' values.
//! Numeric keys are the index's own `u64`s and fixed-size values live in one contiguous arena,
//! so a row costs no heap allocation of its own; freed slots are reused.

use rustc_hash::FxHashMap;

/// Key → slot.
enum Index {
    /// int32/int64 keys, zero-extended little-endian.
    Num(FxHashMap<u64, u32>),
    /// String keys own their bytes.
    Str(FxHashMap<Box<[u8]>, u32>),
}

/// Slot → value bytes.
enum Values {
    /// Fixed-size rows: slot `s` is `arena[s * row..(s + 1) * row]`.
    Fixed { arena: Vec<u8>, row: usize },
    /// String rows (encoded as on Redis), one allocation each.
    Var(Vec<Box<[u8]>>),
}

/// One shard's rows.
pub(super) struct Shard {
    index: Index,
    values: Values,
    /// Slots of removed rows, reused before the arena grows.
    free: Vec<u32>,
}

/// A numeric key's bytes as the index's `u64`.
#[inline]
pub(super) fn num(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..key.len()].copy_from_slice(key);
    u64::from_le_bytes(b)
}

impl Shard {
    /// An empty shard; `row` is None for string values.
    pub(super) fn new(numeric: bool, row: Option<usize>) -> Shard {
        Shard {
            index: if numeric {
                Index::Num(FxHashMap::default())
            } else {
                Index::Str(FxHashMap::default())
            },
            values: match row {
                Some(row) => Values::Fixed {
                    arena: Vec::new(),
                    row,
                },
                None => Values::Var(Vec::new()),
            },
            free: Vec::new(),
        }
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        match &self.index {
            Index::Num(m) => m.len(),
            Index::Str(m) => m.len(),
        }
    }

    /// The slot holding `key`'s row.
    #[inline]
    pub(super) fn slot(&self, key: &[u8]) -> Option<u32> {
        match &self.index {
            Index::Num(m) => m.get(&num(key)).copied(),
            Index::Str(m) => m.get(key).copied(),
        }
    }

    /// The row in `slot`.
    #[inline]
    pub(super) fn value(&self, slot: u32) -> &[u8] {
        match &self.values {
            Values::Fixed { arena, row } => {
                let at = slot as usize * row;
                &arena[at..at + row]
            }
            Values::Var(v) => &v[slot as usize],
        }
    }

    /// The stored row of `key`.
    #[cfg(test)]
    pub(super) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.slot(key).map(|s| self.value(s))
    }

    /// Hints the CPU to start loading the fixed-size row in `slot` (at most its first 1 KB),
    /// so the rows of a block of keys load in parallel instead of one miss after another.
    #[inline]
    pub(super) fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        if let Values::Fixed { arena, row } = &self.values {
            let at = slot as usize * row;
            for line in (at..at + (*row).min(1024)).step_by(64) {
                // SAFETY: `line` is inside the arena; a prefetch has no architectural effect.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(arena.as_ptr().add(line).cast());
                }
            }
        }
    }

    /// The stored fixed-size row of `key`, to change in place (None for string values).
    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut [u8]> {
        let s = self.slot(key)? as usize;
        match &mut self.values {
            Values::Fixed { arena, row } => Some(&mut arena[s * *row..(s + 1) * *row]),
            Values::Var(_) => None,
        }
    }

    /// Stores `value` under `key`. A new key first calls `admit` (the row cap), which may
    /// refuse it. Returns whether the key was new.
    pub(super) fn put<E>(
        &mut self,
        key: &[u8],
        value: &[u8],
        admit: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        if let Some(s) = self.slot(key) {
            self.write(s, value);
            return Ok(false);
        }
        admit()?;
        let s = self.alloc();
        self.write(s, value);
        match &mut self.index {
            Index::Num(m) => m.insert(num(key), s),
            Index::Str(m) => m.insert(key.into(), s),
        };
        Ok(true)
    }

    fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        match &mut self.values {
            Values::Fixed { arena, row } => {
                arena.resize(arena.len() + *row, 0);
                (arena.len() / *row - 1) as u32
            }
            Values::Var(v) => {
                v.push(Box::default());
                (v.len() - 1) as u32
            }
        }
    }

    fn write(&mut self, slot: u32, value: &[u8]) {
        match &mut self.values {
            Values::Fixed { arena, row } => {
                let at = slot as usize * *row;
                arena[at..at + *row].copy_from_slice(value);
            }
            Values::Var(v) => v[slot as usize] = value.into(),
        }
    }

    /// Deletes `key`; returns whether it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        let slot = match &mut self.index {
            Index::Num(m) => m.remove(&num(key)),
            Index::Str(m) => m.remove(key),
        };
        let Some(s) = slot else { return false };
        if let Values::Var(v) = &mut self.values {
            v[s as usize] = Box::default();
        }
        self.free.push(s);
        true
    }

    /// Calls `f(key, value)` for every row; numeric keys are given as `width` bytes.
    pub(super) fn for_each<E>(
        &self,
        width: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match &self.index {
            Index::Num(m) => {
                for (k, &s) in m {
                    f(&k.to_le_bytes()[..width], self.value(s))?;
                }
            }
            Index::Str(m) => {
                for (k, &s) in m {
                    f(k, self.value(s))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_stored_replaced_removed_and_their_slots_reused() {
        let mut s = Shard::new(true, Some(2));
        let ok = || Ok::<(), ()>(());
        assert_eq!(s.put(&7i64.to_le_bytes(), b"ab", ok), Ok(true));
        assert_eq!(s.put(&7i64.to_le_bytes(), b"cd", ok), Ok(false));
        assert_eq!(s.put(&8i64.to_le_bytes(), b"ef", || Err(())), Err(()));
        assert_eq!(s.get(&7i64.to_le_bytes()), Some(&b"cd"[..]));
        assert_eq!((s.len(), s.get(&8i64.to_le_bytes())), (1, None));
        assert!(s.remove(&7i64.to_le_bytes()) && !s.remove(&7i64.to_le_bytes()));
        assert_eq!(s.put(&9i64.to_le_bytes(), b"gh", ok), Ok(true));
        let Values::Fixed { arena, .. } = &s.values else {
            panic!()
        };
        assert_eq!(arena.len(), 2, "the freed slot was reused");
        let mut rows = Vec::new();
        s.for_each(8, |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(rows, vec![(9i64.to_le_bytes().to_vec(), b"gh".to_vec())]);
    }

    #[test]
    fn string_keys_and_values_and_int32_keys() {
        let mut s = Shard::new(false, None);
        let ok = || Ok::<(), ()>(());
        s.put(b"k", b"long value", ok).unwrap();
        s.put(b"", b"", ok).unwrap();
        assert_eq!(s.get(b"k"), Some(&b"long value"[..]));
        assert_eq!(s.get(b""), Some(&b""[..]));
        assert!(
            s.get_mut(b"k").is_none(),
            "string rows are not changed in place"
        );
        let mut n = Shard::new(true, Some(1));
        n.put(&(-1i32).to_le_bytes(), b"x", ok).unwrap();
        let mut keys = Vec::new();
        n.for_each(4, |k, _| {
            keys.push(k.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(keys, vec![(-1i32).to_le_bytes().to_vec()]);
    }
}
