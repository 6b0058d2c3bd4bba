//! The adversary of the autoencoder's decoder (TAESD trains its decoder as a GAN conditioned on
//! the latent; LDM's autoencoder uses a patch discriminator): three stride-2 convolutions take a
//! 128x128 picture to 16x16 features, the latent the picture was decoded from joins them there,
//! and a head scores every 8x8 patch as a scene or a decoding. A decoder that only minimises
//! pixel losses averages over what it cannot tell apart and blurs; one that must also fool this
//! draws edges.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::layers::{conv, Conv2d};

/// Slope of the leaky ReLUs.
const SLOPE: f64 = 0.2;

/// The patch discriminator.
#[derive(Debug)]
pub struct PatchDiscriminator {
    downs: Vec<Conv2d>,
    joint: Conv2d,
    head: Conv2d,
}

impl PatchDiscriminator {
    /// For pictures `downscale` times the latent's side (a power of two, at least 2), with
    /// `latent_channels` channels of latent.
    pub fn new(downscale: usize, latent_channels: usize, vb: VarBuilder) -> Result<Self> {
        if downscale < 2 || !downscale.is_power_of_two() {
            return Err(candle_core::Error::Msg(format!(
                "discriminator: downscale {downscale} is not a power of two"
            )));
        }
        let levels = downscale.trailing_zeros() as usize;
        let width = |i: usize| (32 << i).min(64);
        let downs = (0..levels)
            .map(|i| {
                conv(if i == 0 { 3 } else { width(i - 1) }, width(i), 3, 2, 1, vb.pp(format!("down{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let top = width(levels - 1);
        Ok(Self {
            downs,
            joint: conv(top + latent_channels, 64, 3, 1, 1, vb.pp("joint"))?,
            head: conv(64, 1, 1, 1, 0, vb.pp("head"))?,
        })
    }

    /// Logits `[B, 1, h, w]` (one per latent pixel) for pictures in [-1, 1] and their latents.
    pub fn forward(&self, image: &Tensor, latent: &Tensor) -> Result<Tensor> {
        let mut h = image.clone();
        for down in &self.downs {
            h = candle_nn::ops::leaky_relu(&down.forward(&h)?, SLOPE)?;
        }
        let h = Tensor::cat(&[&h, latent], 1)?;
        let h = candle_nn::ops::leaky_relu(&self.joint.forward(&h)?, SLOPE)?;
        self.head.forward(&h)
    }
}

/// The hinge losses (Miyato et al.; LDM's autoencoder): the discriminator's, pushing real logits
/// above 1 and fake ones below −1.
pub fn discriminator_loss(real: &Tensor, fake: &Tensor) -> Result<Tensor> {
    let real = (1.0 - real)?.relu()?.mean_all()?;
    let fake = (fake + 1.0)?.relu()?.mean_all()?;
    real + fake
}

/// The generator's: its fakes' logits as high as possible.
pub fn generator_loss(fake: &Tensor) -> Result<Tensor> {
    fake.mean_all()?.neg()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    #[test]
    fn scores_one_logit_per_latent_pixel_and_the_hinge_is_zero_when_confident() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let d = PatchDiscriminator::new(8, 8, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
        let image = Tensor::zeros((2, 3, 64, 48), DType::F32, &dev).unwrap();
        let latent = Tensor::zeros((2, 8, 8, 6), DType::F32, &dev).unwrap();
        assert_eq!(d.forward(&image, &latent).unwrap().dims(), &[2, 1, 8, 6]);
        let t = |v: &[f32]| Tensor::new(v, &dev).unwrap();
        let loss =
            |r: &[f32], f: &[f32]| discriminator_loss(&t(r), &t(f)).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(loss(&[1.5, 2.0], &[-1.0, -3.0]), 0.0);
        // Real at 0 costs 1, a fake at 0 costs 1: the mean of each, summed.
        assert_eq!(loss(&[0.0, 2.0], &[0.0, -2.0]), 1.0);
        assert_eq!(generator_loss(&t(&[1.0, 3.0])).unwrap().to_scalar::<f32>().unwrap(), -2.0);
        assert!(PatchDiscriminator::new(6, 8, VarBuilder::zeros(DType::F32, &dev)).is_err());
    }
}
