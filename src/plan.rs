//! Request planning: one logical request (a batch of keys) is de-duplicated, grouped per
//! bucket, cut into commands of at most `keys_sending_size` keys, and the commands are dealt
//! into pipelines that run in parallel. Results are merged back by key position.

use rustc_hash::FxHashMap;

use crate::codec::{le_word, Keys};

/// One command's worth of keys: `plan.order[start..end]`, all in bucket `bucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub bucket: usize,
    pub start: usize,
    pub end: usize,
}

/// No further occurrence, in [`Plan::next`].
const NONE: u32 = u32::MAX;

/// What deduplication yields: (first, last, of, next) as in [`Plan`].
type Dedup = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

/// Records position `i` as an occurrence of distinct key `d` (`d == first.len()` for a new
/// key).
#[inline]
fn note(
    i: usize,
    d: u32,
    first: &mut Vec<u32>,
    last: &mut Vec<u32>,
    of: &mut Vec<u32>,
    next: &mut [u32],
) {
    if d as usize == first.len() {
        first.push(i as u32);
        last.push(i as u32);
    } else {
        next[last[d as usize] as usize] = i as u32;
        last[d as usize] = i as u32;
    }
    of.push(d);
}

/// Deduplicates `n` keys of any form (`key(i)` is the i-th) with a hash map.
fn dedup<K: std::hash::Hash + Eq>(n: usize, key: impl Fn(usize) -> K) -> Dedup {
    let mut index: FxHashMap<K, u32> = FxHashMap::default();
    index.reserve(n);
    let (mut first, mut last, mut of, mut next) =
        (Vec::new(), Vec::new(), Vec::with_capacity(n), vec![NONE; n]);
    for i in 0..n {
        let fresh = first.len() as u32;
        let d = *index.entry(key(i)).or_insert(fresh);
        note(i, d, &mut first, &mut last, &mut of, &mut next);
    }
    (first, last, of, next)
}

thread_local! {
    /// The open-addressing slots of [`dedup_words`], kept per thread between calls so a call
    /// neither allocates nor faults in a fresh table.
    static SLOTS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Deduplicates `n` numeric keys given as words. A linear-probing table of 4-byte slots
/// (distinct index + 1; at most half full) over the distinct words: at 16,384 keys it is
/// 128 KB, where a general hash map of (word, index) pairs is 512 KB and misses the caches on
/// most probes. Profiled on Zipf(1.2) lookups, the hash-map dedup was 19% of the client's CPU.
fn dedup_words(n: usize, word: impl Fn(usize) -> u64) -> Dedup {
    let bits = (2 * n).max(16).next_power_of_two().trailing_zeros();
    let mask = (1usize << bits) - 1;
    let (mut first, mut last, mut of, mut next) =
        (Vec::new(), Vec::new(), Vec::with_capacity(n), vec![NONE; n]);
    let mut words: Vec<u64> = Vec::new();
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        slots.clear();
        slots.resize(mask + 1, 0);
        for i in 0..n {
            let w = word(i);
            // Fibonacci hashing: the top bits of the product spread sequential ids evenly.
            let mut s = (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
            let d = loop {
                match slots[s] {
                    0 => {
                        slots[s] = words.len() as u32 + 1;
                        words.push(w);
                        break words.len() as u32 - 1;
                    }
                    e if words[e as usize - 1] == w => break e - 1,
                    _ => s = (s + 1) & mask,
                }
            };
            note(i, d, &mut first, &mut last, &mut of, &mut next);
        }
        if slots.len() > 1 << 18 {
            // Do not keep a huge table alive on an idle thread.
            *slots = Vec::new();
        }
    });
    (first, last, of, next)
}

/// Keys in the short commands that open and close a request.
const EDGE_KEYS: usize = 128;

