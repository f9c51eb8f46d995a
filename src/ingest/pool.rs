//! The writer threads: a small pool of std threads that runs the node writers' blocking
//! operations (render + `write(2)`, checkpoints, closes) instead of one tokio
//! `spawn_blocking` per write job.
//!
//! Why: tokio's blocking pool wakes an idle thread for every job as long as it has one, so
//! at 100 nodes × 100 batches a second every job cost a futex wake and a context switch of
//! its own (BENCHMARKS.md, "Ack latency at half load: writer threads"). Here a job is queued
//! for a thread already running when one is (it takes the next job without sleeping), and an
//! idle thread is woken only when the queue holds more jobs than threads are running.
//!
//! A write that stalls in the kernel (a hung disk) must not stall other nodes: a supervisor
//! thread, awake only while there is work, wakes an idle thread or starts a new one (up to
//! [`MAX_THREADS`]) whenever the oldest queued job has waited [`STALL`] while fewer than the
//! eager count (the cores) of the threads at work are moving, that is, not in one job for
//! `STALL` or longer. So a node's job waits behind a stalled one at most about `STALL`,
//! however many are stalled, until `MAX_THREADS` are (today's blocking pool had 16 threads
//! for every blocking job of the daemon); but jobs that merely queue behind moving threads
//! (10,000 nodes closing at once) get no thread more: more threads than cores would not
//! drain them sooner, and each would leave a malloc arena and a stack behind (issue 21: the
//! idle fleet's RSS). Threads beyond [`KEPT_THREADS`] end after [`KEEP_ALIVE`] without a
//! job, handing their allocator pages back. A write error is not a stall: it returns at once
//! and the node's writer task waits between retries, holding no thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most writer threads (the daemon's blocking pool has 16 for everything else).
pub const MAX_THREADS: usize = 16;
/// Threads kept while idle.
const KEPT_THREADS: usize = 1;
/// How long the oldest queued job may wait before another thread is woken or started for it.
pub const STALL: Duration = Duration::from_millis(10);
/// An idle thread beyond [`KEPT_THREADS`] ends after this long without a job.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

type Task = Box<dyn FnOnce() + Send>;

/// The writer pool (one per process: [`pool`]).
pub struct Pool {
    state: Mutex<State>,
    /// Idle threads wait here.
    work: Condvar,
    /// The supervisor waits here.
    watch: Condvar,
    /// Threads started or woken as soon as jobs queue up.
    eager: usize,
    max_threads: usize,
    stall: Duration,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Task, Instant)>,
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Wake-ups sent to idle threads that have not yet returned from their wait (an
    /// estimate, used only to avoid waking two threads for one job).
    waking: usize,
    /// Threads running a job.
    running: usize,
    /// When each running job started, by job number (at most one per thread).
    started: Vec<(u64, Instant)>,
    /// The number the next job to start gets.
    next_job: u64,
    /// Most threads alive at once (tests).
    peak: usize,
    supervisor: bool,
    /// The supervisor sleeps until woken (no work).
    supervisor_parked: bool,
}

impl State {
    /// Threads at work that are not stalled: running a job begun less than `stall` ago, or
    /// woken for one.
    fn moving(&self, stall: Duration) -> usize {
        let stalled = self
            .started
            .iter()
            .filter(|(_, at)| at.elapsed() >= stall)
            .count();
        self.running.saturating_sub(stalled) + self.waking
    }
}

/// The process's writer pool.
pub fn pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Pool::new(cores.min(MAX_THREADS), MAX_THREADS, STALL)
    })
}

