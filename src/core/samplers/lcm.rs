//! Latent consistency model multistep sampling: Luo et al., "Latent Consistency Models" (2023),
//! Algorithm 3; diffusers' `LCMScheduler`.
//!
//! Each step maps x_t to a clean estimate with the consistency boundary condition
//! denoised = c_out · x0 + c_skip · x_t, c_skip = σ_d² / ((s t)² + σ_d²),
//! c_out = s t / sqrt((s t)² + σ_d²) (σ_d = 0.5, s = `timestep_scaling`), then re-noises it to
//! the next timestep with fresh noise; the last step returns `denoised`.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{clip, clip_range, report, Outcome, SampleContext, Sampler, SamplerKind, StepPlan, TimestepPlan};
use crate::core::config::SchedulerConfig;
use crate::core::denoiser::NoiseLevel;
use crate::core::error::{CoreError, Result};
use crate::core::schedule::NoiseSchedule;
use crate::core::spacing::check_steps;
use crate::core::tensor_ops::lincomb;

/// LCM with its timesteps set.
#[derive(Debug, Clone)]
pub struct Lcm {
    plan: TimestepPlan,
    /// The distillation grid's length (`original_inference_steps`).
    original: usize,
    timestep_scaling: f64,
    clip: Option<f64>,
}

impl Lcm {
    /// LCM for `steps` steps, chosen from the `original_inference_steps` distillation grid.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = NoiseSchedule::from_config(config)?;
        let train = schedule.train_steps();
        let original = config.original_inference_steps.unwrap_or(50);
        check_steps(original, train).map_err(|_| {
            CoreError::invalid("original_inference_steps", original, format!("must lie in 1..={train}"))
        })?;
        check_steps(steps, original).map_err(|_| {
            CoreError::invalid(
                "steps",
                steps,
                format!("LCM takes 1 to {original} steps (its distillation grid)"),
            )
        })?;
        let timesteps = grid_timesteps(train, original, steps, 1.0)?;
        Ok(Self {
            plan: TimestepPlan { schedule, timesteps },
            original,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0),
            clip: clip_range(config, false),
        })
    }
}

/// The consistency boundary condition at training timestep `t`: (c_skip, c_out) with σ_d = 0.5
/// and the timestep scaled by `scaling` (diffusers' `get_scalings_for_boundary_condition_discrete`).
/// Distillation trains through the same function the sampler undoes.
pub fn boundary_condition(t: usize, scaling: f64) -> (f64, f64) {
    let scaled = t as f64 * scaling;
    (0.25 / (scaled * scaled + 0.25), scaled / (scaled * scaled + 0.25).sqrt())
}

/// `steps` evenly spaced indices into the distillation grid k·i − 1 for i = n..1, where
/// n = int(original · strength) and k = train / original: diffusers' `LCMScheduler.set_timesteps`,
/// whose strength keeps the step count and shortens the grid (its img2img).
fn grid_timesteps(train: usize, original: usize, steps: usize, strength: f64) -> Result<Vec<usize>> {
    let k = train / original;
    let n = (original as f64 * strength) as usize;
    if n < steps {
        return Err(CoreError::invalid(
            "strength",
            strength,
            format!(
                "LCM spaces {steps} steps over the first {n} of its {original} grid points; \
                 raise the strength to at least {:.3} or lower the steps",
                (steps as f64 / original as f64 * 1000.0).ceil() / 1000.0
            ),
        ));
    }
    let grid: Vec<usize> = (1..=n).rev().map(|i| i * k - 1).collect();
    Ok((0..steps).map(|j| grid[(j as f64 * n as f64 / steps as f64).floor() as usize]).collect())
}

impl Sampler for Lcm {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Lcm
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn for_strength(&self, strength: f64) -> Result<Option<Box<dyn Sampler>>> {
        let timesteps =
            grid_timesteps(self.plan.schedule.train_steps(), self.original, self.steps(), strength)?;
        let plan = TimestepPlan { schedule: self.plan.schedule.clone(), timesteps };
        Ok(Some(Box::new(Self { plan, ..self.clone() })))
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let steps = self.steps();
        let total = steps.saturating_sub(from);
        for (i, &t) in self.plan.timesteps.iter().enumerate().skip(from) {
            let a = self.plan.schedule.alpha_bar(t);
            let pred = ctx.denoiser.predict(&x, NoiseLevel { timestep: t as f64, alpha_bar: a })?;
            let x0 = clip(pred.x0, self.clip)?;
            let (c_skip, c_out) = boundary_condition(t, self.timestep_scaling);
            let denoised = lincomb(&[(c_out, &x0), (c_skip, &x)])?;
            let next = match self.plan.timesteps.get(i + 1) {
                Some(&t_prev) => {
                    let a_prev = self.plan.schedule.alpha_bar(t_prev);
                    let z = ctx.noise.draw(&x)?;
                    lincomb(&[(a_prev.sqrt(), &denoised), ((1.0 - a_prev).sqrt(), &z)])?
                }
                None => denoised.clone(),
            };
            x = match report(self, ctx, i - from, total, next, &denoised, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
        }
        Ok(Outcome::Finished(x))
    }
}
