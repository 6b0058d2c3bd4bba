//! A background worker for the studio's slow work that is not a network evaluation: decoding
//! picture files and rasterising canvases. Whatever a file holds (a huge PNG, a graph with a
//! million strokes), the UI thread only hands the work over and polls for the result, so the
//! window never waits on it.
//!
//! Work no one waits for any more is skipped: a [`Pending`] dropped before its work started
//! (the canvas changed again, the node was deleted) costs nothing. A panic in one piece of work
//! becomes that piece's error; the worker goes on with the next.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// How much work may wait at once; past it, new work is refused rather than queued.
const QUEUE: usize = 256;

/// Why a piece of background work has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackgroundError {
    /// The work panicked (a bug, reported instead of taking the window down).
    #[error("the background work failed: {0}")]
    Panicked(String),
    /// Too much work was waiting.
    #[error("the background worker is busy ({QUEUE} pieces of work waiting); try again")]
    Busy,
    /// The worker thread is gone (it could not start).
    #[error("the background worker is not running")]
    Stopped,
}

type Task = Box<dyn FnOnce() + Send>;

/// The worker: one thread, fed through a bounded channel. Cloning shares the thread.
#[derive(Clone)]
pub struct Worker {
    tasks: Option<Sender<Task>>,
    _thread: Option<Arc<JoinHandle<()>>>,
}

/// The result of submitted work, once it is done.
pub struct Pending<T> {
    result: Receiver<Result<T, BackgroundError>>,
    /// The work runs only while this is alive.
    _wanted: Arc<()>,
}

impl<T> Pending<T> {
    /// The result if the work is done (taken: it is returned once).
    pub fn poll(&self) -> Option<Result<T, BackgroundError>> {
        self.result.try_recv().ok()
    }

    fn ready(result: Result<T, BackgroundError>) -> Self {
        let (tx, rx) = bounded(1);
        let _ = tx.send(result);
        Self { result: rx, _wanted: Arc::new(()) }
    }
}

impl<T, E: std::fmt::Display> Pending<Result<T, E>> {
    /// The result of work that can itself fail, once done: its error and the worker's as one
    /// message.
    pub fn poll_result(&self) -> Option<Result<T, String>> {
        self.poll().map(|r| r.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())))
    }
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    /// Starts the worker thread. If the thread cannot start, every submission reports
    /// [`BackgroundError::Stopped`].
    pub fn new() -> Self {
        let (tx, rx) = bounded::<Task>(QUEUE);
        let thread = std::thread::Builder::new().name("latent-studio-background".into()).spawn(move || {
            for task in rx {
                task();
            }
        });
        match thread {
            Ok(handle) => Self { tasks: Some(tx), _thread: Some(Arc::new(handle)) },
            Err(_) => Self { tasks: None, _thread: None },
        }
    }

    /// Runs `work` on the worker thread; `wake` is called when its result is ready (the studio
    /// passes a repaint request). Work whose [`Pending`] was dropped before it started is skipped.
    pub fn submit<T: Send + 'static>(
        &self,
        wake: impl Fn() + Send + 'static,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        let Some(tasks) = &self.tasks else { return Pending::ready(Err(BackgroundError::Stopped)) };
        let (tx, rx) = bounded(1);
        let wanted = Arc::new(());
        let still_wanted: Weak<()> = Arc::downgrade(&wanted);
        let task: Task = Box::new(move || {
            if still_wanted.upgrade().is_none() {
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                BackgroundError::Panicked(text)
            });
            if tx.send(result).is_ok() {
                wake();
            }
        });
        match tasks.try_send(task) {
            Ok(()) => Pending { result: rx, _wanted: wanted },
            Err(TrySendError::Full(_)) => Pending::ready(Err(BackgroundError::Busy)),
            Err(TrySendError::Disconnected(_)) => Pending::ready(Err(BackgroundError::Stopped)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    fn wait<T>(pending: &Pending<T>) -> Result<T, BackgroundError> {
        let start = Instant::now();
        loop {
            if let Some(result) = pending.poll() {
                return result;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the work never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn work_runs_off_the_calling_thread_and_wakes_once() {
        let worker = Worker::new();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = wakes.clone();
        let caller = std::thread::current().id();
        let pending = worker.submit(
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            move || std::thread::current().id() != caller,
        );
        assert_eq!(wait(&pending), Ok(true));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert!(pending.poll().is_none(), "a result is handed over once");
    }

    #[test]
    fn a_panic_is_that_works_error_and_the_worker_goes_on() {
        let worker = Worker::new();
        let failed = worker.submit(|| {}, || -> u8 { panic!("bad stroke") });
        assert_eq!(wait(&failed), Err(BackgroundError::Panicked("bad stroke".into())));
        let next = worker.submit(|| {}, || 7);
        assert_eq!(wait(&next), Ok(7));
    }

    #[test]
    fn work_no_one_waits_for_is_skipped() {
        let worker = Worker::new();
        let (release, gate) = bounded::<()>(0);
        // Hold the worker so the next submission waits in the queue.
        let blocker = worker.submit(|| {}, move || gate.recv().is_ok());
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        drop(worker.submit(|| {}, move || counted.fetch_add(1, Ordering::SeqCst)));
        let after = worker.submit(|| {}, || "after");
        release.send(()).unwrap();
        assert_eq!(wait(&blocker), Ok(true));
        assert_eq!(wait(&after), Ok("after"));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the dropped submission's work ran");
    }

    #[test]
    fn a_full_queue_refuses_instead_of_blocking() {
        let worker = Worker::new();
        let (release, gate) = bounded::<()>(0);
        let _blocker = worker.submit(|| {}, move || gate.recv().is_ok());
        let start = Instant::now();
        // The blocker may still be queued, so QUEUE + 1 more fill the queue for certain.
        let pending: Vec<_> = (0..QUEUE + 2).map(|i| worker.submit(|| {}, move || i)).collect();
        assert!(start.elapsed() < Duration::from_secs(5), "submitting blocked");
        assert_eq!(pending.last().and_then(|p| p.poll()), Some(Err(BackgroundError::Busy)));
        release.send(()).unwrap();
    }
}
