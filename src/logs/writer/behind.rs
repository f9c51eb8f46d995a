//! Drop-behind: the page cache keeps only the last few MiB of each log file.
//!
//! A node's lines are written once and read, if at all, by `tail -F` right after they land or
//! by `grep`/`jq` long after. Left to itself the kernel keeps every written page cached until
//! memory runs short, so a busy tracer fills the page cache with log data, evicting what the
//! node beside it reads (its chain database), and every new page the writes need is one more
//! page to allocate (and, in a VM with free page reporting, to fault in on the host). So as
//! each file passes a window boundary, the writer asks for the writeback of the window just
//! filled and the eviction of the windows before the one written back last: their pages are
//! clean by then, and the next writes reuse them. Both are `posix_fadvise(POSIX_FADV_DONTNEED)`:
//! on Linux it starts the writeback of a range's dirty pages and evicts its clean ones.
//!
//! That call does the writeback's work (ext4 allocates the blocks then) in the caller, up to
//! milliseconds with many files, so the writer threads only queue it: one thread of its own,
//! `tracerd-behind`, makes the calls, on a duplicate of the file's descriptor, from a queue of
//! [`QUEUE`] requests. A request that finds the queue full is dropped; so is one whose
//! descriptor cannot be duplicated. Only advice: the data is in the file either way, an
//! error changes nothing (tmpfs, for one, keeps its pages), and no writer ever waits for it.
//!
//! A rotated file's rest is advised as it is closed; a window still under writeback then
//! stays cached until the kernel reclaims it.

use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

use rustix::fs::{fadvise, Advice};

/// Bytes per window: one request per MiB written, the last 1–2 MiB of a file (about 3,500
/// lines of 300 bytes) always cached.
pub(super) const WINDOW: u64 = 1 << 20;

/// Windows before the one just written back that each eviction covers again: a page still
/// under writeback when its window is first evicted is skipped, and evicted a window later.
const RETRY_WINDOWS: u64 = 4;

/// Requests waiting for the `tracerd-behind` thread, each holding a descriptor: a bound on
/// the descriptors it holds (a stalled disk fills the queue, and the page cache then grows
/// as it would without drop-behind).
const QUEUE: usize = 64;

/// The `tracerd-behind` thread's nice value: when the cores are busy it gets about a tenth
/// of a normal thread's share, enough at half load (where it needs a few percent of a core)
/// and, at full load, a queue that fills and drops advice before it slows a write.
const NICE: i32 = 10;

/// What a write that took a file from `before` to `after` bytes should advise: the byte range
/// whose writeback to start (the windows this write completed) and the range to evict
/// (windows whose writeback started at an earlier boundary). `None` while no boundary passed.
pub(super) fn ranges(before: u64, after: u64) -> Option<(Range<u64>, Range<u64>)> {
    let (from, to) = (before / WINDOW, after / WINDOW);
    if to <= from {
        return None;
    }
    let write_back = from * WINDOW..to * WINDOW;
    let evict = from.saturating_sub(RETRY_WINDOWS) * WINDOW..to.saturating_sub(1) * WINDOW;
    Some((write_back, evict))
}

/// After a write took `file` from `before` to `after` bytes: queues [`ranges`]' advice.
pub(super) fn advance(file: &File, before: u64, after: u64) {
    if let Some((write_back, evict)) = ranges(before, after) {
        if let Ok(dup) = file.try_clone() {
            submit(Request::Window {
                file: dup,
                write_back,
                evict,
            });
        }
    }
}

/// A file closed for good (rotated): queues the writeback of its rest and the eviction of
/// what is clean; the queue closes it.
pub(super) fn release(file: File) {
    submit(Request::Rest(file));
}

enum Request {
    Window {
        file: File,
        write_back: Range<u64>,
        evict: Range<u64>,
    },
    Rest(File),
    /// Answered once every request before it was made (the tests wait for the advice).
    #[cfg(test)]
    Flush(SyncSender<()>),
}

