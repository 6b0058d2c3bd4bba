//! Text-to-image with a model folder in the diffusers layout (the built-in model's format):
//! tokenizer → text encoder → sampler with classifier-free guidance on the UNet → VAE decode.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::clip::{ClipTextConfig, ClipTextModel};
use super::tokenizer::WordTokenizer;
use super::unet::{UNet, UNetConfig};
use super::vae::{Vae, VaeConfig};
use crate::core::samplers::{SampleContext, SamplerKind, SamplerOptions, StepCallback};
use crate::core::SeededNoise;
use crate::core::{
    Conditioning, CoreError, Guidance, ModelDenoiser, Network, PredictionType, SchedulerConfig,
};

/// What can go wrong loading or running a model folder; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file is not what it should be.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Weights are missing, truncated or of the wrong shape.
    #[error("{path}: {source}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// Why (names the tensor where candle does).
        source: candle_core::Error,
    },
    /// Sampling failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PipelineError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PipelineError::Io { path: path.into(), source })?;
    serde_json::from_str(&text)
        .map_err(|e| PipelineError::Config { path: path.into(), reason: e.to_string() })
}

fn weights<'a>(path: &Path, device: &'a Device) -> Result<VarBuilder<'a>, PipelineError> {
    if !path.exists() {
        return Err(PipelineError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        });
    }
    // SAFETY: the file is memory-mapped read-only; the studio never writes model files while
    // they are loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .map_err(|source| PipelineError::Weights { path: path.into(), source })
}

/// A loaded text-to-image model.
pub struct Pipeline {
    tokenizer: WordTokenizer,
    text: ClipTextModel,
    unet: UNet,
    vae: Vae,
    scheduler: SchedulerConfig,
    device: Device,
}

/// One text-to-image request.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from ("" = unconditional).
    pub negative: String,
    /// The sampling algorithm.
    pub sampler: SamplerKind,
    /// Inference steps.
    pub steps: usize,
    /// Guidance.
    pub guidance: Guidance,
    /// Seed of the starting noise.
    pub seed: u64,
}

/// A finished image.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// RGB, row-major, 8 bits per channel.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Prompt words the model does not know.
    pub unknown_words: Vec<String>,
}

/// The UNet with its timestep broadcast to the batch, as the samplers call it.
struct UNetNetwork<'a>(&'a UNet);

impl Network for UNetNetwork<'_> {
    fn forward(
        &mut self,
        x: &Tensor,
        timestep: f64,
        context: Option<&Tensor>,
    ) -> crate::core::Result<Tensor> {
        let Some(context) = context else {
            return Err(CoreError::Model("the UNet needs a text conditioning".into()));
        };
        let t = Tensor::full(timestep as f32, x.dim(0)?, x.device())?;
        Ok(self.0.forward(x, &t, context)?)
    }
}

impl Pipeline {
    /// Loads a model folder written by `latent-studio train`.
    pub fn load(dir: &Path) -> Result<Self, PipelineError> {
        let device = Device::Cpu;
        let tok_path = dir.join("tokenizer/tokenizer.json");
        let tokenizer =
            WordTokenizer::from_json(&read_json::<serde_json::Value>(&tok_path)?).ok_or_else(|| {
                PipelineError::Config { path: tok_path.clone(), reason: "not a word-level tokenizer".into() }
            })?;
        let text_config: ClipTextConfig = read_json(&dir.join("text_encoder/config.json"))?;
        let unet_config: UNetConfig = read_json(&dir.join("unet/config.json"))?;
        let vae_config: VaeConfig = read_json(&dir.join("vae/config.json"))?;
        let scheduler: SchedulerConfig = read_json(&dir.join("scheduler/scheduler_config.json"))?;
        let text_path = dir.join("text_encoder/model.safetensors");
        let unet_path = dir.join("unet/diffusion_pytorch_model.safetensors");
        let vae_path = dir.join("vae/diffusion_pytorch_model.safetensors");
        let text = ClipTextModel::new(&text_config, weights(&text_path, &device)?)
            .map_err(|source| PipelineError::Weights { path: text_path, source })?;
        let unet = UNet::new(&unet_config, weights(&unet_path, &device)?)
            .map_err(|source| PipelineError::Weights { path: unet_path, source })?;
        let vae = Vae::new(&vae_config, weights(&vae_path, &device)?)
            .map_err(|source| PipelineError::Weights { path: vae_path, source })?;
        Ok(Self { tokenizer, text, unet, vae, scheduler, device })
    }

    /// Image size in pixels (square).
    pub fn image_size(&self) -> usize {
        self.unet.config().sample_size * self.vae.config().downscale()
    }

    /// Encodes a prompt; also returns the words the model does not know.
    fn encode(&self, prompt: &str) -> Result<(Tensor, Vec<String>), PipelineError> {
        let encoded = self.tokenizer.encode(prompt);
        let ids = Tensor::from_vec(encoded.ids, (1, self.tokenizer.max_len()), &self.device)?;
        Ok((self.text.forward(&ids)?, encoded.unknown))
    }

    /// Renders `request`; `callback` sees every step and can stop the run (then `None`).
    pub fn render(
        &self,
        request: &Request,
        callback: &mut StepCallback<'_>,
    ) -> Result<Option<Rendered>, PipelineError> {
        let (cond, unknown_words) = self.encode(&request.prompt)?;
        let (uncond, _) = self.encode(&request.negative)?;
        let prediction =
            PredictionType::parse(self.scheduler.prediction_type.as_deref().unwrap_or("epsilon"))?;
        let sampler = request.sampler.build(&self.scheduler, request.steps, &SamplerOptions::default())?;
        let mut network = UNetNetwork(&self.unet);
        let conditioning = Conditioning::Guided { cond, uncond, guidance: request.guidance };
        let mut denoiser = ModelDenoiser::new(&mut network, prediction, conditioning)?;
        let latent = self.unet.config().sample_size;
        let channels = self.unet.config().in_channels;
        let x_t = SeededNoise::new(request.seed).tensor(
            &[1, channels, latent, latent],
            DType::F32,
            &self.device,
        )?;
        let mut step_noise = SeededNoise::new(request.seed.wrapping_add(1));
        let mut ctx =
            SampleContext { denoiser: &mut denoiser, noise: &mut step_noise, callback, inpaint: None };
        let Some(z) = sampler.sample(&x_t, &mut ctx)?.finished() else {
            return Ok(None);
        };
        let image = self.vae.decode(&(z / self.vae.config().scaling_factor)?)?;
        let size = self.image_size();
        // [-1, 1] CHW → u8 HWC.
        let rgb: Vec<u8> = ((image.squeeze(0)?.permute((1, 2, 0))?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
            .round()?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1()?;
        Ok(Some(Rendered { rgb, width: size, height: size, unknown_words }))
    }
}
