//! Samplers: one file each, one trait, one per-step callback that can stop the loop.
//!
//! Each sampler reproduces the diffusers scheduler of the same name step by step (the reference
//! loops in `tests/fixtures/` check this). A sampler is built from a [`SchedulerConfig`] and a
//! step count, so the order "configure, set steps, step" cannot be got wrong.

mod ddim;
mod ddpm;
mod dpmpp_2m;
mod euler;
mod euler_ancestral;
mod heun;
mod lcm;

use std::ops::ControlFlow;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpmpp_2m::DpmPp2m;
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::Heun;
pub use lcm::{boundary_condition, Lcm};

use super::config::{SchedulerConfig, TimestepSpacing};
use super::denoiser::{Denoiser, NoiseLevel};
use super::error::{CoreError, Result};
use super::noise::NoiseSource;
use super::tensor_ops::lincomb;

/// What the callback sees after every network evaluation.
#[derive(Debug)]
pub struct StepView<'a> {
    /// Index of this evaluation, from 0.
    pub index: usize,
    /// Evaluations the whole run makes (Heun makes two per step but the last).
    pub total: usize,
    /// The sampler's state after this evaluation (for Euler-family samplers, in sigma scale).
    pub x: &'a Tensor,
    /// The predicted clean sample x_0 at this evaluation: what a live preview shows.
    pub denoised: &'a Tensor,
}

/// The per-step callback: return `ControlFlow::Break(())` to stop the loop.
pub type StepCallback<'a> = dyn FnMut(&StepView<'_>) -> ControlFlow<()> + 'a;

/// Keeps the unmasked part of a known clean sample, re-noised to each step's level, so only the
/// masked region changes (diffusers' legacy inpainting with a 4-channel UNet).
#[derive(Debug, Clone)]
pub struct Inpaint {
    /// The clean sample whose unmasked part is kept.
    pub known: Tensor,
    /// The unit-variance noise it was noised with at the start.
    pub noise: Tensor,
    /// 1 where the sampler may change the sample, 0 where `known` is kept; broadcastable.
    pub mask: Tensor,
}

/// The model and hooks a sampler runs with.
pub struct SampleContext<'a> {
    /// The model.
    pub denoiser: &'a mut dyn Denoiser,
    /// Noise for stochastic samplers (DDPM, Euler ancestral, LCM, DDIM with eta > 0).
    pub noise: &'a mut dyn NoiseSource,
    /// Called after every evaluation; can stop the loop.
    pub callback: &'a mut StepCallback<'a>,
    /// Optional mask that limits the change to a region.
    pub inpaint: Option<Inpaint>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// All steps ran; the final sample.
    Finished(Tensor),
    /// The callback stopped the loop; the state after the evaluation it stopped at.
    Stopped {
        /// The sampler's state then.
        x: Tensor,
        /// The predicted x_0 then.
        denoised: Tensor,
        /// Evaluations done.
        evaluations: usize,
    },
}

impl Outcome {
    /// The final sample, or `None` if the run was stopped.
    pub fn finished(self) -> Option<Tensor> {
        match self {
            Self::Finished(x) => Some(x),
            Self::Stopped { .. } => None,
        }
    }
}

/// The scale a sampler keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// x = sqrt(a) x_0 + sqrt(1 - a) eps (DDIM, DDPM, LCM, DPM-Solver).
    VariancePreserving,
    /// x = x_0 + sigma eps, sigma = sqrt((1 - a) / a) (Euler, Euler ancestral, Heun).
    Sigma,
}

/// Where a sampler's steps are: how many, at which noise level, in which scale.
pub trait StepPlan {
    /// Number of inference steps.
    fn steps(&self) -> usize;
    /// The scale the state is kept in.
    fn space(&self) -> Space;
    /// alpha_bar of the state at the start of step `step` (`step < steps()`).
    fn alpha_bar_at(&self, step: usize) -> f64;
    /// The training timestep the network sees at step `step`.
    fn timestep_at(&self, step: usize) -> f64;
    /// What unit-variance starting noise is multiplied by (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;
}

