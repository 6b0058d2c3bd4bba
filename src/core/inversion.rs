//! DDIM inversion: run DDIM backwards, clean sample to noise (diffusers'
//! `DDIMInverseScheduler`), so a real image gets a starting noise that DDIM (eta = 0) maps back
//! to it. Used to interpolate between real images.
//!
//! Step i goes from level a (one stride below t_i, or alpha_bar = 1 before the first step when
//! `set_alpha_to_one`) up to a' = alpha_bar(t_i); the network is evaluated at t_i, as diffusers
//! does: x' = sqrt(a') · x0 + sqrt(1 - a') · eps.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::config::{SchedulerConfig, TimestepSpacing};
use super::denoiser::{Denoiser, NoiseLevel};
use super::error::Result;
use super::samplers::{clip, clip_range, spacing_of, Outcome, StepCallback, StepView};
use super::schedule::NoiseSchedule;
use super::spacing::discrete_timesteps;
use super::tensor_ops::lincomb;

/// DDIM inversion with its timesteps set.
#[derive(Debug, Clone)]
pub struct DdimInverse {
    schedule: NoiseSchedule,
    /// Ascending.
    timesteps: Vec<usize>,
    ratio: usize,
    initial_alpha_bar: f64,
    clip: Option<f64>,
}

impl DdimInverse {
    /// Inversion over `steps` steps; the timesteps are DDIM's for the same config, reversed.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::from_config(config)?;
        let spacing = spacing_of(config, TimestepSpacing::Leading)?;
        let mut timesteps =
            discrete_timesteps(spacing, steps, schedule.train_steps(), config.steps_offset.unwrap_or(0))?;
        timesteps.reverse();
        let initial_alpha_bar =
            if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { schedule.alpha_bar(0) };
        Ok(Self {
            ratio: schedule.train_steps() / steps,
            schedule,
            timesteps,
            initial_alpha_bar,
            // DDIMInverseScheduler clips by default.
            clip: clip_range(config, true),
        })
    }

    /// The visited training timesteps, ascending.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Walks `x0` up to noise. The result is the unit-variance starting noise of a DDIM run
    /// with the same config and steps.
    pub fn invert(
        &self,
        x0: &Tensor,
        denoiser: &mut dyn Denoiser,
        callback: &mut StepCallback<'_>,
    ) -> Result<Outcome> {
        let mut x = x0.clone();
        let total = self.timesteps.len();
        let last = self.schedule.train_steps() - 1;
        for (i, &t) in self.timesteps.iter().enumerate() {
            let a = t
                .checked_sub(self.ratio)
                .map_or(self.initial_alpha_bar, |s| self.schedule.alpha_bar(s.min(last)));
            let a_next = self.schedule.alpha_bar(t);
            let pred = denoiser.predict(&x, NoiseLevel { timestep: t as f64, alpha_bar: a })?;
            let x0_pred = clip(pred.x0, self.clip)?;
            x = lincomb(&[(a_next.sqrt(), &x0_pred), ((1.0 - a_next).sqrt(), &pred.eps)])?;
            if let ControlFlow::Break(()) = callback(&StepView { index: i, total, x: &x, denoised: &x0_pred })
            {
                return Ok(Outcome::Stopped { x, denoised: x0_pred, evaluations: i + 1 });
            }
        }
        Ok(Outcome::Finished(x))
    }
}
