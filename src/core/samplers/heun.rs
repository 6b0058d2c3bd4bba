//! Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 with
//! S_churn = 0); diffusers' `HeunDiscreteScheduler`. Each step but the last evaluates the model
//! twice: an Euler predictor to the next sigma, then the average of both slopes. The last step,
//! to sigma 0, is a plain Euler step. The callback sees both evaluations of a step.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{
    clip, clip_range, denoise_sigma, report, Outcome, SampleContext, Sampler, SamplerKind, SigmaSteps,
    StepPlan,
};
use crate::core::config::SchedulerConfig;
use crate::core::error::Result;
use crate::core::tensor_ops::lincomb;

/// Heun with its sigmas set.
#[derive(Debug, Clone)]
pub struct Heun {
    plan: SigmaSteps,
    clip: Option<f64>,
}

impl Heun {
    /// Heun for `steps` steps (`2 · steps - 1` evaluations).
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Ok(Self { plan: SigmaSteps::new(config, steps)?, clip: clip_range(config, false) })
    }
}

impl Sampler for Heun {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Heun
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let steps = self.steps();
        let total = (2 * steps.saturating_sub(from)).saturating_sub(1);
        for i in from..steps {
            let (sigma, next) = (self.plan.sigmas[i], self.plan.sigmas[i + 1]);
            let first = 2 * (i - from);
            let x0 = clip(denoise_sigma(ctx.denoiser, &x, sigma, self.plan.timesteps[i])?, self.clip)?;
            let euler = lincomb(&[(next / sigma, &x), (1.0 - next / sigma, &x0)])?;
            if next == 0.0 || i + 1 == steps {
                x = match report(self, ctx, first, total, euler, &x0, Some(i))? {
                    ControlFlow::Continue(x) => x,
                    ControlFlow::Break(outcome) => return Ok(outcome),
                };
                continue;
            }
            let euler = match report(self, ctx, first, total, euler, &x0, None)? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
            let t_next = self.plan.timesteps[i + 1];
            let x0_next = clip(denoise_sigma(ctx.denoiser, &euler, next, t_next)?, self.clip)?;
            // x + dt/2 · ((x - x0) / sigma + (euler - x0_next) / next)
            let dt = next - sigma;
            let corrected = lincomb(&[
                (1.0 + dt / (2.0 * sigma), &x),
                (-dt / (2.0 * sigma), &x0),
                (dt / (2.0 * next), &euler),
                (-dt / (2.0 * next), &x0_next),
            ])?;
            x = match report(self, ctx, first + 1, total, corrected, &x0_next, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
        }
        Ok(Outcome::Finished(x))
    }
}
