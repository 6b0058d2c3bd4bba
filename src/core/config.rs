//! A diffusers `scheduler_config.json`, read as diffusers reads it.
//!
//! Every field is optional because diffusers' `from_config` fills a missing field with the
//! *target* class's default, and those defaults differ between classes (DDIM spaces timesteps
//! `leading`, Euler `linspace`). Each sampler resolves the fields it uses with its own defaults.

use serde::{Deserialize, Serialize};

use super::error::{CoreError, Result};

/// The fields of a diffusers scheduler config that the samplers read. Unknown fields are ignored,
/// as `from_config` ignores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The diffusers class that wrote the file (`PNDMScheduler`, `DDIMScheduler`, ...).
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Number of training timesteps (1000 for Stable Diffusion).
    pub num_train_timesteps: Option<usize>,
    /// First beta of the schedule.
    pub beta_start: Option<f64>,
    /// Last beta of the schedule.
    pub beta_end: Option<f64>,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    pub beta_schedule: Option<String>,
    /// Explicit betas, overriding `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale the schedule to zero terminal SNR (Lin et al. 2023).
    pub rescale_betas_zero_snr: Option<bool>,
    /// `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: Option<String>,
    /// `leading`, `trailing` or `linspace`.
    pub timestep_spacing: Option<String>,
    /// Added to `leading` timesteps (1 for Stable Diffusion).
    pub steps_offset: Option<usize>,
    /// Clip the predicted x_0 to `[-clip_sample_range, clip_sample_range]`.
    pub clip_sample: Option<bool>,
    /// Range for `clip_sample`.
    pub clip_sample_range: Option<f64>,
    /// DDIM/LCM: use alpha_bar = 1 after the last step (else alpha_bar at timestep 0).
    pub set_alpha_to_one: Option<bool>,
    /// Euler, Heun, DPM-Solver: space sigmas as Karras et al. (2022) do.
    pub use_karras_sigmas: Option<bool>,
    /// DDPM: the variance of the added noise (`fixed_small` is supported).
    pub variance_type: Option<String>,
    /// DPM-Solver: `dpmsolver++` is supported.
    pub algorithm_type: Option<String>,
    /// DPM-Solver: order of the multistep solver (2 is supported).
    pub solver_order: Option<usize>,
    /// DPM-Solver: `midpoint` is supported.
    pub solver_type: Option<String>,
    /// DPM-Solver: use first-order updates for the final steps when there are fewer than 15.
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: always end with a first-order step.
    pub euler_at_final: Option<bool>,
    /// Euler, DPM-Solver: `zero` or `sigma_min`.
    pub final_sigmas_type: Option<String>,
    /// LCM: the step count of the distillation schedule.
    pub original_inference_steps: Option<usize>,
    /// LCM: scale of the timestep in the consistency boundary condition.
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text.
    pub fn from_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Stable Diffusion 1.x's scheduler config, for tests and defaults.
    pub fn stable_diffusion() -> Self {
        Self {
            num_train_timesteps: Some(1000),
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some("scaled_linear".into()),
            clip_sample: Some(false),
            set_alpha_to_one: Some(false),
            steps_offset: Some(1),
            ..Self::default()
        }
    }
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise (Stable Diffusion 1.x, 2.x base).
    #[default]
    Epsilon,
    /// v = sqrt(a) * eps - sqrt(1 - a) * x_0 (Salimans & Ho 2022; SD 2.x 768).
    VPrediction,
    /// x_0 itself.
    Sample,
}

impl PredictionType {
    /// Parses diffusers' spelling.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Ok(Self::Sample),
            other => {
                Err(CoreError::invalid("prediction_type", other, "expected epsilon, v_prediction or sample"))
            }
        }
    }
}

/// How inference timesteps are spread over the training timesteps (table 2 of Lin et al. 2023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// Multiples of `train / steps`, counted up from 0, plus `steps_offset`.
    Leading,
    /// Multiples of `train / steps`, counted down from the last timestep.
    Trailing,
    /// Evenly spaced from 0 to the last timestep inclusive.
    Linspace,
}

impl TimestepSpacing {
    /// Parses diffusers' spelling.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            other => {
                Err(CoreError::invalid("timestep_spacing", other, "expected leading, trailing or linspace"))
            }
        }
    }
}
