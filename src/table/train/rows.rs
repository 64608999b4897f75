//! Moving a step's rows between the tables and one buffer of `dim × (1 + slots)` floats per
//! distinct key: params, then each slot. No I/O of its own: `Table::find_untracked` and
//! `Table::insert_untracked` (the training ops count themselves) on the params and slot
//! tables, one table per thread.

use std::sync::Arc;

use crate::codec::{Keys, Rows};
use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// Reads params into the params part of `rows` (and `exists`) and each slot table into its
/// part, in parallel.
pub(super) fn read_separate(
    t: &Table,
    slots: &[Arc<Table>],
    inits: &[f32],
    keys: &Keys<'_>,
    dim: usize,
    rows: &mut [f32],
    exists: &mut [u8],
) -> Result<()> {
    let n = keys.len();
    let mut parts = vec![vec![0f32; n * dim]; 1 + slots.len()];
    let (params, slot_parts) = parts.split_first_mut().expect("params part");
    std::thread::scope(|s| -> Result<()> {
        let readers: Vec<_> = slots
            .iter()
            .zip(slot_parts.iter_mut())
            .zip(inits)
            .map(|((slot, part), &init)| {
                s.spawn(move || {
                    let dflt: Vec<u8> = init.to_le_bytes().repeat(dim);
                    slot.find_untracked(keys, &dflt, as_bytes_mut(part), None)
                        .map(|_| ())
                })
            })
            .collect();
        t.find_untracked(
            keys,
            &vec![0u8; dim * 4],
            as_bytes_mut(params),
            Some(exists),
        )?;
        for r in readers {
            r.join()
                .map_err(|_| Error::new(ErrorKind::Internal, "a slot reader panicked"))??;
        }
        Ok(())
    })?;
    interleave(&parts, dim, rows);
    Ok(())
}

/// Reads the slot rows of `keys` into the slot part of `rows`, setting bit `1 + i` of
/// `present` where slot table `i` held the key.
pub(super) fn read_slots(
    slots: &[Arc<Table>],
    inits: &[f32],
    keys: &Keys<'_>,
    dim: usize,
    rows: &mut [f32],
    present: &mut [u8],
) -> Result<()> {
    let n = keys.len();
    let width = dim * (1 + slots.len());
    let mut found = vec![0u8; n];
    for (i, slot) in slots.iter().enumerate() {
        let mut read = vec![0f32; n * dim];
        let dflt: Vec<u8> = inits[i].to_le_bytes().repeat(dim);
        slot.find_untracked(keys, &dflt, as_bytes_mut(&mut read), Some(&mut found))?;
        for d in 0..n {
            let at = d * width + dim * (1 + i);
            rows[at..at + dim].copy_from_slice(&read[d * dim..(d + 1) * dim]);
            present[d] = present[d] & !(1 << (1 + i)) | (found[d] & 1) << (1 + i);
        }
    }
    Ok(())
}

/// `rows[i]` = params[i] ‖ slot 1[i] ‖ … from one buffer per part.
pub(super) fn interleave(parts: &[Vec<f32>], dim: usize, rows: &mut [f32]) {
    let width = dim * parts.len();
    for (p, part) in parts.iter().enumerate() {
        for (i, src) in part.chunks_exact(dim).enumerate() {
            rows[i * width + p * dim..i * width + (p + 1) * dim].copy_from_slice(src);
        }
    }
}

/// Writes params and each slot's rows, one table per thread.
pub(super) fn write_separate(
    t: &Table,
    slots: &[Arc<Table>],
    keys: &Keys<'_>,
    rows: &[f32],
    dim: usize,
) -> Result<()> {
    let (n, width) = (keys.len(), dim * (1 + slots.len()));
    let part = |i: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * dim * 4);
        for d in 0..n {
            let at = d * width + dim * i;
            out.extend_from_slice(as_bytes(&rows[at..at + dim]));
        }
        out
    };
    std::thread::scope(|s| -> Result<()> {
        let writers: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let data = part(i + 1);
                s.spawn(move || {
                    slot.insert_untracked(
                        keys,
                        &Rows::Fixed {
                            data: &data,
                            row: dim * 4,
                        },
                    )
                    .map(|_| ())
                })
            })
            .collect();
        let data = part(0);
        t.insert_untracked(
            keys,
            &Rows::Fixed {
                data: &data,
                row: dim * 4,
            },
        )?;
        for w in writers {
            w.join()
                .map_err(|_| Error::new(ErrorKind::Internal, "a slot writer panicked"))??;
        }
        Ok(())
    })
}

pub(super) fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is scaled.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

pub(super) fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern written is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}
