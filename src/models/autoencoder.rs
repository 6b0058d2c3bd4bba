//! The autoencoder of a pipeline: Stable Diffusion's `AutoencoderKL` or TAESD's
//! `AutoencoderTiny` (the built-in model's), chosen by the `_class_name` in `vae/config.json`.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::tiny_vae::{TinyVae, TinyVaeConfig};
use super::vae::{Vae, VaeConfig};

/// The `_class_name` diffusers writes for TAESD-style autoencoders.
pub const TINY_CLASS: &str = "AutoencoderTiny";

/// Either kind of autoencoder, behind what the pipeline needs of one, in the precision it runs
/// at (f32 where an `AutoencoderKL` asks for `force_upcast` in an f16 model).
#[derive(Debug)]
pub struct Autoencoder {
    net: Net,
    dtype: DType,
}

#[derive(Debug)]
enum Net {
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
    /// Builds the network `config` describes with weights from `vb` (diffusers' names), in f32
    /// where `vb` is f16 and the config asks for an upcast.
    pub fn new(config: &AutoencoderConfig, vb: VarBuilder) -> Result<Self> {
        let upcast = vb.dtype() == DType::F16 && matches!(config, AutoencoderConfig::Kl(c) if c.force_upcast);
        let vb = if upcast { vb.set_dtype(DType::F32) } else { vb };
        let dtype = vb.dtype();
        let net = match config {
            AutoencoderConfig::Kl(c) => Net::Kl(Box::new(Vae::new(c, vb)?)),
            AutoencoderConfig::Tiny(c) => Net::Tiny(Box::new(TinyVae::new(c, vb)?)),
        };
        Ok(Self { net, dtype })
    }

    /// Whether this is a TAESD-style `AutoencoderTiny`.
    pub fn is_tiny(&self) -> bool {
        matches!(self.net, Net::Tiny(_))
    }

    /// The precision it computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How many image pixels one latent pixel covers along each side.
    pub fn downscale(&self) -> usize {
        match &self.net {
            Net::Kl(v) => v.config().downscale(),
            Net::Tiny(v) => v.config().downscale(),
        }
    }

    fn scaling_factor(&self) -> f64 {
        match &self.net {
            Net::Kl(v) => v.config().scaling_factor,
            Net::Tiny(v) => v.config().scaling_factor,
        }
    }

    /// The scaled latent of images `[B, 3, H, W]` in [-1, 1] (for `AutoencoderKL` the mean of
    /// the distribution, as diffusers' pipelines take it with `argmax` sampling), in
    /// [`Self::dtype`] (the images are cast to it).
    pub fn encode_scaled(&self, image: &Tensor) -> Result<Tensor> {
        let input = image.to_dtype(self.dtype)?;
        let latent = match &self.net {
            Net::Kl(v) => v.encode(&input)?.0,
            Net::Tiny(v) => v.encode(&input)?,
        };
        latent * self.scaling_factor()
    }

    /// Images in about [-1, 1] from scaled latents, in [`Self::dtype`] (the latents are cast to
    /// it).
    pub fn decode_scaled(&self, latent: &Tensor) -> Result<Tensor> {
        let input = (latent.to_dtype(self.dtype)? / self.scaling_factor())?;
        match &self.net {
            Net::Kl(v) => v.decode(&input),
            Net::Tiny(v) => v.decode(&input),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// In an f16 model an `AutoencoderKL` that asks for it computes in f32 (SD's VAE overflows in
    /// half precision), a TAESD or a KL with `force_upcast: false` in f16, and hands back its own
    /// dtype whatever it was given.
    #[test]
    fn an_sd_vae_is_upcast_in_an_f16_model() {
        let kl = |upcast: bool| {
            AutoencoderConfig::from_json(serde_json::json!({
                "block_out_channels": [8, 16], "norm_num_groups": 4, "layers_per_block": 1,
                "latent_channels": 4, "force_upcast": upcast
            }))
            .unwrap()
        };
        let tiny = AutoencoderConfig::from_json(serde_json::json!({
            "_class_name": "AutoencoderTiny", "latent_channels": 4,
            "encoder_block_out_channels": [8, 8], "decoder_block_out_channels": [8, 8],
            "num_encoder_blocks": [1, 1], "num_decoder_blocks": [1, 1]
        }))
        .unwrap();
        let vb = candle_nn::VarBuilder::zeros(DType::F16, &Device::Cpu);
        for (config, dtype) in [(kl(true), DType::F32), (kl(false), DType::F16), (tiny, DType::F16)] {
            let vae = Autoencoder::new(&config, vb.clone()).unwrap();
            assert_eq!(vae.dtype(), dtype, "{config:?}");
            let f = vae.downscale();
            let image = Tensor::zeros((1, 3, 2 * f, 2 * f), DType::F16, &Device::Cpu).unwrap();
            let latent = vae.encode_scaled(&image).unwrap();
            assert_eq!((latent.dtype(), latent.dims()), (dtype, &[1, 4, 2, 2][..]));
            let f16 = latent.to_dtype(DType::F16).unwrap();
            assert_eq!(vae.decode_scaled(&f16).unwrap().dtype(), dtype);
        }
        let f32_vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        assert_eq!(Autoencoder::new(&kl(true), f32_vb).unwrap().dtype(), DType::F32);
    }

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
