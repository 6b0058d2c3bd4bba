//! The engine thread's loop: coalesce waiting jobs per output, run the oldest output's newest
//! job, and decide at every step whether a newer job should take over.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::protocol::{Event, EventKind, JobId, OutputKey, Urgency, Work, DRAG_FINISH_BUDGET};
use super::{Backend, Message, Waker};

/// A job waiting to run.
struct Waiting<W> {
    id: JobId,
    work: W,
    urgency: Urgency,
}

/// Jobs waiting to run, at most one per output, outputs in order of arrival.
struct Queue<W> {
    waiting: HashMap<OutputKey, Waiting<W>>,
    order: VecDeque<OutputKey>,
    /// The running job's output was cancelled outright.
    cancel_running: Option<OutputKey>,
    shutdown: bool,
}

/// Sends events and wakes the GUI.
struct Outbox {
    events: Sender<Event>,
    waker: Waker,
}

impl Outbox {
    fn send(&self, job: JobId, output: &OutputKey, kind: EventKind) {
        // Fails only when the engine handle is gone, and then nobody listens.
        let _ = self.events.send(Event { job, output: output.clone(), kind });
        (self.waker)();
    }
}

impl<W: Work> Queue<W> {
    /// Takes in one message; a job replaces (and cancels) the waiting job of its output.
    fn accept(&mut self, message: Message<W>, out: &Outbox) {
        match message {
            Message::Job { id, work, urgency } => {
                let output = work.output().clone();
                if let Some(old) = self.waiting.insert(output.clone(), Waiting { id, work, urgency }) {
                    out.send(old.id, &output, EventKind::Cancelled);
                } else {
                    self.order.push_back(output);
                }
            }
            Message::Cancel(output) => {
                if let Some(old) = self.waiting.remove(&output) {
                    self.order.retain(|o| o != &output);
                    out.send(old.id, &output, EventKind::Cancelled);
                }
                self.cancel_running = Some(output);
            }
            Message::Shutdown => self.shutdown = true,
        }
    }

    fn drain(&mut self, jobs: &Receiver<Message<W>>, out: &Outbox) {
        while let Ok(message) = jobs.try_recv() {
            self.accept(message, out);
        }
    }

    fn pop(&mut self) -> Option<Waiting<W>> {
        let output = self.order.pop_front()?;
        self.waiting.remove(&output)
    }
}

/// The engine thread.
pub(super) struct Worker<B: Backend> {
    backend: B,
    jobs: Receiver<Message<B::Work>>,
    out: Outbox,
    queue: Queue<B::Work>,
}

impl<B: Backend> Worker<B> {
    pub(super) fn new(
        backend: B,
        jobs: Receiver<Message<B::Work>>,
        events: Sender<Event>,
        waker: Waker,
    ) -> Self {
        let queue =
            Queue { waiting: HashMap::new(), order: VecDeque::new(), cancel_running: None, shutdown: false };
        Self { backend, jobs, out: Outbox { events, waker }, queue }
    }

    pub(super) fn run(mut self) {
        loop {
            // A shutdown may have arrived while a job ran (its step hook drains messages).
            if self.queue.shutdown {
                return;
            }
            if self.queue.order.is_empty() {
                match self.jobs.recv() {
                    Ok(message) => self.queue.accept(message, &self.out),
                    Err(_) => return,
                }
            }
            self.queue.drain(&self.jobs, &self.out);
            if self.queue.shutdown {
                return;
            }
            if let Some(job) = self.queue.pop() {
                self.queue.cancel_running = None;
                self.run_job(job);
            }
        }
    }

    fn run_job(&mut self, job: Waiting<B::Work>) {
        let Self { backend, jobs, out, queue } = self;
        let output = job.work.output().clone();
        out.send(job.id, &output, EventKind::Started);
        let start = Instant::now();
        let mut step_hook = |step: usize, total: usize, preview: Option<&candle_core::Tensor>| {
            out.send(job.id, &output, EventKind::Progress { step, total, preview: preview.cloned() });
            queue.drain(jobs, out);
            if queue.shutdown || queue.cancel_running.as_ref() == Some(&output) {
                return ControlFlow::Break(());
            }
            match queue.waiting.get(&output).map(|w| w.urgency) {
                None => ControlFlow::Continue(()),
                Some(Urgency::Discrete) => ControlFlow::Break(()),
                Some(Urgency::Drag) => {
                    let per_step = start.elapsed() / step.max(1) as u32;
                    let remaining = per_step * total.saturating_sub(step) as u32;
                    if remaining <= DRAG_FINISH_BUDGET {
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    }
                }
            }
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| backend.run(&job.work, &mut step_hook)));
        let kind = match result {
            Ok(Ok(Some(result))) => EventKind::Done { result, elapsed: start.elapsed() },
            Ok(Ok(None)) => EventKind::Cancelled,
            Ok(Err(error)) => EventKind::Failed { error },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                EventKind::Failed { error: format!("the job panicked: {what}") }
            }
        };
        out.send(job.id, &output, kind);
    }
}
