//! DDIM: Song, Meng & Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021), equation 12;
//! diffusers' `DDIMScheduler`.
//!
//! Notation: `a` = alpha_bar_t, `a_prev` = alpha_bar_{t-1}, `std` = sigma_t (eq. 16) scaled by eta.
//! x_{t-1} = sqrt(a_prev) · x0 + sqrt(1 - a_prev - std²) · eps + std · z.

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

/// DDIM with its timesteps set.
#[derive(Debug, Clone)]
pub struct Ddim {
    plan: TimestepPlan,
    ratio: usize,
    final_alpha_bar: f64,
    eta: f64,
    clip: Option<f64>,
}

impl Ddim {
    /// DDIM for `steps` steps; `eta` = 0 is deterministic.
    pub fn new(config: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(CoreError::invalid("eta", eta, "must be a finite number ≥ 0"));
        }
        let schedule = NoiseSchedule::from_config(config)?;
        let spacing = spacing_of(config, TimestepSpacing::Leading)?;
        let timesteps =
            discrete_timesteps(spacing, steps, schedule.train_steps(), config.steps_offset.unwrap_or(0))?;
        let final_alpha_bar =
            if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { schedule.alpha_bar(0) };
        Ok(Self {
            ratio: schedule.train_steps() / steps,
            plan: TimestepPlan { schedule, timesteps },
            final_alpha_bar,
            eta,
            clip: clip_range(config, true),
        })
    }

    /// The visited training timesteps, descending.
    pub fn timesteps(&self) -> &[usize] {
        &self.plan.timesteps
    }

    /// alpha_bar one DDIM step below `t` (diffusers steps back by `train / steps`, whatever the
    /// spacing).
    fn prev_alpha_bar(&self, t: usize) -> f64 {
        t.checked_sub(self.ratio).map_or(self.final_alpha_bar, |p| self.plan.schedule.alpha_bar(p))
    }
}

impl Sampler for Ddim {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Ddim
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let total = self.steps().saturating_sub(from);
        for (i, &t) in self.plan.timesteps.iter().enumerate().skip(from) {
            let (a, a_prev) = (self.plan.schedule.alpha_bar(t), self.prev_alpha_bar(t));
            let pred = ctx.denoiser.predict(&x, NoiseLevel { timestep: t as f64, alpha_bar: a })?;
            let x0 = clip(pred.x0, self.clip)?;
            let variance = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev);
            let std = self.eta * variance.sqrt();
            let mut next = lincomb(&[(a_prev.sqrt(), &x0), ((1.0 - a_prev - std * std).sqrt(), &pred.eps)])?;
            if self.eta > 0.0 {
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