/// Cuts a short command off the front of the first chunk and off the back of the last one.
/// The server can run a command only once all of it has arrived, so a short first command
/// sets it to work while the client encodes the rest (upserts); and the client's work after
/// the server's last command is decoding that command's reply, so a short last command
/// shortens that tail (lookups). Costs two more commands per request of three or more.
fn split_ends(chunks: &mut Vec<Chunk>, step: usize) {
    if step < 4 * EDGE_KEYS || chunks.len() < 3 {
        // Small commands, or a small request: little to overlap.
        return;
    }
    if let Some(&c) = chunks.first() {
        if c.end - c.start > 2 * EDGE_KEYS {
            let cut = c.start + EDGE_KEYS;
            chunks[0].start = cut;
            chunks.insert(0, Chunk { end: cut, ..c });
        }
    }
    if let Some(&c) = chunks.last() {
        if chunks.len() > 1 && c.end - c.start > 2 * EDGE_KEYS {
            let cut = c.end - EDGE_KEYS;
            chunks.last_mut().unwrap().end = cut;
            chunks.push(Chunk { start: cut, ..c });
        }
    }
}

/// The plan for one batch of keys.
#[derive(Debug)]
pub struct Plan {
    /// For each distinct key (in first-seen order), the position of its first occurrence.
    pub first: Vec<u32>,
    /// For each distinct key, the position of its last occurrence (last write wins).
    pub last: Vec<u32>,
    /// For each input position, the index of its distinct key.
    pub of: Vec<u32>,
    /// For each input position, the next position holding the same key, or [`NONE`]: a
    /// distinct key's occurrences are `first[d]`, `next[first[d]]`, … in input order.
    pub next: Vec<u32>,
    /// Distinct-key indices grouped by bucket.
    pub order: Vec<u32>,
    /// Commands, each a contiguous run of `order` within one bucket.
    pub chunks: Vec<Chunk>,
}

