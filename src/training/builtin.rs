//! The built-in model's design: a miniature of Stable Diffusion (CLIP-style text encoder, UNet
//! with cross-attention, KL autoencoder 64x64x3 → 16x16x4), sized so one UNet evaluation stays
//! well under 10 ms on two cores. Saved in the diffusers folder layout, so the loader that reads
//! users' checkpoints reads it too.

use crate::core::SchedulerConfig;
use crate::models::clip::ClipTextConfig;
use crate::models::pipeline::ModelDefaults;
use crate::models::unet::{HeadCount, UNetConfig};
use crate::models::vae::VaeConfig;

/// Output size in pixels.
pub const IMAGE_SIZE: usize = 64;
/// Tokens per prompt.
pub const MAX_TOKENS: usize = 16;

/// The autoencoder: three levels, so 64 → 16.
pub fn vae_config() -> VaeConfig {
    VaeConfig {
        block_out_channels: vec![16, 32, 64],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 8,
        scaling_factor: 1.0,
        sample_size: IMAGE_SIZE,
        ..VaeConfig::default()
    }
}

/// The text encoder for a vocabulary of `vocab_size` ids.
pub fn text_config(vocab_size: usize) -> ClipTextConfig {
    ClipTextConfig {
        vocab_size,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        max_position_embeddings: MAX_TOKENS,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-5,
    }
}

/// The UNet: 16x16 → 8x8 → 4x4, cross-attention at the two lower levels.
pub fn unet_config() -> UNetConfig {
    UNetConfig {
        in_channels: 4,
        out_channels: 4,
        block_out_channels: vec![32, 64, 128],
        down_block_types: vec![
            "DownBlock2D".into(),
            "CrossAttnDownBlock2D".into(),
            "CrossAttnDownBlock2D".into(),
        ],
        up_block_types: vec!["CrossAttnUpBlock2D".into(), "CrossAttnUpBlock2D".into(), "UpBlock2D".into()],
        layers_per_block: 1,
        attention_head_dim: HeadCount::One(4),
        cross_attention_dim: 64,
        norm_num_groups: 16,
        sample_size: IMAGE_SIZE / 4,
        ..UNetConfig::default()
    }
}

/// Stable Diffusion's noise schedule, trailing spacing so few-step DDIM starts at pure noise.
pub fn scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        class_name: Some("DDIMScheduler".into()),
        timestep_spacing: Some("trailing".into()),
        steps_offset: Some(0),
        set_alpha_to_one: Some(true),
        prediction_type: Some("epsilon".into()),
        ..SchedulerConfig::stable_diffusion()
    }
}

/// What `render` and the studio use unless told otherwise: few DDIM steps (trailing spacing
/// starts them at pure noise), moderate guidance.
pub fn model_defaults() -> ModelDefaults {
    ModelDefaults { sampler: Some("ddim".into()), steps: 20, guidance: 5.0 }
}
