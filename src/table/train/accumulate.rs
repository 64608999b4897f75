//! `Accumulated`: the row gradients of a `gradient_accumulation_steps` cycle, held in the
//! process until the cycle's last step applies their average.
//!
//! Invariant: each key is held once, with the sum of its summed gradients over the cycle's
//! steps so far (added in step order, as Keras adds into a dense accumulator) and the row
//! (params, then slots) and presence bits its latest lookup read. The last step can so update
//! a key that its own batch does not hold without reading it again; under exact updates that
//! row is the compare-and-set's expected value, so a row another worker changed meanwhile is
//! re-read and recomputed as any lost race is. Nothing here reaches Redis before the last
//! step, and nothing here is checkpointed: a process that dies or restarts mid-cycle loses the
//! cycle's earlier steps of row gradients (Keras checkpoints its dense accumulators), so that
//! cycle's last step applies fewer steps' gradients, still divided by the cycle's length; it
//! logs a warning saying how many steps it held. A new optimizer layout empties it.

use rustc_hash::FxHashMap;

use super::keyset::KeySet;
use super::Batch;
use crate::error::{Error, Result};

/// A cycle's accumulated row gradients (empty between cycles).
#[derive(Default)]
pub(super) struct Accumulated {
    keys: Option<KeySet>,
    index: FxHashMap<Vec<u8>, u32>,
    /// `dim` per key: the gradient sum so far.
    sums: Vec<f32>,
    /// `width` per key: the row as the key's latest lookup read it.
    rows: Vec<f32>,
    present: Vec<u8>,
    /// Floats per row in `rows`, fixed by the cycle's first step.
    width: usize,
    /// Steps added since the cycle began.
    added: u32,
}

impl Accumulated {
    /// Adds one step's distinct keys and summed gradients, and keeps their rows as read.
    pub fn add(&mut self, batch: &Batch, dim: usize, width: usize) -> Result<()> {
        self.check_width(width)?;
        self.width = width;
        self.added += 1;
        let keys = self
            .keys
            .get_or_insert_with(|| KeySet::empty_like(&batch.keys));
        for d in 0..batch.keys.len() {
            let key = batch.keys.get(d);
            let (g, row) = (
                &batch.sums[d * dim..(d + 1) * dim],
                &batch.rows[d * width..(d + 1) * width],
            );
            match self.index.get(key) {
                Some(&a) => {
                    let a = a as usize;
                    for (s, &gi) in self.sums[a * dim..(a + 1) * dim].iter_mut().zip(g) {
                        *s += gi;
                    }
                    self.rows[a * width..(a + 1) * width].copy_from_slice(row);
                    self.present[a] = batch.present[d];
                }
                None => {
                    self.index.insert(key.to_vec(), keys.len() as u32);
                    keys.push(key);
                    self.sums.extend_from_slice(g);
                    self.rows.extend_from_slice(row);
                    self.present.push(batch.present[d]);
                }
            }
        }
        Ok(())
    }

    /// Rows held at one width cannot be folded into a step of another (the optimizer's slot
    /// layout changed mid-cycle without emptying this).
    fn check_width(&self, width: usize) -> Result<()> {
        if self.keys.is_some() && self.width != width {
            return Err(Error::invalid(format!(
                "gradient accumulation holds rows of {} floats, but this step's rows have {width}",
                self.width
            )));
        }
        Ok(())
    }

    /// Folds the cycle into its last step's `batch` and empties the accumulator. Each key's
    /// gradient becomes `(this step's + the accumulated) / steps`, as Keras averages; keys
    /// only earlier steps held are appended, with the rows they were read with.
    pub fn finish(
        &mut self,
        batch: &mut Batch,
        dim: usize,
        width: usize,
        steps: u32,
    ) -> Result<()> {
        self.check_width(width)?;
        let held = std::mem::take(self);
        if held.added + 1 != steps {
            log::warn!(
                "gradient accumulation: this cycle's last step holds the row gradients of {} of \
                 its {steps} steps (the process started or the optimizer changed mid-cycle); \
                 their sum is divided by {steps}",
                held.added + 1
            );
        }
        let mut in_batch = vec![false; held.present.len()];
        for d in 0..batch.keys.len() {
            if let Some(&a) = held.index.get(batch.keys.get(d)) {
                in_batch[a as usize] = true;
                let acc = &held.sums[a as usize * dim..(a as usize + 1) * dim];
                for (s, &ai) in batch.sums[d * dim..(d + 1) * dim].iter_mut().zip(acc) {
                    *s += ai;
                }
            }
        }
        if let Some(keys) = &held.keys {
            for a in (0..keys.len()).filter(|&a| !in_batch[a]) {
                batch.keys.push(keys.get(a));
                batch
                    .sums
                    .extend_from_slice(&held.sums[a * dim..(a + 1) * dim]);
                batch
                    .rows
                    .extend_from_slice(&held.rows[a * width..(a + 1) * width]);
                batch.present.push(held.present[a]);
            }
        }
        let n = steps as f32;
        for s in batch.sums.iter_mut() {
            *s /= n;
        }
        Ok(())
    }

