//! The diffusion core: schedules, samplers, guidance, SDEdit, DDIM inversion and interpolation.
//! Pure math on candle tensors: no GUI, no file I/O. Everything here reproduces diffusers'
//! numbers (see `tests/reference_loops.rs`).

pub mod config;
pub mod denoiser;
pub mod error;
pub mod guidance;
pub mod interpolate;
pub mod inversion;
pub mod noise;
pub mod presets;
pub mod samplers;
pub mod schedule;
pub mod sdedit;
pub mod spacing;
pub mod tensor_ops;

pub use config::{PredictionType, SchedulerConfig, TimestepSpacing};
pub use denoiser::{Conditioning, Denoiser, ModelDenoiser, Network, NoiseLevel, Prediction};
pub use error::{CoreError, Result};
pub use guidance::Guidance;
pub use noise::{NoiseSource, RecordedNoise, SeededNoise};
pub use samplers::{Outcome, SampleContext, Sampler, SamplerKind, SamplerOptions, StepCallback, StepView};
pub use schedule::NoiseSchedule;
