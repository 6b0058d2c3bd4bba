//! The autoencoder of a pipeline: Stable Diffusion's `AutoencoderKL` or TAESD's
//! `AutoencoderTiny` (the built-in model's), chosen by the `_class_name` in `vae/config.json`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::tiny_vae::{TinyVae, TinyVaeConfig};
use super::vae::{Vae, VaeConfig};

/// The `_class_name` diffusers writes for TAESD-style autoencoders.
pub const TINY_CLASS: &str = "AutoencoderTiny";

/// Either kind of autoencoder, behind what the pipeline needs of one.
#[derive(Debug)]
pub enum Autoencoder {
    /// `AutoencoderKL`: encoding gives a distribution, of which the mean is used.
    Kl(Box<Vae>),
    /// `AutoencoderTiny`: a deterministic encoder.
    Tiny(Box<TinyVae>),
}

/// An autoencoder config of either kind, read from a `config.json` value.
#[derive(Debug, Clone, PartialEq)]
pub enum AutoencoderConfig {
    /// `AutoencoderKL`'s.
    Kl(VaeConfig),
    /// `AutoencoderTiny`'s.
    Tiny(TinyVaeConfig),
}

impl AutoencoderConfig {
    /// Tells the kinds apart by `_class_name` (absent: `AutoencoderKL`, as older files have it).
    pub fn from_json(value: serde_json::Value) -> serde_json::Result<Self> {
        let tiny = value.get("_class_name").and_then(|c| c.as_str()) == Some(TINY_CLASS);
        Ok(if tiny {
            Self::Tiny(serde_json::from_value(value)?)
        } else {
            Self::Kl(serde_json::from_value(value)?)
        })
    }

    /// The config as diffusers writes it, with its `_class_name`.
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        let (mut value, class) = match self {
            Self::Kl(c) => (serde_json::to_value(c)?, "AutoencoderKL"),
            Self::Tiny(c) => (serde_json::to_value(c)?, TINY_CLASS),
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("_class_name".into(), class.into());
        }
        Ok(value)
    }

    /// How many image pixels one latent pixel covers along each side.
    pub fn downscale(&self) -> usize {
        match self {
            Self::Kl(c) => c.downscale(),
            Self::Tiny(c) => c.downscale(),
        }
    }

    /// Channels of the latent.
    pub fn latent_channels(&self) -> usize {
        match self {
            Self::Kl(c) => c.latent_channels,
            Self::Tiny(c) => c.latent_channels,
        }
    }

    /// Latents are multiplied by this before diffusion.
    pub fn scaling_factor(&self) -> f64 {
        match self {
            Self::Kl(c) => c.scaling_factor,
            Self::Tiny(c) => c.scaling_factor,
        }
    }

    /// Sets the factor (measured when the UNet's training starts).
    pub fn set_scaling_factor(&mut self, factor: f64) {
        match self {
            Self::Kl(c) => c.scaling_factor = factor,
            Self::Tiny(c) => c.scaling_factor = factor,
        }
    }
}

impl Autoencoder {
    /// Builds the network `config` describes with weights from `vb` (diffusers' names).
    pub fn new(config: &AutoencoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match config {
            AutoencoderConfig::Kl(c) => Self::Kl(Box::new(Vae::new(c, vb)?)),
            AutoencoderConfig::Tiny(c) => Self::Tiny(Box::new(TinyVae::new(c, vb)?)),
        })
    }

    /// How many image pixels one latent pixel covers along each side.
    pub fn downscale(&self) -> usize {
        match self {
            Self::Kl(v) => v.config().downscale(),
            Self::Tiny(v) => v.config().downscale(),
        }
    }

    fn scaling_factor(&self) -> f64 {
        match self {
            Self::Kl(v) => v.config().scaling_factor,
            Self::Tiny(v) => v.config().scaling_factor,
        }
    }

    /// The scaled latent of images `[B, 3, H, W]` in [-1, 1] (for `AutoencoderKL` the mean of
    /// the distribution, as diffusers' pipelines take it with `argmax` sampling).
    pub fn encode_scaled(&self, image: &Tensor) -> Result<Tensor> {
        let latent = match self {
            Self::Kl(v) => v.encode(image)?.0,
            Self::Tiny(v) => v.encode(image)?,
        };
        latent * self.scaling_factor()
    }

    /// Images in about [-1, 1] from scaled latents.
    pub fn decode_scaled(&self, latent: &Tensor) -> Result<Tensor> {
        let latent = (latent / self.scaling_factor())?;
        match self {
            Self::Kl(v) => v.decode(&latent),
            Self::Tiny(v) => v.decode(&latent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_name_picks_the_kind_and_survives_a_round_trip() {
        let kl = AutoencoderConfig::from_json(serde_json::json!({ "block_out_channels": [8, 16] })).unwrap();
        assert!(matches!(&kl, AutoencoderConfig::Kl(c) if c.block_out_channels == [8, 16]));
        let tiny = AutoencoderConfig::from_json(serde_json::json!({
            "_class_name": "AutoencoderTiny", "latent_channels": 8, "patch_size": 2
        }))
        .unwrap();
        assert_eq!(tiny.downscale(), 16);
        for config in [kl, tiny] {
            let json = config.to_json().unwrap();
            assert_eq!(AutoencoderConfig::from_json(json).unwrap(), config);
        }
    }
}