impl Pool {
    /// A pool of at most `max_threads` threads, of which up to `eager` are started (or
    /// woken) as soon as jobs queue up; more only for a job that waited `stall`.
    pub fn new(eager: usize, max_threads: usize, stall: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            watch: Condvar::new(),
            eager: eager.clamp(1, max_threads.max(1)),
            max_threads: max_threads.max(1),
            stall,
        })
    }

    /// Runs `f` on a writer thread; its result arrives on the returned receiver (an error
    /// there means `f` panicked).
    pub fn run<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx
    }

    fn submit(self: &Arc<Self>, task: Task) {
        let mut s = crate::sync::lock(&self.state);
        s.queue.push_back((task, Instant::now()));
        // A thread that is running takes the job when it is done, without sleeping; wake (or
        // start) another only for a queue longer than the threads already at it.
        let at_it = s.running + s.waking;
        if s.queue.len() > at_it {
            if s.idle > s.waking {
                s.waking += 1;
                self.work.notify_one();
            } else if s.threads < self.eager {
                self.start_thread(&mut s);
            }
        }
        if !s.supervisor {
            let pool = self.clone();
            let started = std::thread::Builder::new()
                .name("tracerd-writer-watch".into())
                .spawn(move || pool.supervise());
            s.supervisor = started.is_ok();
        } else if s.supervisor_parked {
            s.supervisor_parked = false;
            self.watch.notify_one();
        }
    }

    /// Starts a thread, if the cap allows (a job left waiting is seen by the supervisor).
    fn start_thread(self: &Arc<Self>, s: &mut State) {
        if s.threads >= self.max_threads {
            return;
        }
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name("tracerd-writer".into())
            .spawn(move || pool.work());
        if started.is_ok() {
            s.threads += 1;
            s.peak = s.peak.max(s.threads);
        }
    }

    fn work(self: Arc<Self>) {
        let mut s = crate::sync::lock(&self.state);
        loop {
            if let Some((task, _)) = s.queue.pop_front() {
                s.running += 1;
                let job = s.next_job;
                s.next_job += 1;
                s.started.push((job, Instant::now()));
                drop(s);
                // A panic ends the job (its receiver sees the sender dropped), not the thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                s = crate::sync::lock(&self.state);
                s.running -= 1;
                if let Some(i) = s.started.iter().position(|&(j, _)| j == job) {
                    s.started.swap_remove(i);
                }
                continue;
            }
            s.idle += 1;
            let (guard, timeout) = self
                .work
                .wait_timeout(s, KEEP_ALIVE)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s = guard;
            s.idle -= 1;
            s.waking = s.waking.saturating_sub(1);
            if timeout.timed_out() && s.queue.is_empty() && s.threads > KEPT_THREADS {
                s.threads -= 1;
                return;
            }
        }
    }

    /// While there is work, every `stall / 2`: wakes or starts a thread for a job that has
    /// waited `stall` if fewer than `eager` threads are moving (running a job that started
    /// less than `stall` ago, or woken for one). Sleeps while there is none.
    fn supervise(self: Arc<Self>) {
        let mut s = crate::sync::lock(&self.state);
        loop {
            if s.queue.is_empty() && s.running == 0 {
                s.supervisor_parked = true;
                while s.supervisor_parked {
                    s = self
                        .watch
                        .wait(s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                continue;
            }
            let waited = s.queue.front().map(|(_, at)| at.elapsed());
            if waited.is_some_and(|w| w >= self.stall) && s.moving(self.stall) < self.eager {
                if s.idle > 0 {
                    s.waking += 1;
                    self.work.notify_one();
                } else {
                    self.start_thread(&mut s);
                }
            }
            let (guard, _) = self
                .watch
                .wait_timeout(s, self.stall / 2)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s = guard;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Generous: a loaded 2-core CI machine may deschedule a thread for a long time.
    const PATIENCE: Duration = Duration::from_secs(20);

    fn wait<R>(rx: tokio::sync::oneshot::Receiver<R>) -> Result<R, &'static str> {
        let deadline = Instant::now() + PATIENCE;
        let mut rx = rx;
        loop {
            match rx.try_recv() {
                Ok(r) => return Ok(r),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Err("dropped"),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    if Instant::now() > deadline {
                        return Err("timed out");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    #[test]
    fn every_job_runs_once_from_many_submitters() {
        let pool = Pool::new(2, 4, STALL);
        let submitters: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let rxs: Vec<_> = (0..500u64)
                        .map(|i| pool.run(move || t * 1000 + i))
                        .collect();
                    rxs.into_iter()
                        .map(|rx| wait(rx).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in submitters.into_iter().enumerate() {
            let got = h.join().unwrap();
            assert_eq!(
                got,
                (0..500).map(|i| t as u64 * 1000 + i).collect::<Vec<_>>()
            );
        }
        assert!(crate::sync::lock(&pool.state).threads <= 4);
    }

    /// A write stalled in the kernel (here: a job blocked on a channel) holds its thread
    /// only: other nodes' jobs still run, on a thread woken or started for them after
    /// `STALL`, however many stalled jobs hold threads, up to the cap.
    #[test]
    fn stalled_jobs_do_not_stall_other_jobs() {
        let pool = Pool::new(1, 4, Duration::from_millis(10));
        let mut releases = Vec::new();
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let (release, held) = mpsc::channel::<()>();
            let (started_tx, started) = mpsc::channel::<()>();
            stalled.push(pool.run(move || {
                started_tx.send(()).unwrap();
                held.recv().unwrap();
            }));
            started
                .recv_timeout(PATIENCE)
                .expect("the stalled job started");
            releases.push(release);
            // Another node's job, queued behind the stalled ones, still runs.
            let begun = Instant::now();
            assert_eq!(wait(pool.run(|| 7)), Ok(7));
            assert!(begun.elapsed() < PATIENCE);
        }
        // Three threads stalled, one left: the cap holds, and the fourth still serves.
        assert_eq!(wait(pool.run(|| 8)), Ok(8));
        assert!(crate::sync::lock(&pool.state).threads <= 4);
        for r in releases {
            r.send(()).unwrap();
        }
        for rx in stalled {
            assert_eq!(wait(rx), Ok(()));
        }
    }

    /// With every thread stalled, queued jobs wait (bounded memory: the caller's queue), and
    /// run as soon as one stalled job ends.
    #[test]
    fn at_the_cap_jobs_wait_for_a_thread() {
        let pool = Pool::new(1, 1, Duration::from_millis(10));
        let (release, held) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let stalled = pool.run(move || {
            started_tx.send(()).unwrap();
            held.recv().unwrap();
        });
        started.recv_timeout(PATIENCE).unwrap();
        let mut queued = pool.run(|| 9);
        std::thread::sleep(Duration::from_millis(50));
        assert!(queued.try_recv().is_err(), "ran past the cap");
        release.send(()).unwrap();
        assert_eq!(wait(stalled), Ok(()));
        assert_eq!(wait(queued), Ok(9));
    }

    /// Jobs that queue behind threads that are moving (10,000 idle nodes closing at once)
    /// get no thread beyond the eager count, however long the queue waits: more threads
    /// would not drain it sooner on that many cores, and each leaves a malloc arena and a
    /// stack behind (issue 21's idle-fleet RSS). The rule before this test started a thread
    /// every `stall / 2` while the oldest job had waited `stall`: 6 threads here.
    #[test]
    fn jobs_queued_behind_moving_threads_get_no_more_threads() {
        // A job counts as stalled after 100 ms: 100 times its own length, so a descheduled
        // thread on a loaded machine does not pass for a stalled one (one such is allowed
        // for below), while the queue (1,000 ms of jobs on 2 threads) waits 5 times that.
        let pool = Pool::new(2, 16, Duration::from_millis(100));
        let jobs: Vec<_> = (0..1000u32)
            .map(|i| {
                pool.run(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    i
                })
            })
            .collect();
        for (i, rx) in jobs.into_iter().enumerate() {
            assert_eq!(wait(rx), Ok(i as u32));
        }
        let peak = crate::sync::lock(&pool.state).peak;
        assert!(
            peak <= 3,
            "{peak} threads for jobs queued behind moving ones"
        );
    }

    #[test]
    fn a_panicking_job_ends_its_job_not_the_pool() {
        let pool = Pool::new(1, 1, STALL);
        let rx = pool.run(|| -> u8 { panic!("job panics") });
        assert_eq!(wait(rx), Err("dropped"));
        assert_eq!(wait(pool.run(|| 3)), Ok(3));
    }
}
