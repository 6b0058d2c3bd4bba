//! The inference engine: one background thread runs the networks and streams events back, so
//! the GUI thread never waits on a model. Latest wins for each output: a discrete change cancels
//! the running job within one network evaluation; during a drag a job that ends within a second
//! finishes first and intermediate values are dropped. Channels are bounded; a waker tells the
//! GUI when something arrived; a failing or panicking job becomes a `Failed` event and the
//! engine goes on.

pub mod protocol;
pub mod spec;
pub mod studio;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Tensor;
use crossbeam_channel::{bounded, Receiver, Sender};

pub use protocol::{Event, EventKind, Finished, JobId, OutputKey, Urgency, Work, DRAG_FINISH_BUDGET};

/// Called after every event the engine sends; the GUI passes its repaint request.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The per-step hook a backend calls after each network evaluation: (step, total, preview).
/// `Break` means: stop now, the job is cancelled.
pub type StepHook<'a> = dyn FnMut(usize, usize, Option<&Tensor>) -> std::ops::ControlFlow<()> + 'a;

/// What runs jobs on the engine thread.
pub trait Backend: Send + 'static {
    /// The jobs it runs.
    type Work: Work;
    /// Runs `work`, calling `step` after every network evaluation. Returns `Ok(None)` when
    /// `step` stopped it, and a readable error when it fails.
    fn run(&mut self, work: &Self::Work, step: &mut StepHook<'_>) -> Result<Option<Finished>, String>;
}

/// Messages to the engine thread.
enum Message<W> {
    Job { id: JobId, work: W, urgency: Urgency },
    Cancel(OutputKey),
    Shutdown,
}

/// Handle to the engine thread; dropping it stops the thread after the running job's next step.
pub struct Engine<W: Work> {
    jobs: Sender<Message<W>>,
    events: Receiver<Event>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

/// Capacity of each channel.
pub const CHANNEL_CAPACITY: usize = 256;

impl<W: Work> Engine<W> {
    /// Starts the engine thread with `backend`.
    pub fn spawn<B: Backend<Work = W>>(backend: B, waker: Waker) -> std::io::Result<Self> {
        let (job_tx, job_rx) = bounded(CHANNEL_CAPACITY);
        let (event_tx, event_rx) = bounded(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("latent-studio-engine".into())
            .spawn(move || worker::Worker::new(backend, job_rx, event_tx, waker).run())?;
        Ok(Self { jobs: job_tx, events: event_rx, next_id: AtomicU64::new(1), thread: Some(thread) })
    }

    /// Submits a job; returns its id. Blocks only while the job channel is full.
    pub fn submit(&self, work: W, urgency: Urgency) -> JobId {
        let id = JobId(self.next_id.fetch_add(1, Ordering::Relaxed));
        // A send fails only when the engine thread is gone; its events say why.
        let _ = self.jobs.send(Message::Job { id, work, urgency });
        id
    }

    /// Cancels the running and waiting jobs of `output` (Esc, the cancel button).
    pub fn cancel(&self, output: OutputKey) {
        let _ = self.jobs.send(Message::Cancel(output));
    }

    /// The events, to drain with `try_recv` each frame.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl<W: Work> Drop for Engine<W> {
    fn drop(&mut self) {
        let _ = self.jobs.send(Message::Shutdown);
        // Unblock a worker waiting to send an event, then wait for it.
        while self.events.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = thread.join();
        }
    }
}
