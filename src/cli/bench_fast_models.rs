//! `bench`'s figures of users' fast models at 512×512 (what FastSD CPU and StreamDiffusion run):
//! Stable Diffusion 1.5's UNet, a 4-step LCM-LoRA-shaped render (an SD 1.5 UNet with the LoRA
//! merged costs what the base does: 4 single-pass evaluations and the VAE decode) and a 1-step
//! SD-Turbo-shaped SDEdit frame (an SD 2.1 UNet between a TAESD encode and decode). Zero weights, as
//! the other network figures (dense CPU products cost the same whatever the values), or random
//! ones with `--random-weights`. The prompt's
//! encoding is left out (the studio caches it; a live frame never pays it).

use candle_core::Tensor;

use super::bench::{emit, median_secs};
use crate::models::autoencoder::{Autoencoder, AutoencoderConfig};
use crate::models::regions::{CrossAttentionBias, Region, RegionMaps};
use crate::models::tiny_vae::{TinyVae, TinyVaeConfig};
use crate::models::unet::{HeadCount, UNet, UNetConfig};
use crate::models::vae::VaeConfig;

/// Stable Diffusion 1.5's UNet config.
pub(super) fn sd15_unet() -> UNetConfig {
    UNetConfig { cross_attention_dim: 768, ..UNetConfig::default() }
}

/// Stable Diffusion 2.1's (SD-Turbo's) UNet config: linear projections, 1024-wide text, heads of
/// 64 channels.
fn sd21_unet() -> UNetConfig {
    UNetConfig {
        cross_attention_dim: 1024,
        attention_head_dim: HeadCount::PerLevel(vec![5, 10, 20, 20]),
        use_linear_projection: true,
        sample_size: 96,
        ..UNetConfig::default()
    }
}

/// The figures whose names `wanted` accepts.
pub(super) fn run(repeat: usize, random: bool, wanted: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    let (dev, dtype) = super::bench::target();
    let vb = super::bench::weights(random, dtype, &dev);
    let repeat = repeat.clamp(1, 3);
    let t = Tensor::full(500f32, 1, &dev)?;
    let latent = Tensor::zeros((1, 4, 64, 64), dtype, &dev)?;
    if wanted("sd15_unet_eval_512") || wanted("sd15_unet_regions_512") || wanted("lcm_lora_render_512") {
        let unet = UNet::new(&sd15_unet(), vb.clone())?;
        let ctx = Tensor::zeros((1, 77, 768), dtype, &dev)?;
        if wanted("sd15_unet_eval_512") {
            let secs = median_secs(repeat, || Ok(unet.forward(&latent, &t, &ctx).map(|_| ())?))?;
            emit("sd15_unet_eval_512", secs * 1e3, "ms", "SD 1.5 UNet, batch 1, 512x512 (64x64 latent)");
        }
        if wanted("sd15_unet_regions_512") {
            // Paint with words on the conditional pass: two phrases of three tokens each, on the
            // left half and the lower quarter, the bias at every attention resolution.
            let cover = |inside: fn(usize, usize) -> bool| Region {
                width: 64,
                height: 64,
                coverage: (0..64 * 64).map(|i| if inside(i % 64, i / 64) { 1.0 } else { 0.0 }).collect(),
                phrase: String::new(),
                weight: 2.0,
            };
            let (left, low) = (cover(|x, _| x < 32), cover(|_, y| y >= 48));
            let columns = [(&left, vec![5, 6, 7]), (&low, vec![8, 9, 10])];
            let maps = RegionMaps::new(&columns, 77, (64, 64), 4, dtype, &dev)?;
            let bias = CrossAttentionBias::new(std::sync::Arc::new(maps), vec![0.3]);
            let plain = median_secs(repeat, || Ok(unet.forward(&latent, &t, &ctx).map(|_| ())?))?;
            let with = median_secs(repeat, || {
                Ok(unet.forward_with_regions(&latent, &t, &ctx, None, Some(&bias)).map(|_| ())?)
            })?;
            emit("sd15_unet_regions_512", with * 1e3, "ms", "SD 1.5 UNet at 512x512 with two word regions");
            emit("sd15_unet_regions_ratio", with / plain, "ratio", "with two word regions vs none, same run");
        }
        if wanted("lcm_lora_render_512") {
            let vae = Autoencoder::new(&AutoencoderConfig::Kl(VaeConfig::default()), vb.clone())?;
            let secs = median_secs(repeat.min(2), || {
                let mut x = latent.clone();
                for _ in 0..4 {
                    x = unet.forward(&x, &t, &ctx)?;
                }
                vae.decode_scaled(&x)?;
                Ok(())
            })?;
            emit(
                "lcm_lora_render_512",
                secs * 1e3,
                "ms",
                "SD 1.5 with a merged LCM-LoRA, 4 steps without CFG (one pass each) + VAE decode, 512x512",
            );
        }
    }
    if wanted("turbo_sdedit_frame_512") {
        let unet = UNet::new(&sd21_unet(), vb.clone())?;
        let ctx = Tensor::zeros((1, 77, 1024), dtype, &dev)?;
        let taesd = TinyVae::new(&TinyVaeConfig::default(), vb.clone())?;
        let picture = Tensor::zeros((1, 3, 512, 512), dtype, &dev)?;
        let secs = median_secs(repeat, || {
            let z = taesd.encode(&picture)?;
            let x = unet.forward(&z, &t, &ctx)?;
            taesd.decode(&x)?;
            Ok(())
        })?;
        emit(
            "turbo_sdedit_frame_512",
            secs * 1e3,
            "ms",
            "SD-Turbo-shaped SDEdit frame: TAESD encode, one SD 2.1 UNet pass, TAESD decode, 512x512",
        );
    }
    Ok(())
}
