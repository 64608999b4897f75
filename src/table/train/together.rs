//! One pipeline per server for TFRA's layout: when the params table and its slot tables keep
//! each bucket on the same cluster slot (they do unless their layout records differ), a chunk
//! of keys carries one HMGET (or HSET) per table, so a step's reads and its writes each cost
//! one round of pipelines instead of one per table.
//!
//! Invariant: a chunk's decode reads the reply of every one of its commands, error replies
//! included, so the connection stays in step; the chunk then has one outcome
//! ([`one_outcome`]).

use std::sync::Arc;

use crate::cluster::dispatch::Commands;
use crate::cluster::route::Access;
use crate::codec::{Keys, Storage};
use crate::error::{Error, Result, ServerError};
use crate::stats;
use crate::table::{RedisTable, Shared, Table};

/// The Redis tables behind `t` and `slots` when they plan and route keys exactly alike (then
/// one request per chunk can carry a command for each), else None.
pub(super) fn aligned<'a>(t: &'a Table, slots: &'a [Arc<Table>]) -> Option<Vec<&'a RedisTable>> {
    let first = t.redis()?;
    let mut all = vec![first];
    for s in slots {
        let s = s.redis()?;
        let same = s.layout.rule == first.layout.rule
            && s.buckets.len() == first.buckets.len()
            && s.bucket_slots == first.bucket_slots
            && s.storage == first.storage;
        if !same {
            return None;
        }
        all.push(s);
    }
    Some(all)
}

/// Reads distinct `keys` from `t` and each slot table into `rows` (`dim × (1 + slots)` per
/// key: params, then each slot), routed as `access` says (`Write`: from the masters, as a
/// compare-and-set needs). Bit `i` of `found` says whether table `i` held the key (bit 0: the
/// params); a missing slot row starts at its `inits` value.
pub(super) fn read(
    tables: &[&RedisTable],
    access: Access,
    inits: &[f32],
    keys: &Keys<'_>,
    dim: usize,
    rows: &mut [u8],
    found: &mut [u8],
) -> Result<()> {
    let _timer = stats::CallTimer::start();
    let t = tables[0];
    let width = dim * 4 * tables.len();
    let plan = t.plan(keys);
    let (rows_sh, found_sh) = (Shared::new(rows), Shared::new(found));
    let req = Commands::idempotent(
        access,
        |c, ch| {
            for tb in tables {
                tb.encode_hmget(c, ch, &plan.order, &plan, keys);
            }
        },
        |c, ch| {
            let mut scratch = Vec::new();
            let mut refused = Vec::new();
            for (i, tb) in tables.iter().enumerate() {
                if let Err(e) = tb.read_hmget_header(c, ch) {
                    match e.server() {
                        Some(_) => {
                            refused.push(e);
                            continue;
                        }
                        None => return Err(e),
                    }
                }
                for &d in &plan.order[ch.start..ch.end] {
                    let pos = plan.first[d as usize] as usize;
                    // SAFETY: each distinct key's row and flag belong to one chunk, decoded by
                    // one task at a time.
                    let dst = unsafe { rows_sh.slice(pos * width + i * dim * 4, dim * 4) };
                    let hit = match c.read_bulk_len()? {
                        None => false,
                        Some(len) if len == tb.row => true,
                        Some(len) => {
                            return Err(tb.key_error(
                                tb.bucket_name(ch),
                                keys.get(pos),
                                format!("stored value has {len} bytes, expected {}", tb.row),
                            ))
                        }
                    };
                    if !hit && i > 0 {
                        let init = inits[i - 1].to_le_bytes();
                        dst.chunks_exact_mut(4)
                            .for_each(|e| e.copy_from_slice(&init));
                    } else if hit && tb.storage == Storage::Native {
                        c.payload(dst)?;
                    } else if hit {
                        scratch.resize(tb.row, 0);
                        c.payload(&mut scratch)?;
                        tb.storage.decode(&scratch, dst);
                    }
                    // Bit i: table i holds the key (bit 0, the params, is "found").
                    // SAFETY: as above.
                    let flag = unsafe { found_sh.slice(pos, 1) };
                    flag[0] = if i == 0 { 0 } else { flag[0] } | (hit as u8) << i;
                }
            }
            one_outcome(refused, tables.len())
        },
    );
    t.dispatch(&plan.chunks, &req)?;
    for tb in tables {
        tb.touch(&[]);
    }
    Ok(())
}