impl Request {
    fn run(self) {
        match self {
            Request::Window {
                file,
                write_back,
                evict,
            } => {
                advise(&file, write_back);
                advise(&file, evict);
            }
            // A length of 0 means "to the end of the file".
            Request::Rest(file) => {
                let _ = fadvise(&file, 0, None, Advice::DontNeed);
            }
            #[cfg(test)]
            Request::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Queues `request` for the `tracerd-behind` thread; drops it when the queue is full or the
/// thread could not be started.
fn submit(request: Request) {
    if let Some(tx) = queue() {
        let _ = tx.try_send(request);
    }
}

/// The `tracerd-behind` thread's queue, the thread started by the first call.
fn queue() -> Option<&'static SyncSender<Request>> {
    static TX: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(QUEUE);
        std::thread::Builder::new()
            .name("tracerd-behind".into())
            .spawn(move || {
                // Below the writer threads and the runtime: advice can wait, acks cannot.
                // Linux's nice is per thread (setpriority on the thread's id).
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
                rx.into_iter().for_each(Request::run)
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

fn advise(file: &File, range: Range<u64>) {
    if let Some(len) = NonZeroU64::new(range.end.saturating_sub(range.start)) {
        // Advice only: see the module's comment.
        let _ = fadvise(file, range.start, Some(len), Advice::DontNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = WINDOW;

    /// Waits until the `tracerd-behind` thread made every request queued so far.
    fn flush() {
        let (done, wait) = sync_channel(1);
        queue().unwrap().send(Request::Flush(done)).unwrap();
        wait.recv().unwrap();
    }

    #[test]
    fn nothing_is_advised_until_a_window_boundary_is_passed() {
        assert_eq!(ranges(0, W - 1), None);
        assert_eq!(ranges(W, 2 * W - 1), None);
        assert_eq!(ranges(5, 5), None);
    }

    #[test]
    fn each_boundary_writes_back_the_window_filled_and_evicts_those_written_back_before() {
        // The first boundary: write back window 0, nothing written back earlier to evict.
        assert_eq!(ranges(W - 10, W + 10), Some((0..W, 0..0)));
        // The second: write back window 1, evict window 0 (written back at the first).
        assert_eq!(ranges(2 * W - 1, 2 * W), Some((W..2 * W, 0..W)));
        // Far into the file: window 9 written back, windows 5..=8 evicted (again).
        assert_eq!(
            ranges(10 * W - 1, 10 * W),
            Some((9 * W..10 * W, 5 * W..9 * W))
        );
    }

    #[test]
    fn a_write_spanning_windows_writes_back_all_it_completed() {
        assert_eq!(ranges(3 * W + 7, 7 * W + 1), Some((3 * W..7 * W, 0..6 * W)));
    }

    /// Bytes of `path` in the page cache, by util-linux's `fincore` (what an operator would
    /// run to see it).
    fn cached_bytes(path: &std::path::Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore is missing (as root: apt-get install util-linux-extra)");
        assert!(out.status.success(), "fincore: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_page_cache_keeps_only_the_last_window_of_a_written_file_and_every_byte_stays() {
        use std::io::Write;
        // Not tmpfs (whose pages are never evicted): the checkout's own disk.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f.json");
        let mut file = File::create(&path).unwrap();
        let mut line = [b'x'; 1024];
        line[1023] = b'\n';
        let mut len = 0;
        for _ in 0..8 {
            for _ in 0..W / 1024 {
                file.write_all(&line).unwrap();
                advance(&file, len, len + 1024);
                len += 1024;
            }
            // Clean by the next boundary, so each eviction finds its window written back
            // (a busy disk may still be writing a window then; it is evicted a window later).
            file.sync_data().unwrap();
        }
        // Windows 0..=6 evicted at the boundaries since; window 7's writeback just started.
        flush();
        let cached = cached_bytes(&path);
        assert!(cached <= 2 * W, "{cached} bytes of 8 MiB still cached");
        release(file);
        let read = std::fs::read(&path).unwrap();
        assert_eq!(read.len() as u64, 8 * W);
        assert!(read.chunks(1024).all(|l| l == line));
    }

    #[test]
    fn without_the_advice_the_kernel_keeps_every_page() {
        use std::io::Write;
        // The control: the same writes without `advance` stay cached, so the test above
        // measures the advice, not a kernel that evicts on its own.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f.json");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![b'x'; 8 * W as usize]).unwrap();
        file.sync_data().unwrap();
        assert!(cached_bytes(&path) >= 7 * W);
    }
}