/// A sampling algorithm with its timesteps set.
pub trait Sampler {
    /// Which algorithm this is.
    fn kind(&self) -> SamplerKind;
    /// Its steps.
    fn plan(&self) -> &dyn StepPlan;
    /// Runs steps `from..steps()` starting from `x`, a state at the level of step `from`.
    fn run(&self, x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome>;

    /// Number of inference steps.
    fn steps(&self) -> usize {
        self.plan().steps()
    }

    /// The sampler SDEdit at `strength` runs from its first step, when this algorithm places
    /// img2img steps itself; `None` (most samplers) runs the last int(steps · strength) steps of
    /// this one (see [`crate::core::sdedit`]). LCM keeps its step count and spaces the steps over
    /// the start of its distillation grid, as diffusers' `LCMScheduler` does.
    fn for_strength(&self, _strength: f64) -> Result<Option<Box<dyn Sampler>>> {
        Ok(None)
    }

    /// alpha_bar of the state at the start of step `step`.
    fn alpha_bar_at(&self, step: usize) -> f64 {
        self.plan().alpha_bar_at(step)
    }

    /// The training timestep the network sees at step `step`.
    fn timestep_at(&self, step: usize) -> f64 {
        self.plan().timestep_at(step)
    }

    /// What unit-variance starting noise is multiplied by.
    fn init_noise_sigma(&self) -> f64 {
        self.plan().init_noise_sigma()
    }

    /// Samples from unit-variance noise `x_t`, scaled by the initial sigma.
    fn sample(&self, x_t: &Tensor, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        self.run(x_t.affine(self.init_noise_sigma(), 0.0)?, 0, ctx)
    }

    /// Noises a clean sample with unit-variance `noise` to the level of step `step`, in this
    /// sampler's space (diffusers' `add_noise`).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, step: usize) -> Result<Tensor> {
        let a = self.alpha_bar_at(step);
        match self.plan().space() {
            Space::VariancePreserving => lincomb(&[(a.sqrt(), x0), ((1.0 - a).sqrt(), noise)]),
            Space::Sigma => lincomb(&[(1.0, x0), (((1.0 - a) / a).sqrt(), noise)]),
        }
    }
}

/// Integer training timesteps on a schedule, in variance-preserving scale starting at unit
/// noise: the plan of DDIM, DDPM and LCM.
#[derive(Debug, Clone)]
pub(crate) struct TimestepPlan {
    /// The training schedule.
    pub schedule: super::schedule::NoiseSchedule,
    /// The visited timesteps, descending.
    pub timesteps: Vec<usize>,
}

impl StepPlan for TimestepPlan {
    fn steps(&self) -> usize {
        self.timesteps.len()
    }

    fn space(&self) -> Space {
        Space::VariancePreserving
    }

    fn alpha_bar_at(&self, step: usize) -> f64 {
        self.schedule.alpha_bar(self.timesteps[step])
    }