/// Writes distinct `keys`' `rows` (as [`read`] lays them out) to `t` and each slot table,
/// one HSET per table in each chunk.
pub(super) fn write(
    tables: &[&RedisTable],
    keys: &Keys<'_>,
    rows: &[u8],
    dim: usize,
) -> Result<()> {
    let _timer = stats::CallTimer::start();
    let t = tables[0];
    let width = dim * 4 * tables.len();
    let plan = t.plan(keys);
    let req = Commands::idempotent(
        Access::Write,
        |c, ch| {
            let mut stored = Vec::new();
            for (i, tb) in tables.iter().enumerate() {
                c.begin(2 + 2 * (ch.end - ch.start));
                c.arg(b"HSET");
                c.arg(tb.bucket_name(ch));
                for &d in &plan.order[ch.start..ch.end] {
                    let pos = plan.first[d as usize] as usize;
                    c.arg(keys.get(pos));
                    let part = &rows[pos * width + i * dim * 4..pos * width + (i + 1) * dim * 4];
                    if tb.storage == Storage::Native {
                        c.arg(part);
                    } else {
                        stored.clear();
                        tb.storage.encode(part, &mut stored);
                        c.arg(&stored);
                    }
                }
            }
        },
        |c, _| {
            let mut refused = Vec::new();
            for _ in tables {
                match c.read_int() {
                    Ok(_) => {}
                    Err(e) if e.server().is_some() => refused.push(e),
                    Err(e) => return Err(e),
                }
            }
            one_outcome(refused, tables.len())
        },
    );
    t.dispatch(&plan.chunks, &req)?;
    for tb in tables {
        tb.touch(&plan.chunks);
    }
    Ok(())
}

/// The outcome of a chunk whose `commands` (one per table) answered with the error replies
/// `refused`. With several commands, an ASK means the bucket's slot is being migrated and
/// some of the chunk's buckets have moved: ASKING covers one command only and the others
/// still live on the old owner, so the chunk is refused as Redis refuses a multi-key command
/// then (TRYAGAIN), to be retried after a pause until the migration ends. Otherwise (one
/// command, whose ASK is followed as any other) the first error stands (MOVED, which all
/// commands of a moved slot answer alike, OOM, WRONGTYPE, …).
fn one_outcome(refused: Vec<Error>, commands: usize) -> Result<()> {
    let split = refused.iter().find_map(|e| match e.server() {
        Some(ServerError::Ask { addr, .. }) if commands > 1 => Some(addr.clone()),
        _ => None,
    });
    match (split, refused.into_iter().next()) {
        (Some(target), _) => Err(Error::split_by_migration(&target)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_chunk_half_redirected_by_ask_is_refused_as_tryagain() {
        let ask = Error::server_reply("n1:7000", "ASK 42 127.0.0.1:7001");
        assert_eq!(
            one_outcome(vec![ask.clone()], 1),
            Err(ask.clone()),
            "one command: follow it"
        );
        let e = one_outcome(vec![ask], 3).unwrap_err();
        assert_eq!(e.server(), Some(&ServerError::TryAgain), "{e}");
        assert!(
            e.server().unwrap().is_refusal() && e.kind() == ErrorKind::Unavailable,
            "{e}"
        );
        let oom = Error::server_reply("n1:7000", "OOM command not allowed");
        assert_eq!(one_outcome(vec![oom.clone(), oom.clone()], 2), Err(oom));
        assert_eq!(one_outcome(Vec::new(), 3), Ok(()));
    }
}
