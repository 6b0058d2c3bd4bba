//! Presets for few-step models: the sampler, timestep spacing, steps and guidance each kind runs
//! with in its authors' diffusers examples, so a user who loads one does not have to know them.
//! - LCM models and LCM-LoRA (Luo et al. 2023): `LCMScheduler`, 4 steps, low guidance (an LCM
//!   model's guidance embedding takes the scale as an input; LCM-LoRA is used at 1–2).
//! - SD-Turbo (adversarial diffusion distillation): Euler ancestral on trailing timesteps, one or
//!   two steps, no classifier-free guidance (diffusers' `guidance_scale=0.0`, which it treats as
//!   "no guidance": one conditional pass, our scale 1).
//! - Hyper-SD 1.5 LoRAs: DDIM on trailing timesteps at the LoRA's step count (8 here), no guidance.

use super::error::{CoreError, Result};
use super::{SamplerKind, TimestepSpacing};

/// A kind of few-step model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Latent consistency models and LCM-LoRA.
    Lcm,
    /// SD-Turbo and SDXL-Turbo style models.
    Turbo,
    /// Hyper-SD LoRAs.
    Hyper,
}

/// What a preset sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetSettings {
    /// The algorithm.
    pub sampler: SamplerKind,
    /// The timestep spacing (`None`: the sampler places its own, as LCM does).
    pub spacing: Option<TimestepSpacing>,
    /// Inference steps.
    pub steps: usize,
    /// Guidance scale (1: one conditional pass per step).
    pub guidance: f64,
}

impl Preset {
    /// Every preset, as menus list them.
    pub const ALL: [Preset; 3] = [Preset::Lcm, Preset::Turbo, Preset::Hyper];

    /// Its name in menus and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lcm => "LCM",
            Self::Turbo => "Turbo",
            Self::Hyper => "Hyper",
        }
    }

    /// Reads a name, case-insensitively.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| CoreError::invalid("preset", name, "expected lcm, turbo or hyper"))
    }

    /// What it sets.
    pub fn settings(self) -> PresetSettings {
        match self {
            Self::Lcm => PresetSettings { sampler: SamplerKind::Lcm, spacing: None, steps: 4, guidance: 1.5 },
            Self::Turbo => PresetSettings {
                sampler: SamplerKind::EulerA,
                spacing: Some(TimestepSpacing::Trailing),
                steps: 2,
                guidance: 1.0,
            },
            Self::Hyper => PresetSettings {
                sampler: SamplerKind::Ddim,
                spacing: Some(TimestepSpacing::Trailing),
                steps: 8,
                guidance: 1.0,
            },
        }
    }

    /// A line for tooltips.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Lcm => "LCM models and LCM-LoRA: LCM sampler, 4 steps, guidance 1.5",
            Self::Turbo => {
                "SD-Turbo: Euler a on trailing timesteps, 2 steps, no guidance (SDEdit needs steps × strength ≥ 1)"
            }
            Self::Hyper => "Hyper-SD LoRAs: DDIM on trailing timesteps, 8 steps, no guidance",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_by_name_and_turbo_runs_one_conditional_pass_on_trailing_steps() {
        assert_eq!(Preset::parse("turbo").unwrap(), Preset::Turbo);
        assert_eq!(Preset::parse("LCM").unwrap(), Preset::Lcm);
        assert!(Preset::parse("fast").unwrap_err().to_string().contains("preset"));
        let turbo = Preset::Turbo.settings();
        assert_eq!(
            (turbo.sampler, turbo.spacing, turbo.guidance),
            (SamplerKind::EulerA, Some(TimestepSpacing::Trailing), 1.0)
        );
        assert_eq!(Preset::Hyper.settings().spacing, Some(TimestepSpacing::Trailing));
    }
}
