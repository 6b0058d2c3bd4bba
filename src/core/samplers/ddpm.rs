//! DDPM ancestral sampling: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models"
//! (NeurIPS 2020), equations 6–7 with strided timesteps; diffusers' `DDPMScheduler` with
//! `variance_type = "fixed_small"`.
//!
//! x_{t'} = c0 · x0 + c1 · x_t + sqrt(beta_tilde) · z, with the posterior mean coefficients
//! c0 = sqrt(a_prev) (1 - a/a_prev) / (1 - a), c1 = sqrt(a/a_prev) (1 - a_prev) / (1 - a) and
//! beta_tilde = (1 - a_prev) / (1 - a) · (1 - a/a_prev); no noise at t = 0.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{
    clip, clip_range, report, spacing_of, Outcome, SampleContext, Sampler, SamplerKind, StepPlan,
    TimestepPlan,
};
use crate::core::config::{SchedulerConfig, TimestepSpacing};
use crate::core::denoiser::NoiseLevel;
use crate::core::error::{CoreError, Result};
use crate::core::schedule::NoiseSchedule;
use crate::core::spacing::discrete_timesteps;
use crate::core::tensor_ops::lincomb;

/// DDPM with its timesteps set.
#[derive(Debug, Clone)]
pub struct Ddpm {
    plan: TimestepPlan,
    clip: Option<f64>,
}

impl Ddpm {
    /// DDPM for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if let Some(v) = config.variance_type.as_deref().filter(|v| *v != "fixed_small") {
            return Err(CoreError::invalid("variance_type", v, "only fixed_small is supported"));
        }
        let schedule = NoiseSchedule::from_config(config)?;
        let spacing = spacing_of(config, TimestepSpacing::Leading)?;
        let timesteps =
            discrete_timesteps(spacing, steps, schedule.train_steps(), config.steps_offset.unwrap_or(0))?;
        Ok(Self { plan: TimestepPlan { schedule, timesteps }, clip: clip_range(config, true) })
    }
}

impl Sampler for Ddpm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddpm
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let total = self.steps().saturating_sub(from);
        for (i, &t) in self.plan.timesteps.iter().enumerate().skip(from) {
            let a = self.plan.schedule.alpha_bar(t);
            let a_prev = self.plan.timesteps.get(i + 1).map_or(1.0, |&p| self.plan.schedule.alpha_bar(p));
            let pred = ctx.denoiser.predict(&x, NoiseLevel { timestep: t as f64, alpha_bar: a })?;
            let x0 = clip(pred.x0, self.clip)?;
            let (c0, c1, std) = coefficients(a, a_prev);
            let mut next = lincomb(&[(c0, &x0), (c1, &x)])?;
            if t > 0 {
                let z = ctx.noise.draw(&x)?;
                next = lincomb(&[(1.0, &next), (std, &z)])?;
            }
            x = match report(self, ctx, i - from, total, next, &x0, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
        }
        Ok(Outcome::Finished(x))
    }
}

/// The posterior mean coefficients and noise standard deviation, in `float32` as diffusers
/// computes them from its `float32` schedule: with 1000 steps, 1 - a/a_prev cancels badly, and
/// matching diffusers' rounding keeps the two programs' samples together.
fn coefficients(a: f64, a_prev: f64) -> (f64, f64, f64) {
    let (a, a_prev) = (a as f32, a_prev as f32);
    let alpha_t = a / a_prev;
    let beta_t = 1.0 - alpha_t;
    let c0 = a_prev.sqrt() * beta_t / (1.0 - a);
    let c1 = alpha_t.sqrt() * (1.0 - a_prev) / (1.0 - a);
    let variance = ((1.0 - a_prev) / (1.0 - a) * beta_t).max(1e-20);
    (f64::from(c0), f64::from(c1), f64::from(variance.sqrt()))
}
