//! The one producer/consumer hand-off between two threads: filled items go one way through a
//! bounded channel (at most one queued), emptied items come back the other way to be refilled,
//! so their buffers are allocated once. Used by the export scan (pages read by the I/O pool,
//! rows handed on by the caller), the file load (batches read ahead of the upsert) and the
//! block file writer (buffers filled by the caller, written by a thread).

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use crate::error::Result;
use crate::sync;

/// The filling side: sends full items, takes emptied ones back. `Sync`, so several producer
/// threads may share it.
pub struct Feed<T> {
    full: SyncSender<T>,
    empty: Mutex<Receiver<T>>,
}

/// The working side: receives full items, gives them back once done with them.
pub struct Take<T> {
    full: Receiver<T>,
    empty: Sender<T>,
}

/// A hand-off with room for one queued item.
pub fn handoff<T>() -> (Feed<T>, Take<T>) {
    let (full_tx, full_rx) = mpsc::sync_channel(1);
    let (empty_tx, empty_rx) = mpsc::channel();
    (
        Feed {
            full: full_tx,
            empty: Mutex::new(empty_rx),
        },
        Take {
            full: full_rx,
            empty: empty_tx,
        },
    )
}

impl<T> Feed<T> {
    /// Hands `item` over, waiting while one is queued; false once the working side is gone.
    pub fn send(&self, item: T) -> bool {
        self.full.send(item).is_ok()
    }

    /// An item given back, if one is waiting.
    pub fn reuse(&self) -> Option<T> {
        sync::lock(&self.empty).try_recv().ok()
    }

    /// Waits for an item to be given back; None once the working side is gone.
    pub fn wait_reuse(&self) -> Option<T> {
        sync::lock(&self.empty).recv().ok()
    }
}

impl<T> Take<T> {
    /// The full items, in order, until the filling side is gone.
    pub fn iter(&self) -> mpsc::Iter<'_, T> {
        self.full.iter()
    }

    /// Returns an item to be refilled (dropped if the filling side is gone).
    pub fn give_back(&self, item: T) {
        let _ = self.empty.send(item);
    }
}

/// Runs `produce` on a thread of its own while the calling thread runs `consume` on each item
/// it sends, in order. A consumer error stops the producer (its sends then return false) and is
/// the one reported; else the producer's result is. At most three items exist at a time (one
/// being filled, one queued, one being consumed); consumed ones are reused
/// ([`Feed::reuse`]).
pub fn read_ahead<T: Send>(
    produce: impl FnOnce(&Feed<T>) -> Result<()> + Send,
    mut consume: impl FnMut(&T) -> Result<()>,
) -> Result<()> {
    let (feed, take) = handoff::<T>();
    std::thread::scope(|s| {
        let producing = s.spawn(move || produce(&feed));
        let mut consumed = Ok(());
        for item in take.iter() {
            consumed = consume(&item);
            if consumed.is_err() {
                break;
            }
            take.give_back(item);
        }
        drop(take);
        let produced = producing
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        consumed.and(produced)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};

    #[test]
    fn items_arrive_in_order_and_their_buffers_are_reused() {
        let allocated = std::sync::atomic::AtomicUsize::new(0);
        let mut got = Vec::new();
        read_ahead(
            |feed: &Feed<Vec<u32>>| {
                for i in 0..100 {
                    let mut b = feed.reuse().unwrap_or_else(|| {
                        allocated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Vec::new()
                    });
                    b.clear();
                    b.push(i);
                    assert!(feed.send(b));
                }
                Ok(())
            },
            |b| {
                got.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(allocated.into_inner() <= 3);
    }

    #[test]
    fn a_consumer_error_stops_the_producer_and_is_the_one_reported() {
        let e = read_ahead(
            |feed: &Feed<u32>| {
                let mut i = 0;
                while feed.send(i) {
                    i += 1;
                }
                Err(Error::new(ErrorKind::Conflict, "stopped"))
            },
            |&i| {
                if i == 5 {
                    return Err(Error::invalid("bad item"));
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = read_ahead(
            |_: &Feed<u32>| Err(Error::new(ErrorKind::Conflict, "read failed")),
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn a_writer_thread_gives_buffers_back_to_be_refilled() {
        // The block file's shape: the caller fills, a thread works, two buffers in all.
        let (feed, take) = handoff::<Vec<u8>>();
        take.give_back(Vec::new());
        let worker = std::thread::spawn(move || {
            let mut total = 0;
            for mut b in take.iter() {
                total += b.len();
                b.clear();
                take.give_back(b);
            }
            total
        });
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.extend_from_slice(&[1, 2, 3]);
            let spare = feed.wait_reuse().unwrap();
            assert!(feed.send(std::mem::replace(&mut buf, spare)));
        }
        drop(feed);
        assert_eq!(worker.join().unwrap(), 30);
    }
}
