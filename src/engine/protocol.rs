//! What goes into the engine and what comes out. Every event names the job it belongs to.

use std::time::Duration;

use candle_core::Tensor;

/// Identifies a submitted job; later jobs have larger ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// Which picture a job renders into (an output node, the interpolation strip, ...): of the jobs
/// for one output only the newest matters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputKey(pub String);

/// How a change arrived, which decides what happens to the job already running for its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A typed value, a finished stroke, a released slider, a prompt edit: the running job is
    /// cancelled within one network evaluation and the newest starts.
    Discrete,
    /// One of a stream of changes while a control is dragged: a running job that will finish
    /// within [`DRAG_FINISH_BUDGET`] finishes first, so the picture keeps updating; a longer one is
    /// cancelled at once. Intermediate values are dropped.
    Drag,
}

/// A running job finishes during a drag when it is expected to end within this.
pub const DRAG_FINISH_BUDGET: Duration = Duration::from_secs(1);

/// A unit of work for the engine's backend.
pub trait Work: Send + 'static {
    /// Which output the result is for.
    fn output(&self) -> &OutputKey;
}

/// What a job yields.
#[derive(Debug, Clone)]
pub enum Finished {
    /// A picture.
    Image {
        /// RGB, row-major, 8 bits per channel.
        rgb: Vec<u8>,
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// The final latent, when the job has one.
        latent: Option<Tensor>,
        /// Prompt words the model does not know.
        unknown_words: Vec<String>,
        /// Other things the user should know about it (LoRA layers that matched nothing).
        notes: Vec<String>,
        /// What made it, in AUTOMATIC1111's `parameters` format ("" when unknown).
        parameters: String,
    },
    /// A model is loaded: the one `Progress` previews now come from.
    ModelLoaded {
        /// Its name (folder or file name).
        name: String,
        /// Its latent-to-RGB preview map.
        preview: crate::models::preview::LatentRgbMap,
    },
}

/// Events the engine sends back.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The job started running.
    Started,
    /// A step finished: `step` of `total`, with the predicted clean latent for a live preview
    /// (or, where the model decodes previews through a TAESD, that picture: `[1, 3, H, W]` in
    /// [0, 1]).
    Progress {
        /// Steps done.
        step: usize,
        /// Steps in all.
        total: usize,
        /// Predicted x_0 after this step (`None` where the backend has no latent).
        preview: Option<Tensor>,
    },
    /// The job finished.
    Done {
        /// The result.
        result: Finished,
        /// Wall time from start to end.
        elapsed: Duration,
    },
    /// The job failed (an error or a panic); the engine goes on.
    Failed {
        /// What went wrong, readable.
        error: String,
    },
    /// The job was cancelled while running, or dropped before it ran because a newer job for
    /// the same output arrived. No more events follow for it.
    Cancelled,
}

/// One event, for one job.
#[derive(Debug, Clone)]
pub struct Event {
    /// The job.
    pub job: JobId,
    /// Its output.
    pub output: OutputKey,
    /// What happened.
    pub kind: EventKind,
}
