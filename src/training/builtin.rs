//! The built-in model's design: a miniature of Stable Diffusion (CLIP-style text encoder, UNet
//! with cross-attention, a TAESD-style autoencoder 128x128x3 → 16x16x8), sized so one UNet
//! evaluation stays well under 10 ms and encoding plus decoding a picture under 15 ms on two
//! cores. Saved in the diffusers folder layout, so the loader that reads users' checkpoints reads
//! it too.

use crate::core::SchedulerConfig;
use crate::models::clip::ClipTextConfig;
use crate::models::pipeline::ModelDefaults;
use crate::models::tiny_vae::TinyVaeConfig;
use crate::models::unet::{HeadCount, UNetConfig};

/// Output size in pixels.
pub const IMAGE_SIZE: usize = 128;
/// Channels of the latent.
pub const LATENT_CHANNELS: usize = 8;
/// Tokens per prompt.
pub const MAX_TOKENS: usize = 16;

/// The autoencoder: 4x4 pixel patches folded into channels (128 → 32), then two levels (32 → 16),
/// so 8x with 8 latent channels: 24 times fewer numbers than pixels (SD's VAE: 48). No
/// convolution runs above 32x32, which keeps encoding plus decoding a 128x128 picture near 11 ms
/// on two cores (a 2x2 patch with three levels measured 22 ms); the decoder's last convolution
/// draws each 4x4 patch's 48 values.
pub fn vae_config() -> TinyVaeConfig {
    TinyVaeConfig {
        encoder_block_out_channels: vec![64, 64],
        num_encoder_blocks: vec![1, 2],
        decoder_block_out_channels: vec![64, 64],
        num_decoder_blocks: vec![2, 2],
        latent_channels: LATENT_CHANNELS,
        patch_size: 4,
        scaling_factor: 1.0,
        sample_size: IMAGE_SIZE,
        ..TinyVaeConfig::default()
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

/// The UNet: 16x16 → 8x8 → 4x4, cross-attention at the two lower levels. The finest level is
/// 48 channels wide (for 8 latent channels; the 64x64 model had 32 for 4): it draws the detail,
/// and costs about 0.1 GFLOP of the guided pair's 0.62 (the budget: 1.3 × 0.525).
pub fn unet_config() -> UNetConfig {
    UNetConfig {
        in_channels: LATENT_CHANNELS,
        out_channels: LATENT_CHANNELS,
        block_out_channels: vec![48, 64, 128],
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
        sample_size: IMAGE_SIZE / 8,
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
    ModelDefaults { sampler: Some("ddim".into()), steps: 20, guidance: 5.0, guidance_range: None }
}

/// Width of the live student's guidance embedding (diffusers' LCM models use 256 as well).
pub const GUIDANCE_EMBEDDING: usize = 256;

/// The guidance scales the live student is distilled over: its guidance control's range.
pub const LIVE_GUIDANCE: (f64, f64) = (1.0, 8.0);

/// The live student's UNet: the teacher's, plus the guidance embedding's `cond_proj`.
pub fn live_unet_config() -> UNetConfig {
    UNetConfig { time_cond_proj_dim: Some(GUIDANCE_EMBEDDING), ..unet_config() }
}

/// The live student's scheduler: diffusers' `LCMScheduler` on the teacher's noise schedule, with
/// the 50-point distillation grid it was trained on.
pub fn live_scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        class_name: Some("LCMScheduler".into()),
        original_inference_steps: Some(50),
        timestep_scaling: Some(10.0),
        ..scheduler_config()
    }
}

/// The live student's defaults: two LCM steps at the teacher's guidance, within the range it
/// learnt.
pub fn live_defaults() -> ModelDefaults {
    ModelDefaults {
        sampler: Some("lcm".into()),
        steps: 2,
        guidance: 5.0,
        guidance_range: Some(LIVE_GUIDANCE),
    }
}
