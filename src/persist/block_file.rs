//! A buffered file writer that bypasses the page cache (`O_DIRECT`) where the file system
//! allows it. Saving a big table otherwise spends much of its CPU copying every byte into the
//! page cache; with `O_DIRECT` the device reads the aligned buffer itself. File systems that
//! refuse `O_DIRECT` (tmpfs, some network mounts) get ordinary buffered writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;

use crate::handoff::{handoff, Feed};

/// Alignment of buffer addresses, lengths and file offsets for `O_DIRECT` (the largest
/// logical block size in common use).
const BLOCK: usize = 4096;

/// A buffer of whole pages mapped straight from the kernel (so aligned to [`BLOCK`], zeroed,
/// and returned to the system when dropped rather than left in a malloc arena).
struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer is owned exclusively by its writer.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(cap: usize) -> io::Result<AlignedBuf> {
        let cap = cap.max(BLOCK).next_multiple_of(BLOCK);
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(AlignedBuf {
            ptr: ptr.cast(),
            cap,
            len: 0,
        })
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: the mapping is `cap >= len` bytes, all initialised (zero-filled).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Copies as much of `data` as fits; returns the bytes taken.
    fn take(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        // SAFETY: `len + n <= cap`, and `data` cannot overlap a buffer we own.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(self.len), n) };
        self.len += n;
        n
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length.
        unsafe { libc::munmap(self.ptr.cast(), self.cap) };
    }
}

/// Writes a file through aligned buffers, with `O_DIRECT` when the file is new and the file
/// system takes it. A background thread writes one buffer while the caller fills the other,
/// so the device's time overlaps the caller's.
pub struct BlockWriter {
    /// The buffer being filled.
    buf: AlignedBuf,
    /// Full buffers to the writer thread, written ones back from it.
    feed: Option<Feed<AlignedBuf>>,
    writer: Option<thread::JoinHandle<io::Result<File>>>,
    direct: bool,
    /// Bytes handed to `write` so far (the final length of a created file).
    len: u64,
}

impl BlockWriter {
    /// Creates (truncating) `path` with buffers of about `buffer_bytes`.
    pub fn create(path: &Path, buffer_bytes: usize) -> io::Result<BlockWriter> {
        let open = |flags: i32| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = open_direct_or_buffered(path, open)?;
        Self::start(file, direct, buffer_bytes)
    }

    /// Opens `path` for appending (created if missing), with ordinary buffered writes: its
    /// current length need not be block-aligned.
    pub fn append(path: &Path, buffer_bytes: usize) -> io::Result<BlockWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Self::start(file, false, buffer_bytes)
    }

    fn start(mut file: File, direct: bool, buffer_bytes: usize) -> io::Result<BlockWriter> {
        let (feed, take) = handoff::<AlignedBuf>();
        take.give_back(AlignedBuf::new(buffer_bytes)?);
        let writer = thread::Builder::new()
            .name("rde-file-writer".into())
            .spawn(move || {
                for mut buf in take.iter() {
                    file.write_all(buf.filled())?;
                    buf.len = 0;
                    // The caller may have finished already; the buffer is then dropped.
                    take.give_back(buf);
                }
                Ok(file)
            })?;
        Ok(BlockWriter {
            buf: AlignedBuf::new(buffer_bytes)?,
            feed: Some(feed),
            writer: Some(writer),
            direct,
            len: 0,
        })
    }

    /// Hands the filled buffer to the writer thread and takes an empty one.
    fn swap(&mut self) -> io::Result<()> {
        let sent = match &self.feed {
            Some(feed) => feed
                .wait_reuse()
                .is_some_and(|spare| feed.send(std::mem::replace(&mut self.buf, spare))),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer thread stopped on an error: report it.
        Err(self
            .stop()
            .err()
            .unwrap_or_else(|| io::Error::other("the file writer thread stopped")))
    }

    /// Closes the channel and waits for the writer thread.
    fn stop(&mut self) -> io::Result<File> {
        self.feed = None;
        match self.writer.take() {
            Some(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Err(io::Error::other("the file writer thread stopped")),
        }
    }

    /// Writes what is buffered and returns the file (not yet synced), `len` bytes long.
    pub fn finish(mut self) -> io::Result<File> {
        let unaligned = self.direct && self.buf.len % BLOCK != 0;
        if unaligned {
            // O_DIRECT writes whole blocks: pad the tail, then cut the file to its length.
            // `cap` is a multiple of BLOCK, so the padded length fits; the padding (zeroes or
            // stale buffer bytes) is cut off again by `set_len`.
            self.buf.len = self.buf.len.next_multiple_of(BLOCK);
        }
        if self.buf.len > 0 {
            self.swap()?;
        }
        let file = self.stop()?;
        if unaligned {
            file.set_len(self.len)?;
        }
        Ok(file)
    }
}

impl Write for BlockWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len == self.buf.cap {
            self.swap()?;
        }
        let n = self.buf.take(data);
        self.len += n as u64;
        Ok(n)
    }

    /// Buffered bytes are written by [`BlockWriter::finish`] (an `O_DIRECT` file can only take
    /// whole blocks).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens with `O_DIRECT` (`open(flags)`), or without it where the file system refuses it with
/// `EINVAL`: (file, whether direct).
fn open_direct_or_buffered(
    path: &Path,
    open: impl Fn(i32) -> io::Result<File>,
) -> io::Result<(File, bool)> {
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!("{}: no O_DIRECT here, buffered writes", path.display());
            Ok((open(0)?, false))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exactly_the_bytes_given_whatever_their_alignment() {
        let dir = tempfile::tempdir().unwrap();
        for total in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 17, 100_003] {
            let path = dir.path().join(format!("f{total}"));
            let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = BlockWriter::create(&path, 8192).unwrap();
            // Uneven pieces, so buffer boundaries fall mid-piece.
            for piece in data.chunks(777) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap().sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{total} bytes");
        }
    }

    #[test]
    fn a_file_system_refusing_o_direct_gets_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Stands in for tmpfs on older kernels and some network mounts.
        let refusing = |flags: i32| {
            if flags & libc::O_DIRECT != 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
        };
        let (file, direct) = open_direct_or_buffered(&path, refusing).unwrap();
        assert!(!direct);
        let mut w = BlockWriter::start(file, direct, 4096).unwrap();
        w.write_all(&[7; 5000]).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 5000]);
        // Any other error is the caller's.
        let denied = |_: i32| Err(io::Error::from_raw_os_error(libc::EACCES));
        assert!(open_direct_or_buffered(&path, denied).is_err());
    }

    #[test]
    fn appends_after_an_unaligned_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = BlockWriter::create(&path, 4096).unwrap();
        w.write_all(&[1; 4099]).unwrap();
        w.finish().unwrap();
        let mut w = BlockWriter::append(&path, 4096).unwrap();
        w.write_all(&[2; 5000]).unwrap();
        w.finish().unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 9099);
        assert!(got[..4099].iter().all(|&b| b == 1) && got[4099..].iter().all(|&b| b == 2));
    }
}
