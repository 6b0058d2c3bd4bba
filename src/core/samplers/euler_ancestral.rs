//! Euler ancestral: an Euler step down to sigma_down, then fresh noise up to sigma_next
//! (k-diffusion's `sample_euler_ancestral`, eta = 1); diffusers'
//! `EulerAncestralDiscreteScheduler`.
//!
//! sigma_up = sqrt(next² (sigma² - next²) / sigma²), sigma_down = sqrt(next² - sigma_up²).

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{denoise_sigma, report, Outcome, SampleContext, Sampler, SamplerKind, SigmaSteps, StepPlan};
use crate::core::config::SchedulerConfig;
use crate::core::error::Result;
use crate::core::tensor_ops::lincomb;

/// Euler ancestral with its sigmas set.
#[derive(Debug, Clone)]
pub struct EulerAncestral {
    plan: SigmaSteps,
}

impl EulerAncestral {
    /// Euler ancestral for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let mut config = config.clone();
        // diffusers' EulerAncestralDiscreteScheduler has no Karras option.
        config.use_karras_sigmas = Some(false);
        Ok(Self { plan: SigmaSteps::new(&config, steps)? })
    }
}

impl Sampler for EulerAncestral {
    fn kind(&self) -> SamplerKind {
        SamplerKind::EulerA
    }

    fn plan(&self) -> &dyn StepPlan {
        &self.plan
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let total = self.steps().saturating_sub(from);
        for i in from..self.steps() {
            let (sigma, next) = (self.plan.sigmas[i], self.plan.sigmas[i + 1]);
            let x0 = denoise_sigma(ctx.denoiser, &x, sigma, self.plan.timesteps[i])?;
            let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
            let down = (next * next - up * up).sqrt();
            let z = ctx.noise.draw(&x)?;
            let x_next = lincomb(&[(down / sigma, &x), (1.0 - down / sigma, &x0), (up, &z)])?;
            x = match report(self, ctx, i - from, total, x_next, &x0, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
        }
        Ok(Outcome::Finished(x))
    }
}
