//! Where a table's rows live in Redis: the key prefix, the bucket (hash) names with their
//! cluster hash tags, and which bucket a key belongs to. All of it byte-compatible with TFRA.

use std::sync::OnceLock;

use crate::config::Config;

/// Number of Redis Cluster hash slots.
pub const SLOTS: usize = 16384;

/// CRC16-XMODEM as Redis Cluster uses it for key → slot.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, honouring `{hash tag}` rules.
pub fn key_slot(key: &[u8]) -> usize {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    usize::from(crc16(tagged.unwrap_or(key))) % SLOTS
}

/// `T[s]`: the smallest non-negative integer whose decimal form hashes to slot `s`.
/// TFRA ships this as a literal table; it is generated here once.
pub fn slot_tag_table() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![u32::MAX; SLOTS];
        let mut left = SLOTS;
        let mut n: u32 = 0;
        let mut buf = itoa::Buffer::new();
        while left > 0 {
            let s = usize::from(crc16(buf.format(n).as_bytes())) % SLOTS;
            if t[s] == u32::MAX {
                t[s] = n;
                left -= 1;
            }
            n += 1;
        }
        t
    })
}

/// CRC32C (Castagnoli, reflected) from seed `0xFFFF_FFFF` without the final inversion: the
/// value of the SSE4.2 `crc32` instruction chain TFRA buckets keys with.
pub fn crc32c_raw(bytes: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    bytes.iter().fold(0xFFFF_FFFF, |c, &b| {
        t[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// TFRA's bucket of a key in cluster mode. Numeric keys: the low 32 bits mod `slices`, or
/// [`crc32c_raw`] of the key bytes with `hashed`. String keys: TFRA hashes the first `len`
/// bytes of TensorFlow's string object, which for strings of at most 22 bytes is the length
/// byte `len << 2` followed by the first `len - 1` characters; that is reproduced. Longer
/// strings are hashed by their real bytes (TFRA's result for them is not deterministic).
pub fn bucket_of(key: &[u8], numeric: bool, hashed: bool, slices: u32) -> usize {
    if slices <= 1 {
        return 0;
    }
    let h = if numeric {
        if hashed {
            crc32c_raw(key)
        } else {
            u32::from_le_bytes(key[..4].try_into().unwrap())
        }
    } else if key.len() <= 22 {
        let mut inline = [0u8; 23];
        inline[0] = (key.len() << 2) as u8;
        inline[1..=key.len()].copy_from_slice(key);
        crc32c_raw(&inline[..key.len()])
    } else {
        crc32c_raw(key)
    };
    (h % slices) as usize
}

/// TFRA's topology-derived hash tags for `slices` buckets from `CLUSTER NODES` text: each
/// master's first slot range, sorted; buckets dealt round-robin over the masters.
pub fn topology_tags(cluster_nodes: &str, slices: u32) -> Vec<String> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for line in cluster_nodes.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let is_master = cols
            .get(2)
            .is_some_and(|f| f.starts_with("master") || f.starts_with("myself,master"));
        let Some(first) = cols.get(8).filter(|c| !c.starts_with('[')) else {
            continue;
        };
        if !is_master {
            continue;
        }
        let (a, b) = first.split_once('-').unwrap_or((first, first));
        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
            ranges.push((a, b));
        }
    }
    ranges.sort_unstable();
    ranges.dedup();
    let t = slot_tag_table();
    let (n, s) = (ranges.len(), slices as usize);
    if n == 0 {
        return hash_tags(slices, &[]);
    }
    (0..s)
        .map(|i| {
            let slot = if n >= s {
                ranges[i].0
            } else {
                let (first, last) = ranges[i % n];
                first + (i / n) * ((last - first) * n / s)
            };
            format!("{{{}}}", t[slot])
        })
        .collect()
}

/// The table's key prefix: `<model_tag>:<embedding_name>`, or its 16-byte TFRA digest
/// (see [`crate::cluster::md5`]).
pub fn prefix(model_tag: &str, embedding_name: &str, md5: bool) -> Vec<u8> {
    let plain = format!("{model_tag}:{embedding_name}");
    if md5 {
        crate::cluster::md5::tfra_md5(plain.as_bytes()).to_vec()
    } else {
        plain.into_bytes()
    }
}

/// Hash tags (with braces) for `slices` buckets when no cluster topology is used: explicit
/// tags if exactly `slices` were given, else TFRA's evenly spread generated tags.
pub fn hash_tags(slices: u32, explicit: &[String]) -> Vec<String> {
    if explicit.len() == slices as usize {
        return explicit.iter().map(|t| brace(t)).collect();
    }
    let s = slices as usize;
    let t = slot_tag_table();
    (0..s)
        .map(|i| format!("{{{}}}", t[(SLOTS / s) * i + SLOTS % s]))
        .collect()
}

fn brace(tag: &str) -> String {
    let open = if tag.starts_with('{') { "" } else { "{" };
    let close = if tag.ends_with('}') { "" } else { "}" };
    format!("{open}{tag}{close}")
}

/// The bucket names of one table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    names: Vec<Vec<u8>>,
}

