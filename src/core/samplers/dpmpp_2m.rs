//! DPM-Solver++(2M): Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
//! Probabilistic Models" (2022), Algorithm 2, midpoint form; diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`, `solver_order = 2`.
//!
//! Notation: alpha_t = 1 / sqrt(1 + sigma²), s_t = sigma · alpha_t, lambda = log(alpha_t / s_t),
//! h = lambda_t - lambda_s, D0 = x0 of this step, D1 = (D0 - x0 of the previous step) / r0.
//! x_t = (s_t / s_s) · x - alpha_t (e^-h - 1) · (D0 + D1 / 2). The first step, and the last when
//! it ends at sigma 0 or there are fewer than 15 steps, are first order (D1 = 0).

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::{report, spacing_of, Outcome, SampleContext, Sampler, SamplerKind, Space, StepPlan};
use crate::core::config::{SchedulerConfig, TimestepSpacing};
use crate::core::denoiser::NoiseLevel;
use crate::core::error::{CoreError, Result};
use crate::core::schedule::NoiseSchedule;
use crate::core::spacing::{check_steps, interp_sigma, karras_sigmas, round_half_even, sigma_to_t};
use crate::core::tensor_ops::lincomb;

/// DPM-Solver++(2M) with its sigmas set.
#[derive(Debug, Clone)]
pub struct DpmPp2m {
    /// `steps + 1` sigmas, descending.
    sigmas: Vec<f64>,
    timesteps: Vec<usize>,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
}

impl DpmPp2m {
    /// DPM-Solver++(2M) for `steps` steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        check_supported("algorithm_type", config.algorithm_type.as_deref(), "dpmsolver++")?;
        check_supported("solver_type", config.solver_type.as_deref(), "midpoint")?;
        if let Some(order) = config.solver_order.filter(|&o| o != 2) {
            return Err(CoreError::invalid("solver_order", order, "only order 2 is supported"));
        }
        let final_sigma_zero = match config.final_sigmas_type.as_deref().unwrap_or("zero") {
            "zero" => true,
            "sigma_min" => false,
            other => {
                return Err(CoreError::invalid("final_sigmas_type", other, "expected zero or sigma_min"))
            }
        };
        let schedule = NoiseSchedule::from_config(config)?.with_finite_terminal_sigma();
        let train = schedule.train_steps();
        check_steps(steps, train)?;
        let table = schedule.sigmas_f32();
        let spacing = spacing_of(config, TimestepSpacing::Linspace)?;
        let offset = config.steps_offset.unwrap_or(0);
        let mut timesteps: Vec<usize> = match spacing {
            TimestepSpacing::Linspace => {
                // np.linspace(0, train - 1, steps + 1), rounded, reversed, without the 0.
                let step = (train - 1) as f64 / steps as f64;
                (1..=steps)
                    .rev()
                    .map(|k| if k == steps { train - 1 } else { round_half_even(k as f64 * step) as usize })
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / (steps + 1);
                (1..=steps).rev().map(|i| i * ratio + offset).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / steps as f64;
                (0..steps).map(|i| round_half_even(train as f64 - i as f64 * ratio) as usize - 1).collect()
            }
        };
        let mut sigmas: Vec<f64> = if config.use_karras_sigmas.unwrap_or(false) {
            let karras = karras_sigmas(f64::from(table[0]), f64::from(table[train - 1]), steps);
            timesteps = karras.iter().map(|&s| round_half_even(sigma_to_t(s, &table)) as usize).collect();
            karras
        } else {
            timesteps.iter().map(|&t| interp_sigma(&table, t as f64)).collect()
        };
        let last = if final_sigma_zero { 0.0 } else { f64::from(table[0]) };
        sigmas.push(last);
        let sigmas = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
        Ok(Self {
            sigmas,
            timesteps,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigma_zero,
        })
    }
}

fn check_supported(name: &'static str, value: Option<&str>, supported: &str) -> Result<()> {
    match value {
        Some(v) if v != supported => {
            Err(CoreError::invalid(name, v, format!("only {supported} is supported")))
        }
        _ => Ok(()),
    }
}

/// alpha_t and s_t of a sigma in variance-preserving scale.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (1.0 + sigma * sigma).sqrt();
    (alpha, sigma * alpha)
}

impl StepPlan for DpmPp2m {
    fn steps(&self) -> usize {
        self.timesteps.len()
    }

    fn space(&self) -> Space {
        Space::VariancePreserving
    }

    fn alpha_bar_at(&self, step: usize) -> f64 {
        alpha_sigma(self.sigmas[step]).0.powi(2)
    }

    fn timestep_at(&self, step: usize) -> f64 {
        self.timesteps[step] as f64
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
}

impl Sampler for DpmPp2m {
    fn kind(&self) -> SamplerKind {
        SamplerKind::DpmPp2m
    }

    fn plan(&self) -> &dyn StepPlan {
        self
    }

    fn run(&self, mut x: Tensor, from: usize, ctx: &mut SampleContext<'_>) -> Result<Outcome> {
        let steps = self.timesteps.len();
        let total = steps.saturating_sub(from);
        let mut previous: Option<Tensor> = None;
        for i in from..steps {
            let (sigma_s, sigma_t) = (self.sigmas[i], self.sigmas[i + 1]);
            let (alpha_s, s_s) = alpha_sigma(sigma_s);
            let (alpha_t, s_t) = alpha_sigma(sigma_t);
            let level = NoiseLevel { timestep: self.timesteps[i] as f64, alpha_bar: alpha_s * alpha_s };
            let d0 = ctx.denoiser.predict(&x, level)?.x0;
            let final_first_order = i + 1 == steps
                && (self.euler_at_final || (self.lower_order_final && steps < 15) || self.final_sigma_zero);
            // e^-h = (s_t / alpha_t) / (s_s / alpha_s) = sigma_t / sigma_s; finite at sigma_t = 0.
            let coef = alpha_t * (sigma_t / sigma_s - 1.0);
            let next = match (&previous, final_first_order) {
                (Some(d_prev), false) => {
                    let sigma_r = self.sigmas[i - 1];
                    let r0 = (sigma_r / sigma_s).ln() / (sigma_s / sigma_t).ln();
                    // D0 + D1/2 = D0 + (D0 - D_prev) / (2 r0)
                    let k = 1.0 / (2.0 * r0);
                    lincomb(&[(s_t / s_s, &x), (-coef * (1.0 + k), &d0), (coef * k, d_prev)])?
                }
                _ => lincomb(&[(s_t / s_s, &x), (-coef, &d0)])?,
            };
            x = match report(self, ctx, i - from, total, next, &d0, Some(i))? {
                ControlFlow::Continue(x) => x,
                ControlFlow::Break(outcome) => return Ok(outcome),
            };
            previous = Some(d0);
        }
        Ok(Outcome::Finished(x))
    }
}
