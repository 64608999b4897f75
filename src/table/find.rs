//! Lookups: `find` (fixed-size rows, read straight into the output) and `find_strings`.

use std::sync::Mutex;

use super::{in_windows, Shared, StrRows, Table};
use crate::cluster::route::Access;
use crate::codec::{decode_str_row, Keys, Rows, Storage};
use crate::error::{Error, Result};
use crate::stats;
use crate::sync;

impl Table {
    /// Looks up fixed-size values. `out` is `n × row` bytes; `defaults` is either one row per
    /// key (same size as `out`) or at least one row used for every missing key.
    pub fn find(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        exists: Option<&mut [u8]>,
    ) -> Result<()> {
        let _timer = stats::CallTimer::start();
        if self.storage == Storage::Native {
            return self.find_rows(keys, defaults, out, exists);
        }
        // Compact storage: look up stored rows into a scratch buffer, then widen to float32.
        let (n, srow, trow) = (keys.len(), self.row, self.row * 2);
        if out.len() != n * trow {
            return Err(Error::invalid(format!(
                "output holds {} bytes, expected {n} rows of {trow}",
                out.len()
            )));
        }
        let dflt_rows = if defaults.len() == out.len() {
            n
        } else {
            1.min(defaults.len() / trow.max(1))
        };
        let mut dflt = Vec::with_capacity(dflt_rows * srow);
        for r in 0..dflt_rows {
            self.storage
                .encode(&defaults[r * trow..(r + 1) * trow], &mut dflt);
        }
        let mut scratch = vec![0u8; n * srow];
        self.find_rows(keys, &dflt, &mut scratch, exists)?;
        for (o, s) in out.chunks_exact_mut(trow).zip(scratch.chunks_exact(srow)) {
            self.storage.decode(s, o);
        }
        Ok(())
    }

    fn find_rows(
        &self,
        keys: &Keys<'_>,
        defaults: &[u8],
        out: &mut [u8],
        mut exists: Option<&mut [u8]>,
    ) -> Result<()> {
        let (n, row) = (keys.len(), self.row);
        if row == 0 {
            return Err(Error::invalid(
                "string values are looked up with find_strings",
            ));
        }
        if out.len() != n * row {
            return Err(Error::invalid(format!(
                "output holds {} bytes, expected {n} rows of {row}",
                out.len()
            )));
        }
        if exists.as_ref().is_some_and(|e| e.len() != n) {
            return Err(Error::invalid("exists output must have one entry per key"));
        }
        if n == 0 {
            return Ok(());
        }
        let per_key = defaults.len() == out.len();
        if !per_key && defaults.len() < row {
            return Err(Error::invalid(format!(
                "default_value has {} elements; it needs at least dim = {} (or one row per key)",
                defaults.len() / self.spec.value_type.elem_size().unwrap_or(1),
                self.spec.dim
            )));
        }
        let windowed = in_windows(n, |a, b| {
            let d = if per_key {
                &defaults[a * row..b * row]
            } else {
                defaults
            };
            let e = exists.as_deref_mut().map(|e| &mut e[a..b]);
            self.find_rows(&keys.sub(a, b), d, &mut out[a * row..b * row], e)
        });
        if let Some(done) = windowed {
            return done;
        }
        let plan = self.plan(keys);
        let out_sh = Shared::new(out);
        let exists_sh = exists.map(Shared::new);
        self.dispatch(
            &plan.chunks,
            Access::Read,
            true,
            |c, ch| self.encode_hmget(c, ch, &plan.order, &plan, keys),
            |c, ch| {
                self.read_hmget_header(c, ch)?;
                // Each reply is scattered to every position of its key as it is read, so the
                // copies for duplicate keys and defaults overlap the server's work on the
                // next commands instead of following the last reply.
                // SAFETY (every `slice` below): the rows and flags written belong to the
                // occurrences of this chunk's distinct keys only, and each chunk is decoded
                // by one task at a time.
                for &d in &plan.order[ch.start..ch.end] {
                    let pos = plan.first[d as usize] as usize;
                    let hit = match c.read_bulk_len()? {
                        None => false,
                        Some(len) if len == row => true,
                        Some(len) => {
                            return Err(self.key_error(
                                self.bucket_name(ch),
                                keys.get(pos),
                                format!(
                                    "stored value has {len} bytes, expected dim {} × {} = {row}",
                                    self.spec.dim,
                                    self.spec.value_type.tf_name()
                                ),
                            ))
                        }
                    };
                    let found: Option<&[u8]> = if hit {
                        let dst = unsafe { out_sh.slice(pos * row, row) };
                        c.payload(dst)?;
                        Some(dst)
                    } else {
                        None
                    };
                    for p in plan.positions(d as usize) {
                        let from = match found {
                            Some(_) if p == pos => None, // read in place
                            Some(r) => Some(r),
                            None if per_key => Some(&defaults[p * row..(p + 1) * row]),
                            None => Some(&defaults[..row]),
                        };
                        if let Some(from) = from {
                            let dst = unsafe { out_sh.slice(p * row, row) };
                            dst.copy_from_slice(from);
                        }
                        if let Some(e) = &exists_sh {
                            let flag = unsafe { e.slice(p, 1) };
                            flag[0] = hit as u8;
                        }
                    }
                }
                Ok(())
            },
        )?;
        self.touch(&[]);
        Ok(())
    }

    /// Looks up string values. `defaults` holds one row per key or at least one row.
    /// Returns the `n × dim` elements and, per key, whether it was found.
    pub fn find_strings(&self, keys: &Keys<'_>, defaults: &Rows<'_>) -> Result<(StrRows, Vec<u8>)> {
        let _timer = stats::CallTimer::start();
        let (n, dim) = (keys.len(), self.spec.dim);
        if self.row != 0 {
            return Err(Error::invalid("fixed-size values are looked up with find"));
        }
        let mut rows = StrRows::new();
        if n == 0 {
            return Ok((rows, Vec::new()));
        }
        let drows = defaults.len();
        let per_key = drows == n;
        if drows == 0 {
            return Err(Error::invalid(format!(
                "default_value needs at least dim = {dim} elements"
            )));
        }
        let plan = self.plan(keys);
        // Each distinct key's stored row, with the bucket it was read from.
        type Stored = Option<(usize, Vec<u8>)>;
        let stored: Mutex<Vec<Stored>> = Mutex::new(vec![None; plan.distinct()]);
        self.dispatch(
            &plan.chunks,
            Access::Read,
            true,
            |c, ch| self.encode_hmget(c, ch, &plan.order, &plan, keys),
            |c, ch| {
                self.read_hmget_header(c, ch)?;
                for &d in &plan.order[ch.start..ch.end] {
                    let v = match c.read_bulk_len()? {
                        Some(len) => Some((ch.bucket, c.bulk(len)?)),
                        None => None,
                    };
                    sync::lock(&stored)[d as usize] = v;
                }
                Ok(())
            },
        )?;
        let stored = sync::into_inner(stored);
        let mut exists = vec![0u8; n];
        for (i, &d) in plan.of.iter().enumerate() {
            match &stored[d as usize] {
                Some((bucket, v)) => {
                    decode_str_row(v, dim, &mut rows.data, &mut rows.offsets).map_err(|why| {
                        self.key_error(
                            self.buckets.name(*bucket),
                            keys.get(i),
                            format!("stored string value is malformed: {why}"),
                        )
                    })?;
                    exists[i] = 1;
                }
                None => rows.push_from(defaults, if per_key { i } else { 0 }, dim),
            }
        }
        self.touch(&[]);
        Ok((rows, exists))
    }
}