    fn timestep_at(&self, step: usize) -> f64 {
        self.timesteps[step] as f64
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
}

/// Reports an evaluation to the callback. When `completed` names the step just finished, first
/// applies the inpainting mask: the known sample re-noised to the next step's level (or clean
/// after the last step) is kept outside the mask. Returns the state to continue from, or
/// `Break` with the outcome when the callback stops the loop.
pub(crate) fn report(
    sampler: &dyn Sampler,
    ctx: &mut SampleContext<'_>,
    index: usize,
    total: usize,
    x: Tensor,
    denoised: &Tensor,
    completed: Option<usize>,
) -> Result<ControlFlow<Outcome, Tensor>> {
    let x = match (&ctx.inpaint, completed) {
        (Some(inpaint), Some(step)) => {
            let known = if step + 1 < sampler.steps() {
                sampler.add_noise(&inpaint.known, &inpaint.noise, step + 1)?
            } else {
                inpaint.known.clone()
            };
            let keep = inpaint.mask.ones_like()?.broadcast_sub(&inpaint.mask)?;
            (known.broadcast_mul(&keep)? + x.broadcast_mul(&inpaint.mask)?)?
        }
        _ => x,
    };
    let view = StepView { index, total, x: &x, denoised };
    Ok(match (ctx.callback)(&view) {
        ControlFlow::Continue(()) => ControlFlow::Continue(x),
        ControlFlow::Break(()) => {
            ControlFlow::Break(Outcome::Stopped { x, denoised: denoised.clone(), evaluations: index + 1 })
        }
    })
}

/// Clamps x_0 to `[-range, range]` when clipping is on.
pub(crate) fn clip(x0: Tensor, range: Option<f64>) -> Result<Tensor> {
    Ok(match range {
        Some(r) => x0.clamp(-r, r)?,
        None => x0,
    })
}

/// The clip range a config asks for, with the class's default for `clip_sample`.
pub(crate) fn clip_range(config: &SchedulerConfig, default_on: bool) -> Option<f64> {
    config.clip_sample.unwrap_or(default_on).then(|| config.clip_sample_range.unwrap_or(1.0))
}

/// Predicts x_0 for a sigma-scale state: scales the input to unit variance as diffusers'
/// `scale_model_input` does and asks the denoiser at alpha_bar = 1 / (1 + sigma²).
pub(crate) fn denoise_sigma(
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    sigma: f64,
    timestep: f64,
) -> Result<Tensor> {
    let scale = 1.0 / (sigma * sigma + 1.0).sqrt();
    let level = NoiseLevel { timestep, alpha_bar: 1.0 / (sigma * sigma + 1.0) };
    Ok(denoiser.predict(&x.affine(scale, 0.0)?, level)?.x0)
}

/// The Euler family's `init_noise_sigma`: the largest sigma, or sqrt(sigma² + 1) for `leading`.
pub(crate) fn sigma_init(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0, f64::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// The algorithms, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// DDIM (Song, Meng & Ermon 2021), deterministic at eta = 0.
    Ddim,
    /// DDPM ancestral sampling (Ho et al. 2020).
    Ddpm,
    /// Euler's method on the probability-flow ODE (Karras et al. 2022).
    Euler,
    /// Euler with ancestral noise.
    EulerA,
    /// Heun's second-order method (Karras et al. 2022, Algorithm 1).
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022).
    DpmPp2m,
    /// Latent consistency model multistep sampling (Luo et al. 2023).
    Lcm,
}

impl SamplerKind {
    /// Every algorithm, in menu order.
    pub const ALL: [Self; 7] =
        [Self::Ddim, Self::Ddpm, Self::Euler, Self::EulerA, Self::Heun, Self::DpmPp2m, Self::Lcm];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Euler => "euler",
            Self::EulerA => "euler-a",
            Self::Heun => "heun",
            Self::DpmPp2m => "dpmpp-2m",
            Self::Lcm => "lcm",
        }
    }

    /// The name AUTOMATIC1111 shows, for PNG metadata.
    pub fn a1111_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Ddpm => "DDPM",
            Self::Euler => "Euler",
            Self::EulerA => "Euler a",
            Self::Heun => "Heun",
            Self::DpmPp2m => "DPM++ 2M",
            Self::Lcm => "LCM",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            CoreError::invalid("sampler", name, format!("expected one of {}", names.join(", ")))
        })
    }

    /// The algorithm a diffusers scheduler class implements, if we have it.
    pub fn from_class_name(class: &str) -> Option<Self> {
        Some(match class {
            "DDIMScheduler" => Self::Ddim,
            "DDPMScheduler" => Self::Ddpm,
            "EulerDiscreteScheduler" => Self::Euler,
            "EulerAncestralDiscreteScheduler" => Self::EulerA,
            "HeunDiscreteScheduler" => Self::Heun,
            "DPMSolverMultistepScheduler" => Self::DpmPp2m,
            "LCMScheduler" => Self::Lcm,
            _ => return None,
        })
    }

    /// Builds the sampler from a scheduler config, as diffusers' `from_config` does, with the
    /// user's overrides on top.
    pub fn build(
        self,
        config: &SchedulerConfig,
        steps: usize,
        options: &SamplerOptions,
    ) -> Result<Box<dyn Sampler>> {
        options.validate()?;
        let mut config = config.clone();
        if let Some(spacing) = options.spacing {
            config.timestep_spacing = Some(spacing_name(spacing).into());
        }
        if let Some(karras) = options.karras {
            config.use_karras_sigmas = Some(karras);
        }
        Ok(match self {
            Self::Ddim => Box::new(Ddim::new(&config, steps, options.eta)?),
            Self::Ddpm => Box::new(Ddpm::new(&config, steps)?),
            Self::Euler => Box::new(Euler::new(&config, steps)?),
            Self::EulerA => Box::new(EulerAncestral::new(&config, steps)?),
            Self::Heun => Box::new(Heun::new(&config, steps)?),
            Self::DpmPp2m => Box::new(DpmPp2m::new(&config, steps)?),
            Self::Lcm => Box::new(Lcm::new(&config, steps)?),
        })
    }
}

