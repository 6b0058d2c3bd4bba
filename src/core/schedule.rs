//! Training noise schedules: betas and the cumulative product of alphas, computed exactly as
//! diffusers computes them (in `float32`), so that every sampler sees the same numbers.

use super::config::SchedulerConfig;
use super::error::{CoreError, Result};

/// The shape of the beta schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    /// Betas linear from `start` to `end` (Ho et al. 2020).
    Linear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// Square roots of the betas linear from `sqrt(start)` to `sqrt(end)` (Stable Diffusion).
    ScaledLinear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
    /// `squaredcos_cap_v2`: alpha_bar(t) = cos²((t + 0.008) / 1.008 · π/2), betas capped at 0.999
    /// (Nichol & Dhariwal 2021).
    Cosine,
    /// Betas given one per training timestep.
    Trained(Vec<f64>),
}

/// The most training timesteps a schedule may have: far above any model's (1000), and small
/// enough that a config file's number cannot make the schedule's tables exhaust memory (the
/// fuzzing campaign's `num_train_timesteps: 4294967296` asked for 16 GiB).
pub const MAX_TRAIN_STEPS: usize = 100_000;

/// A training noise schedule: `alphas_cumprod[t]` = alpha_bar at training timestep `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// Builds the schedule of `train_steps` timesteps, optionally rescaled to zero terminal SNR.
    pub fn new(beta: &BetaSchedule, train_steps: usize, zero_terminal_snr: bool) -> Result<Self> {
        if !(2..=MAX_TRAIN_STEPS).contains(&train_steps) {
            return Err(CoreError::invalid(
                "num_train_timesteps",
                train_steps,
                format!(
                    "a schedule has 2..={MAX_TRAIN_STEPS} training timesteps (diffusion models use 1000)"
                ),
            ));
        }
        let mut betas = betas_f32(beta, train_steps)?;
        if zero_terminal_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        Ok(Self { alphas_cumprod: cumprod_f32(&alphas).into_iter().map(f64::from).collect() })
    }

    /// Builds the schedule a diffusers `scheduler_config.json` describes (diffusers' defaults for
    /// missing fields: 1000 steps, linear from 1e-4 to 0.02).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let start = config.beta_start.unwrap_or(0.0001);
        let end = config.beta_end.unwrap_or(0.02);
        let beta = if let Some(betas) = &config.trained_betas {
            BetaSchedule::Trained(betas.clone())
        } else {
            match config.beta_schedule.as_deref().unwrap_or("linear") {
                "linear" => BetaSchedule::Linear { start, end },
                "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
                "squaredcos_cap_v2" => BetaSchedule::Cosine,
                other => {
                    return Err(CoreError::invalid(
                        "beta_schedule",
                        other,
                        "expected linear, scaled_linear or squaredcos_cap_v2",
                    ))
                }
            }
        };
        let train_steps = match &beta {
            BetaSchedule::Trained(b) => b.len(),
            _ => config.num_train_timesteps.unwrap_or(1000),
        };
        Self::new(&beta, train_steps, config.rescale_betas_zero_snr.unwrap_or(false))
    }

    /// Number of training timesteps.
    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// alpha_bar for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// alpha_bar at integer training timestep `t` (clamped to the schedule).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t.min(self.alphas_cumprod.len() - 1)]
    }

    /// Karras-style sigma = sqrt((1 - a) / a) for every training timestep, rounded to `float32`
    /// as diffusers stores them. The last is infinite for a zero-terminal-SNR schedule; samplers
    /// working in sigma space replace its alpha_bar by 2^-24 first, as diffusers does.
    pub fn sigmas_f32(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt()
            })
            .collect()
    }

    /// The same schedule with the terminal alpha_bar raised from 0 to 2^-24, so sigma stays
    /// finite; diffusers' sigma-space samplers do this for zero-terminal-SNR schedules.
    pub fn with_finite_terminal_sigma(&self) -> Self {
        let mut alphas_cumprod = self.alphas_cumprod.clone();
        if let Some(last) = alphas_cumprod.last_mut() {
            if *last == 0.0 {
                *last = 2f64.powi(-24);
            }
        }
        Self { alphas_cumprod }
    }
}

/// `torch.linspace(start, end, n, dtype=float32)`: the first half counts up from `start`, the
/// second half down from `end`, in `float32` with fused multiply-adds as torch's vectorised
/// kernel computes them (this matches diffusers' betas bit for bit).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(
            |i| {
                if i < half {
                    step.mul_add(i as f32, start)
                } else {
                    (-step).mul_add((n - i - 1) as f32, end)
                }
            },
        )
        .collect()
}

fn betas_f32(beta: &BetaSchedule, n: usize) -> Result<Vec<f32>> {
    Ok(match beta {
        BetaSchedule::Linear { start, end } => linspace_f32(*start as f32, *end as f32, n),
        BetaSchedule::ScaledLinear { start, end } => {
            linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::Cosine => {
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
        BetaSchedule::Trained(betas) => {
            if let Some(bad) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
                return Err(CoreError::invalid("trained_betas", bad, "every beta must lie in [0, 1)"));
            }
            betas.iter().map(|&b| b as f32).collect()
        }
    })
}

/// `torch.cumprod` on a `float32` tensor: accumulated in double, each output rounded to float.
fn cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// Rescales betas so the last timestep has zero SNR while the first keeps its SNR
/// (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod_f32(&alphas).into_iter().map(f32::sqrt).collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    for s in &mut sqrt_bar {
        *s -= last;
        *s *= first / (first - last);
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_of_billions_of_timesteps_is_refused_before_any_table_is_built() {
        let beta = BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 };
        let e = NoiseSchedule::new(&beta, 1 << 32, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("num_train_timesteps") && e.contains("4294967296"), "{e}");
        assert!(NoiseSchedule::new(&beta, MAX_TRAIN_STEPS, false).is_ok());
    }

    #[test]
    fn alpha_bar_decreases_and_zero_snr_ends_at_zero() {
        let beta = BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 };
        let plain = NoiseSchedule::new(&beta, 1000, false).unwrap();
        assert!(plain.alphas_cumprod().windows(2).all(|w| w[1] < w[0]));
        let zero = NoiseSchedule::new(&beta, 1000, true).unwrap();
        assert_eq!(zero.alpha_bar(999), 0.0);
        assert!((zero.alpha_bar(0) - plain.alpha_bar(0)).abs() < 1e-6);
    }

    #[test]
    fn refuses_a_one_step_schedule_and_bad_betas() {
        assert!(NoiseSchedule::new(&BetaSchedule::Cosine, 1, false).is_err());
        let bad = BetaSchedule::Trained(vec![0.1, 1.5]);
        let err = NoiseSchedule::new(&bad, 2, false).unwrap_err();
        assert!(err.to_string().contains("trained_betas"), "{err}");
    }
}