    /// Adds into `sums` (keyed by `index`, `dim` per key) what the cycle's last step would add
    /// to them, appending keys only earlier steps held, and divides by `steps`: the gradient
    /// [`Accumulated::finish`] would hand the optimizer, for its norm.
    pub fn fold_into(
        &self,
        index: &mut FxHashMap<Vec<u8>, usize>,
        sums: &mut Vec<f32>,
        dim: usize,
        steps: u32,
    ) {
        if let Some(keys) = &self.keys {
            for a in 0..keys.len() {
                let acc = &self.sums[a * dim..(a + 1) * dim];
                let next = sums.len() / dim;
                let d = *index.entry(keys.get(a).to_vec()).or_insert_with(|| {
                    sums.extend(std::iter::repeat_n(0f32, dim));
                    next
                });
                for (s, &ai) in sums[d * dim..(d + 1) * dim].iter_mut().zip(acc) {
                    *s += ai;
                }
            }
        }
        let n = steps as f32;
        for s in sums.iter_mut() {
            *s /= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Keys;

    fn batch(keys: &[u64], sums: &[f32], rows: &[f32]) -> Batch {
        let data: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        let mut set = KeySet::new(&Keys::Fixed {
            data: &data,
            width: 8,
        });
        set.of.clear();
        Batch {
            keys: set,
            sums: sums.to_vec(),
            rows: rows.to_vec(),
            present: vec![1; keys.len()],
            need_slots: false,
        }
    }

    #[test]
    fn the_last_step_applies_the_average_of_the_cycle_with_the_latest_rows() {
        // dim 1, width 2 (params and one slot). Steps 1 and 2 accumulate, step 3 applies.
        let mut acc = Accumulated::default();
        acc.add(&batch(&[1, 2], &[1.0, 2.0], &[10.0, 0.1, 20.0, 0.2]), 1, 2)
            .unwrap();
        acc.add(&batch(&[2, 3], &[4.0, 8.0], &[21.0, 0.3, 30.0, 0.4]), 1, 2)
            .unwrap();
        let mut last = batch(&[3, 4], &[1.0, 16.0], &[31.0, 0.5, 40.0, 0.6]);
        let mut index = FxHashMap::default();
        index.insert(3u64.to_le_bytes().to_vec(), 0);
        index.insert(4u64.to_le_bytes().to_vec(), 1);
        let mut norm_sums = last.sums.clone();
        acc.fold_into(&mut index, &mut norm_sums, 1, 3);
        acc.finish(&mut last, 1, 2, 3).unwrap();
        let keys: Vec<u8> = (0..last.keys.len()).map(|d| last.keys.get(d)[0]).collect();
        assert_eq!(keys, [3, 4, 1, 2]);
        // 3: (1 + 8) / 3; 4: 16 / 3; 1: 1 / 3; 2: (2 + 4) / 3.
        assert_eq!(last.sums, [3.0, 16.0 / 3.0, 1.0 / 3.0, 2.0]);
        // Key 1 keeps the row step 1 read; key 2 the one step 2 read (its latest).
        assert_eq!(&last.rows[4..], &[10.0, 0.1, 21.0, 0.3]);
        assert_eq!(last.present, [1, 1, 1, 1]);
        // The norm's view of the gradient: the same rows (by key), the same values.
        let mut by_key = vec![0f32; 4];
        for (k, &d) in &index {
            by_key[k[0] as usize - 1] = norm_sums[d];
        }
        assert_eq!(by_key, [1.0 / 3.0, 2.0, 3.0, 16.0 / 3.0]);
        // The cycle is over: the next one starts empty.
        let mut next = batch(&[5], &[6.0], &[0.0, 0.0]);
        acc.finish(&mut next, 1, 2, 2).unwrap();
        assert_eq!((next.keys.len(), next.sums.as_slice()), (1, &[3.0f32][..]));
    }

    #[test]
    fn rows_of_another_width_are_refused_not_sliced() {
        let mut acc = Accumulated::default();
        acc.add(&batch(&[1], &[1.0], &[10.0, 0.1]), 1, 2).unwrap();
        let wider = batch(&[2], &[1.0], &[20.0, 0.2, 0.3]);
        let err = acc.add(&wider, 1, 3).unwrap_err();
        assert!(err.message().contains("rows of 2 floats"), "{err}");
        let mut last = wider;
        assert!(acc.finish(&mut last, 1, 3, 2).is_err());
        // Emptied (as a new optimizer layout does), it takes the new width.
        acc = Accumulated::default();
        acc.add(&batch(&[2], &[1.0], &[20.0, 0.2, 0.3]), 1, 3)
            .unwrap();
    }
}