fn spacing_name(spacing: TimestepSpacing) -> &'static str {
    match spacing {
        TimestepSpacing::Leading => "leading",
        TimestepSpacing::Trailing => "trailing",
        TimestepSpacing::Linspace => "linspace",
    }
}

/// User overrides on top of a model's scheduler config.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerOptions {
    /// Timestep spacing instead of the config's.
    pub spacing: Option<TimestepSpacing>,
    /// Karras sigmas on or off instead of the config's (Euler family and DPM-Solver).
    pub karras: Option<bool>,
    /// DDIM's eta: 0 deterministic, 1 as much noise as DDPM.
    pub eta: f64,
}

impl SamplerOptions {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(CoreError::invalid("eta", self.eta, "must be a finite number ≥ 0"));
        }
        Ok(())
    }
}

/// The spacing a config asks for, with the class's default.
pub(crate) fn spacing_of(config: &SchedulerConfig, default: TimestepSpacing) -> Result<TimestepSpacing> {
    config.timestep_spacing.as_deref().map_or(Ok(default), TimestepSpacing::parse)
}

/// Sigmas and model timesteps of the Euler family (Euler, Euler ancestral, Heun).
#[derive(Debug, Clone)]
pub(crate) struct SigmaSteps {
    /// `steps + 1` sigmas, descending, the last 0.
    pub sigmas: Vec<f64>,
    /// The training timestep the network sees at each step.
    pub timesteps: Vec<f64>,
    /// diffusers' `init_noise_sigma`.
    pub init_sigma: f64,
}

impl SigmaSteps {
    /// The plan diffusers' `EulerDiscreteScheduler.set_timesteps` makes (default spacing
    /// `linspace`).
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = super::schedule::NoiseSchedule::from_config(config)?;
        let spacing = spacing_of(config, TimestepSpacing::Linspace)?;
        let karras = config.use_karras_sigmas.unwrap_or(false);
        let (sigmas, timesteps) =
            super::spacing::sigma_plan(&schedule, spacing, karras, steps, config.steps_offset.unwrap_or(0))?;
        let init_sigma = sigma_init(&sigmas, spacing);
        Ok(Self { sigmas, timesteps, init_sigma })
    }
}

impl StepPlan for SigmaSteps {
    fn steps(&self) -> usize {
        self.timesteps.len()
    }

    fn space(&self) -> Space {
        Space::Sigma
    }

    fn alpha_bar_at(&self, step: usize) -> f64 {
        let s = self.sigmas[step];
        1.0 / (1.0 + s * s)
    }

    fn timestep_at(&self, step: usize) -> f64 {
        self.timesteps[step]
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }
}