impl Buckets {
    /// Buckets for `prefix` with the given tags.
    pub fn new(prefix: &[u8], tags: &[String]) -> Self {
        let names = tags
            .iter()
            .map(|t| {
                let mut k = prefix.to_vec();
                k.extend_from_slice(t.as_bytes());
                k
            })
            .collect();
        Buckets { names }
    }

    /// The runtime buckets of table `embedding_name` under `cfg`.
    pub fn runtime(cfg: &Config, embedding_name: &str) -> Self {
        let p = prefix(
            &cfg.model_tag_runtime,
            embedding_name,
            cfg.using_md5_prefix_name,
        );
        Buckets::new(
            &p,
            &hash_tags(cfg.storage_slice, &cfg.redis_hash_tags_runtime),
        )
    }

    /// Bucket `i`'s Redis key.
    pub fn name(&self, i: usize) -> &[u8] {
        &self.names[i]
    }

    /// All bucket keys in order.
    pub fn names(&self) -> &[Vec<u8>] {
        &self.names
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true for a valid config; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A bucket name in a form fit for error messages (binary bytes escaped).
pub fn display_bytes(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference_vector() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            usize::from(crc16(b"foo{}{bar}")) % SLOTS
        );
    }

    #[test]
    fn generated_tags_match_tfra() {
        let t = |s| hash_tags(s, &[]);
        assert_eq!(t(1), ["{3560}"]);
        assert_eq!(t(2), ["{3560}", "{8209}"]);
        assert_eq!(t(3), ["{22179}", "{450}", "{18948}"]);
        assert_eq!(t(4), ["{3560}", "{4129}", "{8209}", "{356}"]);
        assert_eq!(
            t(8),
            ["{3560}", "{48576}", "{4129}", "{1296}", "{8209}", "{2821}", "{356}", "{16248}"]
        );
    }

    #[test]
    fn every_slot_tag_hashes_to_its_slot() {
        for (s, &n) in slot_tag_table().iter().enumerate() {
            assert_eq!(key_slot(n.to_string().as_bytes()), s);
        }
    }

    #[test]
    fn explicit_tags_are_braced_only_when_the_count_matches() {
        let ex = vec!["a".to_string(), "{b}".to_string()];
        assert_eq!(hash_tags(2, &ex), ["{a}", "{b}"]);
        assert_eq!(hash_tags(1, &ex), ["{3560}"]);
    }

    #[test]
    fn crc32c_matches_tfra_vectors() {
        assert_eq!(crc32c_raw(&0i64.to_le_bytes()), 0x73d7_4d75);
        assert_eq!(crc32c_raw(&1i64.to_le_bytes()), 0x3aeb_3052);
        assert_eq!(crc32c_raw(&3i64.to_le_bytes()), 0xa893_ca1c);
        assert_eq!(crc32c_raw(&0i32.to_le_bytes()), 0xb798_b438);
        assert_eq!(crc32c_raw(&(-1i32).to_le_bytes()), 0);
    }

    #[test]
    fn numeric_buckets_use_the_low_32_bits_mod_s() {
        assert_eq!(
            bucket_of(&(-1i32).to_le_bytes(), true, false, 3),
            (u32::MAX % 3) as usize
        );
        assert_eq!(
            bucket_of(&((7i64 << 32) + 5).to_le_bytes(), true, false, 4),
            1
        );
        assert_eq!(
            bucket_of(&1i64.to_le_bytes(), true, true, 7),
            (0x3aeb_3052u32 % 7) as usize
        );
        assert_eq!(bucket_of(b"anything", false, false, 1), 0);
    }

    #[test]
    fn topology_tags_follow_tfra() {
        let nodes = "a 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922\n\
                     c 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383\n\
                     d 127.0.0.1:7004@17004 slave a 0 0 1 connected\n";
        let t = slot_tag_table();
        let tag = |s: usize| format!("{{{}}}", t[s]);
        assert_eq!(topology_tags(nodes, 3), [tag(0), tag(5461), tag(10923)]);
        assert_eq!(topology_tags(nodes, 1), [tag(0)]);
        // Fewer masters than buckets: round-robin, stepping through each master's range.
        let six = topology_tags(nodes, 6);
        assert_eq!(six[0], tag(0));
        assert_eq!(six[3], tag(5460 * 3 / 6));
        assert_eq!(six[4], tag(5461 + 5461 * 3 / 6));
    }

    #[test]
    fn bucket_names_and_md5_prefix() {
        let b = Buckets::new(&prefix("test", "emb", false), &hash_tags(1, &[]));
        assert_eq!(b.name(0), b"test:emb{3560}");
        let p = prefix("test", "emb", true);
        assert_eq!(p, crate::cluster::md5::tfra_md5(b"test:emb"));
    }
}
