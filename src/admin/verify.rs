//! The check after a copy: the destination holds as many rows as the source, and a random
//! sample of source rows (HRANDFIELD, spread over the buckets by their sizes) reads back
//! from the destination table byte for byte, as the destination's stored form keeps them.

use super::shape::{Batch, Shape};
use super::stream::row_error;
use super::{int, Admin, TableInfo};
use crate::cluster::route::Access;
use crate::codec::{KeyType, Rows, Storage};
use crate::error::{Error, Result};
use crate::resp::conn::Reply;
use crate::table::Table;

impl Admin {
    /// Verifies the copy of `t` into `dest` (named `name`); returns the rows compared.
    pub(crate) fn verify_copy(
        &self,
        t: &TableInfo,
        shape: Shape,
        dest: &Table,
        name: &str,
        sample: usize,
    ) -> Result<u64> {
        let mut lens = Vec::with_capacity(t.buckets.len());
        for b in &t.buckets {
            let r = self.keyed(&b.key, Access::Read, &[b"HLEN", &b.key])?;
            lens.push(int(&r, 0).max(0) as u64);
        }
        let (source, copied) = (lens.iter().sum::<u64>(), dest.size()?.max(0) as u64);
        if source != copied {
            return Err(Error::data(format!(
                "copy of {} to {name}: the source holds {source} rows but the destination \
                 {copied} (was either written to during the copy?)",
                t.full_name()
            )));
        }
        let mut batch = Batch::new(shape);
        for (b, &len) in t.buckets.iter().zip(&lens) {
            let want = (sample as u64 * len).div_ceil(source.max(1)).min(len);
            if want == 0 {
                continue;
            }
            let n = want.to_string();
            let reply = self.keyed(
                &b.key,
                Access::Read,
                &[b"HRANDFIELD", &b.key, n.as_bytes(), b"WITHVALUES"],
            )?;
            let Reply::Array(items) = reply else {
                continue;
            };
            for pair in items.chunks_exact(2) {
                if let (Reply::Bulk(k), Reply::Bulk(v)) = (&pair[0], &pair[1]) {
                    batch
                        .push(k, v)
                        .map_err(|why| row_error(t, &b.key, k, shape, why))?;
                }
            }
        }
        compare(&batch, shape, dest, name)?;
        Ok(batch.len() as u64)
    }
}

/// Reads `expected`'s keys from `dest` and compares every row.
fn compare(expected: &Batch, shape: Shape, dest: &Table, name: &str) -> Result<()> {
    let n = expected.len();
    if n == 0 {
        return Ok(());
    }
    let keys = expected.keys()?;
    let differs = |i: usize, what: &str| {
        let k = keys.get(i);
        let shown = match shape.key_type {
            KeyType::Str => format!("\"{}\"", k.escape_ascii()),
            kt => kt.display(k),
        };
        Error::data(format!("copy to {name}: key {shown} {what}"))
    };
    match expected.rows() {
        Rows::Fixed { data, row } => {
            let mut got = vec![0u8; n * row];
            let mut exists = vec![0u8; n];
            dest.find(&keys, &vec![0u8; row], &mut got, Some(&mut exists))?;
            let storage = dest.config().rde_value_storage;
            let mut stored = Vec::with_capacity(row);
            let mut want = vec![0u8; row];
            for i in 0..n {
                if exists[i] == 0 {
                    return Err(differs(i, "is missing from the destination"));
                }
                let src = &data[i * row..(i + 1) * row];
                // What the destination keeps of the row (narrowed if it stores compactly).
                stored.clear();
                storage.encode(src, &mut stored);
                storage.decode(&stored, &mut want);
                let want = if storage == Storage::Native {
                    src
                } else {
                    &want
                };
                if &got[i * row..(i + 1) * row] != want {
                    return Err(differs(i, "holds other bytes than in the source"));
                }
            }
        }
        Rows::Str { data, offsets, dim } => {
            let empty = vec![0u64; dim + 1];
            let defaults = Rows::Str {
                data: &[],
                offsets: &empty,
                dim,
            };
            let (got, exists) = dest.find_strings(&keys, &defaults)?;
            let elem = |d: &[u8], o: &[u64], j: usize| d[o[j] as usize..o[j + 1] as usize].to_vec();
            for (i, &found) in exists.iter().enumerate() {
                if found == 0 {
                    return Err(differs(i, "is missing from the destination"));
                }
                for j in i * dim..(i + 1) * dim {
                    if elem(&got.data, &got.offsets, j) != elem(data, offsets, j) {
                        return Err(differs(i, "holds other bytes than in the source"));
                    }
                }
            }
        }
    }
    Ok(())
}
