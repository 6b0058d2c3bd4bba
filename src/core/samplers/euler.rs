//! Euler's method on the probability-flow ODE dx/dsigma = (x - x0(x, sigma)) / sigma
//! (Karras et al. 2022, Algorithm 1 without the second-order correction); diffusers'
//! `EulerDiscreteScheduler` with `s_churn = 0`.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{denoise_sigma, report, Outcome, SampleContext, Sampler, SamplerKind, SigmaSteps, StepPlan};
use crate::core::config::SchedulerConfig;
use crate::core::error::Result;
use crate::core::tensor_ops::lincomb;

/// Euler with its sigmas set.
#[derive(Debug, Clone)]
pub struct Euler {
    plan: SigmaSteps,
}

impl Euler {
    /// Euler for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Ok(Self { plan: SigmaSteps::new(config, steps)? })
    }
}

impl Sampler for Euler {
    fn kind(&self) -> SamplerKind {
        SamplerKind::Euler
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let total = self.steps().saturating_sub(from);
        for i in from..self.steps() {
            let (sigma, next) = (self.plan.sigmas[i], self.plan.sigmas[i + 1]);
            let x0 = denoise_sigma(ctx.denoiser, &x, sigma, self.plan.timesteps[i])?;
            // x + (x - x0) / sigma · (next - sigma)
            let x_next = lincomb(&[(next / sigma, &x), (1.0 - next / sigma, &x0)])?;
            x = match report(self, ctx, i - from, total, x_next, &x0, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
        }
        Ok(Outcome::Finished(x))
    }
}
