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
//! A rotated file is handed to that thread, which advises its rest at once and again 250 ms
//! later (so its last window, dirty at the first pass, is evicted too), then closes it.

use std::collections::VecDeque;
use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// What a file written to `after` bytes, whose writeback was asked for up to `before`,
/// should advise: the byte range whose writeback to start (the windows completed since) and
/// the range to evict (windows whose writeback started at an earlier boundary). `None`
/// while no boundary passed.
pub(super) fn ranges(before: u64, after: u64) -> Option<(Range<u64>, Range<u64>)> {
    let (from, to) = (before / WINDOW, after / WINDOW);
    if to <= from {
        return None;
    }
    let write_back = from * WINDOW..to * WINDOW;
    let evict = from.saturating_sub(RETRY_WINDOWS) * WINDOW..to.saturating_sub(1) * WINDOW;
    Some((write_back, evict))
}

/// After a write took `file` to `after` bytes: queues [`ranges`]' advice from `advised`, the
/// end of the last writeback asked for, which moves on only when the request was queued (so
/// the next request covers what a full queue dropped).
pub(super) fn advance(file: &File, advised: &mut u64, after: u64) {
    if let Some((write_back, evict)) = ranges(*advised, after) {
        let end = write_back.end;
        let queued = file.try_clone().is_ok_and(|dup| {
            submit(Request::Window {
                file: dup,
                write_back,
                evict,
            })
        });
        if queued {
            *advised = end;
        }
    }
}

/// A file closed for good (rotated): queues the writeback of its rest and the eviction of
/// what is clean, then, [`AGAIN`] later, the eviction of what was written back meanwhile;
/// the `tracerd-behind` thread closes it after that.
pub(super) fn release(file: File) {
    // Dropped (and the file closed) when the queue is full: its pages stay cached, as
    // without drop-behind.
    let _ = submit(Request::Rest(file));
}

enum Request {
    Window {
        file: File,
        write_back: Range<u64>,
        evict: Range<u64>,
    },
    Rest(File),
    /// Answered once every request before it was made and every held file's second pass
    /// (the tests wait for the advice).
    #[cfg(test)]
    Flush(SyncSender<()>),
}

impl Request {
    /// Makes the request's calls; a rotated file comes back for its second pass.
    fn run(self, closing: &mut Closing) {
        match self {
            Request::Window {
                file,
                write_back,
                evict,
            } => {
                advise(&file, write_back);
                advise(&file, evict);
            }
            Request::Rest(file) => {
                advise_rest(&file);
                closing.hold(file);
            }
            #[cfg(test)]
            Request::Flush(done) => {
                closing.finish_due(None);
                let _ = done.send(());
            }
        }
    }
}

/// Rotated files between their two passes: the first starts the writeback of the window
/// still dirty and evicts the rest, the second, [`AGAIN`] later, evicts that window once
/// it is written back; then the file is closed. At most [`QUEUE`] are held (one more
/// descriptor each): the oldest is finished early to make room.
#[derive(Default)]
struct Closing(VecDeque<(Instant, File)>);

/// The pause between a rotated file's two passes: its last window (up to 1 MiB) is written
/// back well within it, and at 8 nodes × 250,000 objects/s a dozen files are held meanwhile.
const AGAIN: Duration = Duration::from_millis(250);

impl Closing {
    fn hold(&mut self, file: File) {
        if self.0.len() >= QUEUE {
            if let Some((_, oldest)) = self.0.pop_front() {
                advise_rest(&oldest);
            }
        }
        self.0.push_back((Instant::now() + AGAIN, file));
    }

    /// Gives every file whose pause ended by `now` (every file, for `None`) its second pass
    /// and closes it.
    fn finish_due(&mut self, now: Option<Instant>) {
        while let Some((due, _)) = self.0.front() {
            if now.is_some_and(|now| *due > now) {
                break;
            }
            if let Some((_, file)) = self.0.pop_front() {
                advise_rest(&file);
            }
        }
    }

    /// How long the thread may wait for the next request: until the oldest pause ends.
    fn wait(&self) -> Option<Duration> {
        let (due, _) = self.0.front()?;
        Some(due.saturating_duration_since(Instant::now()))
    }
}

/// The `tracerd-behind` thread: makes each request's calls, and rotated files' second passes
/// when they are due, until every sender is gone.
fn serve(rx: Receiver<Request>) {
    let mut closing = Closing::default();
    loop {
        let next = match closing.wait() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => rx.recv_timeout(wait),
        };
        match next {
            Ok(request) => request.run(&mut closing),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        closing.finish_due(Some(Instant::now()));
    }
}

/// Queues `request` for the `tracerd-behind` thread: `false` (the request dropped) when the
/// queue is full or the thread could not be started.
fn submit(request: Request) -> bool {
    queue().is_some_and(|tx| tx.try_send(request).is_ok())
}

/// The `tracerd-behind` thread's queue, the thread started by the first call.
fn queue() -> Option<&'static SyncSender<Request>> {
    static TX: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(QUEUE);
        std::thread::Builder::new()
            .name("tracerd-behind".into())
            // At the writer threads' priority: at nice 10 it fell behind at full load (the
            // queue full, whole files left cached; BENCHMARKS.md, twelfth session).
            .spawn(move || serve(rx))
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Starts the writeback of `file`'s dirty pages, evicts its clean ones.
fn advise_rest(file: &File) {
    // A length of `None` means "to the end of the file".
    let _ = fadvise(file, 0, None, Advice::DontNeed);
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
        let (mut len, mut advised) = (0, 0);
        for _ in 0..8 {
            for _ in 0..W / 1024 {
                file.write_all(&line).unwrap();
                len += 1024;
                advance(&file, &mut advised, len);
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
    fn a_rotated_file_leaves_the_cache_once_written_back_and_is_then_closed() {
        use std::io::Write;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f.json");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![b'x'; 3 * W as usize]).unwrap();
        release(file.try_clone().unwrap());
        // Written back before the second pass, which `flush` makes at once.
        file.sync_data().unwrap();
        drop(file);
        flush();
        let cached = cached_bytes(&path);
        assert!(
            cached < W / 4,
            "{cached} bytes of a rotated file still cached"
        );
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|target| target.starts_with(dir.path()))
            .count();
        assert_eq!(
            open, 0,
            "the rotated file is still open after its second pass"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * W);
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