impl Plan {
    /// Plans `keys` over `n_buckets` buckets with `bucket_of` choosing a key's bucket.
    pub fn new(
        keys: &Keys<'_>,
        n_buckets: usize,
        chunk_keys: usize,
        bucket_of: impl Fn(&[u8]) -> usize,
    ) -> Plan {
        let n = keys.len();
        let (first, last, of, next) = match *keys {
            // Numeric keys are deduplicated as integers: hashing and comparing a word is
            // several times cheaper than a byte slice (this loop was 15% of a lookup's
            // client CPU at 16,384 keys).
            Keys::Fixed { data, width: 8 } => dedup_words(n, |i| {
                u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap())
            }),
            Keys::Fixed { data, width } if width < 8 => {
                dedup_words(n, |i| le_word(&data[i * width..(i + 1) * width]))
            }
            _ => dedup(n, |i| keys.get(i)),
        };
        // Counting sort of distinct keys by bucket.
        let bucket: Vec<u32> = if n_buckets <= 1 {
            Vec::new()
        } else {
            first
                .iter()
                .map(|&p| bucket_of(keys.get(p as usize)) as u32)
                .collect()
        };
        let mut starts = vec![0usize; n_buckets.max(1) + 1];
        if bucket.is_empty() {
            starts[1] = first.len();
        } else {
            for &b in &bucket {
                starts[b as usize + 1] += 1;
            }
            for b in 0..n_buckets {
                starts[b + 1] += starts[b];
            }
        }
        let order = if bucket.is_empty() {
            (0..first.len() as u32).collect()
        } else {
            let mut fill = starts.clone();
            let mut order = vec![0u32; first.len()];
            for (d, &b) in bucket.iter().enumerate() {
                order[fill[b as usize]] = d as u32;
                fill[b as usize] += 1;
            }
            order
        };
        let step = chunk_keys.max(1);
        let mut chunks = Vec::new();
        for b in 0..n_buckets.max(1) {
            let mut s = starts[b];
            while s < starts[b + 1] {
                let e = (s + step).min(starts[b + 1]);
                chunks.push(Chunk {
                    bucket: b,
                    start: s,
                    end: e,
                });
                s = e;
            }
        }
        split_ends(&mut chunks, step);
        Plan {
            first,
            last,
            of,
            next,
            order,
            chunks,
        }
    }

    /// Number of distinct keys.
    pub fn distinct(&self) -> usize {
        self.first.len()
    }

    /// The distinct keys with `keep[d]` set, in plan order and grouped by bucket as the plan
    /// is, cut into commands of at most `chunk_keys` keys: (order, chunks over that order).
    pub fn subset(&self, keep: &[bool], chunk_keys: usize) -> (Vec<u32>, Vec<Chunk>) {
        let mut order = Vec::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        for ch in &self.chunks {
            for &d in &self.order[ch.start..ch.end] {
                if !keep[d as usize] {
                    continue;
                }
                match chunks.last_mut() {
                    Some(last)
                        if last.bucket == ch.bucket
                            && last.end - last.start < chunk_keys.max(1) =>
                    {
                        last.end += 1
                    }
                    _ => chunks.push(Chunk {
                        bucket: ch.bucket,
                        start: order.len(),
                        end: order.len() + 1,
                    }),
                }
                order.push(d);
            }
        }
        (order, chunks)
    }

    /// The input positions holding distinct key `d`, in input order.
    pub fn positions(&self, d: usize) -> impl Iterator<Item = usize> + '_ {
        self.from(self.first[d])
    }

    /// The later input positions holding the key at position `p`, in input order (none for
    /// a key that occurs once).
    pub fn repeats(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        self.from(self.next[p])
    }

    /// Position `p` and the later ones of its key (none if `p` is `NONE`).
    fn from(&self, mut p: u32) -> impl Iterator<Item = usize> + '_ {
        std::iter::from_fn(move || {
            let at = (p != NONE).then_some(p as usize)?;
            p = self.next[at];
            Some(at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::KeyType;

    fn keys(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|k| k.to_le_bytes()).collect()
    }

    #[test]
    fn dedup_keeps_first_and_last_positions() {
        let data = keys(&[5, 7, 5, 9, 7, 5]);
        let k = Keys::new(KeyType::I64, &data, &[]).unwrap();
        let p = Plan::new(&k, 1, 2, |_| 0);
        assert_eq!(p.first, [0, 1, 3]);
        assert_eq!(p.last, [5, 4, 3]);
        assert_eq!(p.of, [0, 1, 0, 2, 1, 0]);
        assert_eq!(p.next, [2, 4, 5, NONE, NONE, NONE]);
        assert_eq!(p.chunks.len(), 2);
        let positions: Vec<Vec<usize>> = (0..3).map(|d| p.positions(d).collect()).collect();
        let repeats: Vec<Vec<usize>> = [0, 2, 5].map(|i| p.repeats(i).collect()).to_vec();
        assert_eq!(repeats, [vec![2, 5], vec![5], vec![]]);
        assert_eq!(positions, [vec![0, 2, 5], vec![1, 4], vec![3]]);
        let (order, chunks) = p.subset(&[true, false, true], 1);
        assert_eq!(order, [0, 2]);
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn big_requests_open_and_close_with_short_commands() {
        let data = keys(&(0..3000).collect::<Vec<_>>());
        let k = Keys::new(KeyType::I64, &data, &[]).unwrap();
        let p = Plan::new(&k, 1, 1024, |_| 0);
        let sizes: Vec<usize> = p.chunks.iter().map(|c| c.end - c.start).collect();
        assert_eq!(sizes, [128, 896, 1024, 824, 128]);
        let covered: Vec<u32> = p
            .chunks
            .iter()
            .flat_map(|c| p.order[c.start..c.end].to_vec())
            .collect();
        assert_eq!(covered, (0..3000).collect::<Vec<u32>>());
        // Small requests and small commands are left whole.
        let p = Plan::new(&k.sub(0, 2000), 1, 1024, |_| 0);
        assert_eq!(p.chunks.len(), 2);
        assert_eq!(Plan::new(&k, 1, 100, |_| 0).chunks.len(), 30);
    }

    #[test]
    fn word_table_agrees_with_the_hash_map() {
        // Duplicates near and far apart, extreme words, and more keys than one table growth.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let words: Vec<u64> = (0..5000u64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 7 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => x % 300,
                    3 => (x % 50) << 40,
                    _ => x,
                }
            })
            .collect();
        for n in [0, 1, 2, 17, 1000, 5000] {
            assert_eq!(
                dedup_words(n, |i| words[i]),
                dedup(n, |i| words[i]),
                "n = {n}"
            );
        }
    }

    #[test]
    fn groups_by_bucket_and_cuts_chunks() {
        let data = keys(&(0..10).collect::<Vec<_>>());
        let k = Keys::new(KeyType::I64, &data, &[]).unwrap();
        let p = Plan::new(&k, 3, 2, |b| b[0] as usize % 3);
        let mut seen = Vec::new();
        for c in &p.chunks {
            assert!(c.end - c.start <= 2);
            for &d in &p.order[c.start..c.end] {
                assert_eq!(d as usize % 3, c.bucket);
                seen.push(d);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<u32>>());
    }
}
