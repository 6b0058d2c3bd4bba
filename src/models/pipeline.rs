//! Text-to-image and SDEdit with a model folder in the diffusers layout — users' Stable
//! Diffusion 1.x/2.x folders and the built-in model alike: tokenizer → text encoder → sampler with
//! classifier-free guidance on the UNet → VAE decode. Every error names the file it is about.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, D};

use candle_nn::VarBuilder;

use super::autoencoder::{Autoencoder, AutoencoderConfig};
use super::clip::{ClipTextConfig, ClipTextModel};
use super::clip_tokenizer::ClipTokenizer;
use super::kept_weights::{build_keeping, var_builder, Weights};
use super::lora::{merge, LoraFile, LoraPart, LoraReport};
use super::regions::{find_phrase, noise_strength, CrossAttentionBias, Region, RegionMaps};
use super::tokenizer::WordTokenizer;
use super::unet::{guidance_embedding, UNet, UNetConfig};
use crate::cache::LruCache;
use crate::core::interpolate::lerp;
use crate::core::inversion::DdimInverse;
use crate::core::samplers::{SampleContext, SamplerKind, SamplerOptions, StepCallback};
use crate::core::sdedit::{sdedit, SdEdit};
use crate::core::spacing::interp_sigma;
use crate::core::SeededNoise;
use crate::core::{
    Conditioning, CoreError, Guidance, ModelDenoiser, Network, PredictionType, SchedulerConfig,
};
use crate::edit_mask::EditMask;

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
    /// A file is not what it should be, or asks for something we do not run.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The file or folder.
        path: PathBuf,
        /// Why, and what to do about it.
        reason: String,
    },
    /// Weights are missing, truncated or of the wrong shape.
    #[error("{path}: {source}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// Why (candle names the tensor and both shapes).
        source: candle_core::Error,
    },
    /// A request setting is impossible.
    #[error("invalid {name} = {value}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Sampling failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The GPU had no memory left for a render of this size.
    #[error("the {device} ran out of memory rendering {width}x{height}: try a smaller size, or --device cpu ({source})")]
    OutOfMemory {
        /// Which device.
        device: String,
        /// The picture's width.
        width: usize,
        /// The picture's height.
        height: usize,
        /// The driver's words.
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// `self`, or an [`PipelineError::OutOfMemory`] naming the size where a GPU driver (CUDA,
    /// cuBLAS, Metal) reported that it ran out of memory.
    fn naming_memory(self, gpu: Option<String>, (width, height): (usize, usize)) -> Self {
        let text = self.to_string();
        let out_of_memory = ["OUT_OF_MEMORY", "ALLOC_FAILED", "out of memory", "insufficient memory"]
            .iter()
            .any(|sign| text.contains(sign));
        // The driver's words without the backtrace candle attaches where RUST_BACKTRACE is set.
        let source = match self {
            Self::Tensor(candle_core::Error::WithBacktrace { inner, .. }) => Self::Tensor(*inner),
            other => other,
        };
        match gpu {
            Some(device) if out_of_memory => {
                Self::OutOfMemory { device, width, height, source: Box::new(source) }
            }
            _ => source,
        }
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Unsupported { path: path.into(), reason: reason.into() }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PipelineError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PipelineError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|e| unsupported(path, e.to_string()))
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype: f32 (the default on the CPU) or f16 (the default on a GPU).
    pub dtype: DType,
    /// Where to compute: the CPU, or a CUDA or Metal device in builds with those features.
    pub device: Device,
    /// Override of the scheduler config's prediction type.
    pub prediction_type: Option<PredictionType>,
}

impl Default for LoadOptions {
    /// The process's device ([`super::device::default_device`]): on the CPU in f32, on a GPU in
    /// f16 (an `AutoencoderKL` that asks for it upcast to f32).
    fn default() -> Self {
        let device = super::device::default_device();
        let dtype = if device.is_cpu() { DType::F32 } else { DType::F16 };
        Self { dtype, device, prediction_type: None }
    }
}

/// Render defaults a model folder may store in `latent_studio.json` (the built-in model does);
/// Stable Diffusion folders get diffusers' defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ModelDefaults {
    /// The sampler's command-line name; `None` = the scheduler config's class.
    pub sampler: Option<String>,
    /// Inference steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// The guidance scales a distilled model was trained on (its guidance is an input of the
    /// network, meaningless outside them); `None`: any scale.
    pub guidance_range: Option<(f64, f64)>,
}

impl Default for ModelDefaults {
    fn default() -> Self {
        Self { sampler: None, steps: 50, guidance: 7.5, guidance_range: None }
    }
}

/// The file a model folder's [`ModelDefaults`] live in.
pub const DEFAULTS_FILE: &str = "latent_studio.json";

/// The weights file of a component: `base.safetensors`, or its `.fp16` variant (preferred when
/// computing in f16, used when it is the only one). Pickled weights are refused.
fn weights_file(dir: &Path, base: &str, dtype: DType) -> Result<PathBuf, PipelineError> {
    let full = dir.join(format!("{base}.safetensors"));
    let half = dir.join(format!("{base}.fp16.safetensors"));
    let order = if dtype == DType::F16 { [&half, &full] } else { [&full, &half] };
    if let Some(found) = order.into_iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let pickle = dir.join(format!("{base}.bin"));
    if pickle.exists() {
        return Err(unsupported(&pickle, PICKLE_REFUSAL));
    }
    Err(PipelineError::Io {
        path: full,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no safetensors weights in this folder"),
    })
}

/// Why pickled checkpoints are refused, and what to do instead.
pub const PICKLE_REFUSAL: &str = "pickled PyTorch weights (.ckpt, .pt, .pth, .bin) can run arbitrary code when \
     loaded, so the studio does not open them; convert them to .safetensors first (for example with diffusers' \
     `StableDiffusionPipeline.from_single_file(...).save_pretrained(dir, safe_serialization=True)`)";

fn weights_error(path: &Path, source: candle_core::Error) -> PipelineError {
    PipelineError::Weights { path: path.into(), source }
}

fn load_weights<'a>(path: &Path, dtype: DType, device: &'a Device) -> Result<VarBuilder<'a>, PipelineError> {
    // SAFETY: the file is memory-mapped read-only; the studio never writes a model file while it
    // is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
        .map_err(|source| PipelineError::Weights { path: path.into(), source })
}

/// Tokenizes prompts for the text encoder.
#[derive(Debug, Clone)]
enum PromptTokenizer {
    Word(WordTokenizer),
    Clip(Box<ClipTokenizer>),
}

/// A tokenized prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The ids the text encoder sees.
    pub ids: Vec<u32>,
    /// Words the model does not know (word-level tokenizers only).
    pub unknown: Vec<String>,
    /// Whether the prompt was cut to fit.
    pub truncated: bool,
}

impl PromptTokenizer {
    fn load(dir: &Path, max_len: usize) -> Result<Self, PipelineError> {
        let json = dir.join("tokenizer.json");
        if json.exists() && !dir.join("vocab.json").exists() {
            let value: serde_json::Value = read_json(&json)?;
            if value["model"]["type"] == "WordLevel" {
                return WordTokenizer::from_json(&value)
                    .map(Self::Word)
                    .ok_or_else(|| unsupported(&json, "a word-level tokenizer without [PAD] and [UNK]"));
            }
        }
        ClipTokenizer::from_dir(dir, max_len)
            .map(|t| Self::Clip(Box::new(t)))
            .map_err(|e| PipelineError::Unsupported { path: e.path.into(), reason: e.reason })
    }

    /// The ids a text stands for, without the start, end and padding tokens, cut where the
    /// encoder's positions end.
    fn content(&self, text: &str) -> Vec<u32> {
        let ids = self.encode(text).ids;
        match self {
            Self::Word(_) => ids.into_iter().take_while(|&id| id != super::tokenizer::PAD_ID).collect(),
            Self::Clip(t) => ids.into_iter().skip(1).take_while(|&id| id != t.eos()).collect(),
        }
    }

    /// The position of a text's first token (after CLIP's start token).
    fn offset(&self) -> usize {
        match self {
            Self::Word(_) => 0,
            Self::Clip(_) => 1,
        }
    }

    /// How many tokens of text fit.
    fn room(&self) -> usize {
        match self {
            Self::Word(t) => t.max_len(),
            Self::Clip(t) => t.max_len().saturating_sub(2),
        }
    }

    fn encode(&self, prompt: &str) -> Tokens {
        match self {
            Self::Word(t) => {
                let e = t.encode(prompt);
                Tokens { ids: e.ids, unknown: e.unknown, truncated: e.truncated }
            }
            Self::Clip(t) => {
                let e = t.encode(prompt);
                Tokens { ids: e.ids, unknown: Vec::new(), truncated: e.truncated }
            }
        }
    }
}

/// A loaded model.
pub struct Pipeline {
    tokenizer: PromptTokenizer,
    text: ClipTextModel,
    unet: UNet,
    vae: Autoencoder,
    scheduler: SchedulerConfig,
    prediction: PredictionType,
    defaults: ModelDefaults,
    /// Text conditionings by token ids: a prompt is encoded once while sliders move.
    conditionings: Mutex<LruCache<Vec<u32>, Tensor>>,
    /// Encoded pictures by a hash of their pixels: an SDEdit start is encoded once while the
    /// strength, guidance or prompt change.
    encoded_images: Mutex<LruCache<u64, Tensor>>,
    /// The UNet's and text encoder's weights as loaded, to merge LoRAs into without reading the
    /// checkpoint again.
    base: BaseWeights,
    /// The LoRAs merged now (file, strength bits) and their reports.
    loras: (Vec<(PathBuf, u64)>, Vec<LoraReport>),
    /// A TAESD that decodes step previews, apart from the autoencoder of the finals.
    preview_decoder: Option<Autoencoder>,
    dtype: DType,
    device: Device,
}

/// The networks' weights as the checkpoint gave them.
struct BaseWeights {
    unet: Weights,
    text: Weights,
    /// Whether the text encoder now runs merged weights.
    text_patched: bool,
}

/// Default memory budget of the text-conditioning cache.
pub const CONDITIONING_CACHE_BYTES: usize = 64 << 20;

/// An SDEdit request: start from a picture instead of noise.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// `[1, 3, H, W]` in [-1, 1].
    pub image: Tensor,
    /// Strength in (0, 1].
    pub strength: f64,
    /// Where the edit may change the picture, or `None` for everywhere.
    pub mask: Option<EditMask>,
}

/// One render request.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from ("" = unconditional).
    pub negative: String,
    /// The sampling algorithm.
    pub sampler: SamplerKind,
    /// Spacing, Karras sigmas and eta on top of the model's scheduler config.
    pub options: SamplerOptions,
    /// Inference steps.
    pub steps: usize,
    /// Guidance.
    pub guidance: Guidance,
    /// Seed of the starting noise (and of stochastic samplers' noise).
    pub seed: u64,
    /// Image size in pixels; the model's default when `None`.
    pub size: Option<(usize, usize)>,
    /// Unit-variance starting noise `[1, C, H/f, W/f]` instead of the seed's.
    pub init_latent: Option<Tensor>,
    /// SDEdit from a picture.
    pub init_image: Option<InitImage>,
    /// Interpolate the conditioning toward a second prompt: (prompt, t in [0, 1]).
    pub prompt_to: Option<(String, f64)>,
    /// Paint with words: phrases tied to regions of the picture.
    pub regions: Vec<Region>,
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
    /// The denoised latent, before dividing by the VAE scaling factor.
    pub latent: Tensor,
    /// Prompt words the model does not know.
    pub unknown_words: Vec<String>,
    /// Whether the prompt was cut to the text encoder's length.
    pub truncated: bool,
    /// What else the user should know about this render.
    pub notes: Vec<String>,
}

/// The UNet with its timestep broadcast to the batch, as the samplers call it. A distilled
/// model's guidance embedding (one row) goes to every batch item.
struct UNetNetwork<'a> {
    unet: &'a UNet,
    guidance: Option<Tensor>,
    /// An inpainting model's extra input channels (mask, masked-picture latent), `[1, 5, h, w]`,
    /// joined to every batch item after the latent.
    extra: Option<Tensor>,
    /// Paint with words' region maps, applied where the batch item's context is this one.
    regions: Option<PaintedWords>,
}

/// Paint with words during a render: the region maps, the conditional context they apply to
/// (the unconditional pass is left alone) and the schedule's sigmas that give each step's σ.
struct PaintedWords {
    maps: Arc<RegionMaps>,
    cond: Tensor,
    sigmas: Vec<f32>,
}

impl PaintedWords {
    /// The bias of one UNet call at `timestep` on a batch of `context`s.
    fn bias(&self, context: &Tensor, timestep: f64) -> crate::core::Result<CrossAttentionBias> {
        let cond = self.cond.get(0)?;
        // σ at a (possibly fractional) timestep as the samplers interpolate it, as ᾱ = 1/(1 + σ²).
        let sigma = interp_sigma(&self.sigmas, timestep);
        let strength = noise_strength(1.0 / (1.0 + sigma * sigma));
        let strengths = (0..context.dim(0)?)
            .map(|i| {
                let diff = (context.get(i)? - &cond)?.abs()?.max_all()?.to_dtype(DType::F32)?;
                Ok(if diff.to_scalar::<f32>()? == 0.0 { strength } else { 0.0 })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(CrossAttentionBias::new(self.maps.clone(), strengths))
    }
}

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
        let batch = x.dim(0)?;
        let t = Tensor::full(timestep as f32, batch, x.device())?;
        let guidance = match &self.guidance {
            Some(row) => Some(row.broadcast_as((batch, row.dim(1)?))?.contiguous()?),
            None => None,
        };
        let x = match &self.extra {
            Some(extra) => {
                let (_, c, h, w) = extra.dims4()?;
                Tensor::cat(&[x, &extra.broadcast_as((batch, c, h, w))?.to_dtype(x.dtype())?], 1)?
            }
            None => x.clone(),
        };
        let bias = self.regions.as_ref().map(|r| r.bias(context, timestep)).transpose()?;
        Ok(self.unet.forward_with_regions(&x, &t, context, guidance.as_ref(), bias.as_ref())?)
    }
}

/// Refuses UNets we cannot run, naming what they are.
fn check_unet(path: &Path, raw: &serde_json::Value) -> Result<(), PipelineError> {
    if raw.get("addition_embed_type").is_some_and(|v| !v.is_null())
        || raw.get("transformer_layers_per_block").is_some_and(|v| v.as_u64() != Some(1))
    {
        return Err(unsupported(
            path,
            "this is an SDXL UNet; the studio runs Stable Diffusion 1.x and 2.x models",
        ));
    }
    let channels = |name: &str| raw.get(name).and_then(|v| v.as_u64());
    if let (Some(inputs), Some(outputs)) = (channels("in_channels"), channels("out_channels")) {
        if inputs != outputs && inputs != 2 * outputs + 1 {
            return Err(unsupported(
                path,
                format!(
                    "this UNet takes {inputs} input channels for {outputs} latent ones (an instruct-pix2pix or \
                     depth model?); the studio runs ordinary and inpainting ({}) UNets",
                    2 * outputs + 1
                ),
            ));
        }
    }
    match raw.get("_class_name").and_then(|v| v.as_str()) {
        None | Some("UNet2DConditionModel") => Ok(()),
        Some(other) => {
            Err(unsupported(path, format!("unknown architecture {other}; expected UNet2DConditionModel")))
        }
    }
}

impl Pipeline {
    /// Loads a diffusers-layout model folder.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self, PipelineError> {
        if dir.is_file() {
            let ext = dir.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            return match ext.as_str() {
                "safetensors" => Self::load_single_file(dir, options),
                "ckpt" | "pt" | "pth" | "bin" => Err(unsupported(dir, PICKLE_REFUSAL)),
                _ => Err(unsupported(dir, "expected a diffusers model folder or a .safetensors checkpoint")),
            };
        }
        if !dir.join("model_index.json").exists() {
            return Err(unsupported(dir, "not a diffusers model folder: it has no model_index.json"));
        }
        for part in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
            if !dir.join(part).is_dir() {
                return Err(unsupported(&dir.join(part), "this component folder is missing"));
            }
        }
        let (dtype, device) = (options.dtype, options.device.clone());
        let defaults_path = dir.join(DEFAULTS_FILE);
        let defaults: ModelDefaults =
            if defaults_path.exists() { read_json(&defaults_path)? } else { ModelDefaults::default() };
        if let Some((lo, hi)) = defaults.guidance_range {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(unsupported(
                    &defaults_path,
                    format!("guidance_range [{lo}, {hi}] is not a finite range from low to high"),
                ));
            }
        }
        let unet_config_path = dir.join("unet/config.json");
        let raw: serde_json::Value = read_json(&unet_config_path)?;
        check_unet(&unet_config_path, &raw)?;
        let unet_config: UNetConfig =
            serde_json::from_value(raw).map_err(|e| unsupported(&unet_config_path, e.to_string()))?;
        let text_config: ClipTextConfig = read_json(&dir.join("text_encoder/config.json"))?;
        let vae_config_path = dir.join("vae/config.json");
        let vae_config = AutoencoderConfig::from_json(read_json(&vae_config_path)?)
            .map_err(|e| unsupported(&vae_config_path, e.to_string()))?;
        let scheduler: SchedulerConfig = read_json(&dir.join("scheduler/scheduler_config.json"))?;
        let tokenizer = PromptTokenizer::load(&dir.join("tokenizer"), text_config.max_position_embeddings)?;
        let prediction = match options.prediction_type {
            Some(p) => p,
            None => PredictionType::parse(scheduler.prediction_type.as_deref().unwrap_or("epsilon"))?,
        };

        let text_path = weights_file(&dir.join("text_encoder"), "model", dtype)?;
        let (text, text_weights) = build_keeping(load_weights(&text_path, dtype, &device)?, |vb| {
            ClipTextModel::new(&text_config, vb)
        })
        .map_err(|source| PipelineError::Weights { path: text_path, source })?;
        let unet_path = weights_file(&dir.join("unet"), "diffusion_pytorch_model", dtype)?;
        let (unet, unet_weights) =
            build_keeping(load_weights(&unet_path, dtype, &device)?, |vb| UNet::new(&unet_config, vb))
                .map_err(|source| PipelineError::Weights { path: unet_path, source })?;
        let vae_path = weights_file(&dir.join("vae"), "diffusion_pytorch_model", dtype)?;
        let vae = Autoencoder::new(&vae_config, load_weights(&vae_path, dtype, &device)?)
            .map_err(|source| PipelineError::Weights { path: vae_path, source })?;
        let conditionings = Mutex::new(LruCache::new(CONDITIONING_CACHE_BYTES));
        let encoded_images = Mutex::new(LruCache::new(CONDITIONING_CACHE_BYTES));
        Ok(Self {
            tokenizer,
            text,
            unet,
            vae,
            scheduler,
            prediction,
            defaults,
            conditionings,
            encoded_images,
            base: BaseWeights { unet: unet_weights, text: text_weights, text_patched: false },
            loras: Default::default(),
            preview_decoder: None,
            dtype,
            device,
        })
    }

    /// Replaces the autoencoder by the one in `path`: a diffusers `AutoencoderKL` or
    /// `AutoencoderTiny` (TAESD) folder (`config.json` and its weights), a model folder's
    /// `vae/`, or a single file ([`super::vae_files`]: raw TAESD halves, diffusers or LDM files). It must have the UNet's latent channels and the same downscale; its own scaling
    /// factor applies (TAESD's 1.0: it reads the UNet's latents directly). Encoded pictures
    /// cached with the old one are dropped.
    pub fn swap_vae(&mut self, path: &Path) -> Result<(), PipelineError> {
        self.vae = self.read_autoencoder(path)?;
        if let Ok(mut cache) = self.encoded_images.lock() {
            cache.clear();
        }
        Ok(())
    }

    /// Decodes step previews through the TAESD (`AutoencoderTiny`) at `path` (folder or file),
    /// instead of the linear latent-to-RGB map; `None` goes back to the map. The autoencoder that
    /// encodes and decodes finals stays.
    pub fn set_preview_decoder(&mut self, path: Option<&Path>) -> Result<(), PipelineError> {
        self.preview_decoder =
            match path {
                None => None,
                Some(path) => match self.read_autoencoder(path)? {
                    tiny if tiny.is_tiny() => Some(tiny),
                    _ => return Err(unsupported(
                        path,
                        "step previews decode through a TAESD (AutoencoderTiny); this is an AutoencoderKL: \
                         use it for the final pictures",
                    )),
                },
            };
        Ok(())
    }

    /// Whether step previews decode through a TAESD.
    pub fn decodes_previews(&self) -> bool {
        self.preview_decoder.is_some()
    }

    /// A step's predicted latent decoded by the preview TAESD: `[1, 3, H, W]` in [0, 1] on the
    /// CPU, or `None` without one.
    pub fn decode_preview(&self, latent: &Tensor) -> Result<Option<Tensor>, PipelineError> {
        let Some(decoder) = &self.preview_decoder else { return Ok(None) };
        let image = decoder.decode_scaled(latent)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        Ok(Some(((image + 1.0)? / 2.0)?.clamp(0f32, 1f32)?))
    }

    /// The autoencoder at `path`, checked to fit the UNet.
    fn read_autoencoder(&self, path: &Path) -> Result<Autoencoder, PipelineError> {
        if !path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder");
            return Err(PipelineError::Io { path: path.into(), source });
        }
        let (config, weights, config_path) = if path.is_file() {
            let (config, vb) = super::vae_files::load(path, self.dtype, &self.device)?;
            (config, vb, path.to_path_buf())
        } else {
            let dir = if path.join("config.json").is_file() { path.to_path_buf() } else { path.join("vae") };
            let config_path = dir.join("config.json");
            let config = AutoencoderConfig::from_json(read_json(&config_path)?)
                .map_err(|e| unsupported(&config_path, e.to_string()))?;
            let weights = weights_file(&dir, "diffusion_pytorch_model", self.dtype)?;
            let vb = load_weights(&weights, self.dtype, &self.device)?;
            (config, vb, config_path)
        };
        let (want, have) = (self.latent_channels(), config.latent_channels());
        if have != want {
            return Err(unsupported(
                &config_path,
                format!("this autoencoder has {have} latent channels; the model's UNet takes {want}"),
            ));
        }
        if config.downscale() != self.vae_factor() {
            return Err(unsupported(
                &config_path,
                format!(
                    "this autoencoder scales pictures down {}x; the model's scales them {}x",
                    config.downscale(),
                    self.vae_factor()
                ),
            ));
        }
        Autoencoder::new(&config, weights)
            .map_err(|source| PipelineError::Weights { path: config_path, source })
    }

    /// Loads a single-file LDM checkpoint with the shipped CLIP vocabulary.
    fn load_single_file(path: &Path, options: &LoadOptions) -> Result<Self, PipelineError> {
        let c = super::single_file::convert(path, options.dtype, &options.device)?;
        let pad = match c.generation {
            super::single_file::Generation::Sd1 => "<|endoftext|>",
            super::single_file::Generation::Sd2 => "!",
        };
        let tokenizer = ClipTokenizer::openai(pad, c.text.max_position_embeddings)
            .map_err(|reason| unsupported(path, reason))?;
        if tokenizer.vocab_size() != c.text.vocab_size {
            return Err(unsupported(
                path,
                format!(
                    "the text encoder has {} tokens but the CLIP vocabulary has {}; use a diffusers folder with its tokenizer",
                    c.text.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let (text, text_weights) = build_keeping(c.text_weights, |vb| ClipTextModel::new(&c.text, vb))
            .map_err(|e| weights_error(path, e))?;
        let (unet, unet_weights) =
            build_keeping(c.unet_weights, |vb| UNet::new(&c.unet, vb)).map_err(|e| weights_error(path, e))?;
        Ok(Self {
            tokenizer: PromptTokenizer::Clip(Box::new(tokenizer)),
            text,
            unet,
            vae: Autoencoder::new(&AutoencoderConfig::Kl(c.vae), c.vae_weights)
                .map_err(|e| weights_error(path, e))?,
            scheduler: c.scheduler,
            prediction: options.prediction_type.unwrap_or(c.prediction),
            dtype: options.dtype,
            defaults: ModelDefaults::default(),
            conditionings: Mutex::new(LruCache::new(CONDITIONING_CACHE_BYTES)),
            encoded_images: Mutex::new(LruCache::new(CONDITIONING_CACHE_BYTES)),
            base: BaseWeights { unet: unet_weights, text: text_weights, text_patched: false },
            loras: Default::default(),
            preview_decoder: None,
            device: options.device.clone(),
        })
    }

    /// Merges `loras` (file, strength) into the UNet and text encoder in place of those merged
    /// before, as diffusers' `load_lora_weights` + `set_adapters(names, strengths)` do: the
    /// networks are rebuilt from the weights kept at load, so a new strength does not read the
    /// checkpoint again (the same list again does nothing). Returns each file's report (layers
    /// that matched nothing, by name). A file none of whose layers this model has is refused;
    /// on an error the model stays as it was.
    pub fn set_loras(&mut self, loras: &[(Arc<LoraFile>, f64)]) -> Result<Vec<LoraReport>, PipelineError> {
        for (file, strength) in loras {
            if !strength.is_finite() {
                return Err(PipelineError::Invalid {
                    name: "LoRA strength",
                    value: strength.to_string(),
                    reason: format!("{} needs a finite strength", file.path().display()),
                });
            }
        }
        let key: Vec<(PathBuf, u64)> =
            loras.iter().map(|(f, s)| (f.path().to_path_buf(), s.to_bits())).collect();
        if key == self.loras.0 {
            return Ok(self.loras.1.clone());
        }
        let files: Vec<(&LoraFile, f64)> = loras.iter().map(|(f, s)| (f.as_ref(), *s)).collect();
        let mut reports: Vec<LoraReport> = files.iter().map(|(f, _)| LoraReport::new(f)).collect();
        let per_block = self.unet.config().layers_per_block;
        let unet_weights = merge(&self.base.unet, LoraPart::Unet, per_block, &files, &mut reports)?;
        let text_weights = merge(&self.base.text, LoraPart::TextEncoder, per_block, &files, &mut reports)?;
        if let Some(r) = reports.iter().find(|r| r.matched == 0) {
            let first = r.unmatched.first().map(String::as_str).unwrap_or("none");
            return Err(unsupported(
                &r.path,
                format!("none of its layers is in this model (the first: {first}); is this LoRA for another architecture?"),
            ));
        }
        let unet_config = self.unet.config().clone();
        let unet = UNet::new(&unet_config, var_builder(&unet_weights, self.dtype, &self.device))?;
        let text_patched = files.iter().any(|(f, s)| *s != 0.0 && f.patches(LoraPart::TextEncoder));
        if text_patched || self.base.text_patched {
            let config = self.text.config().clone();
            self.text = ClipTextModel::new(&config, var_builder(&text_weights, self.dtype, &self.device))?;
            self.base.text_patched = text_patched;
            if let Ok(mut cache) = self.conditionings.lock() {
                cache.clear();
            }
        }
        self.unet = unet;
        self.loras = (key, reports.clone());
        Ok(reports)
    }

    /// The model's render defaults.
    pub fn defaults(&self) -> &ModelDefaults {
        &self.defaults
    }

    /// The model's scheduler config.
    pub fn scheduler(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// The sampler the model's scheduler config names, or DDIM with a notice for classes we do
    /// not implement (such as PNDM), as the studio's default.
    pub fn default_sampler(&self) -> (SamplerKind, Option<String>) {
        if let Some(kind) = self.defaults.sampler.as_deref().and_then(|s| SamplerKind::parse(s).ok()) {
            return (kind, None);
        }
        let class = self.scheduler.class_name.as_deref().unwrap_or("DDIMScheduler");
        match SamplerKind::from_class_name(class) {
            Some(kind) => (kind, None),
            None => (
                SamplerKind::Ddim,
                Some(format!("{class} is not implemented; using DDIM with the same config")),
            ),
        }
    }

    /// Channels of the latent.
    pub fn latent_channels(&self) -> usize {
        self.unet.config().out_channels
    }

    /// Whether the UNet is an inpainting one: it also takes the mask and the masked picture's
    /// latent as input (`in_channels` = 2 × latent + 1).
    pub fn inpainting(&self) -> bool {
        let c = self.unet.config();
        c.in_channels == 2 * c.out_channels + 1
    }

    /// An inpainting model's extra input: the mask resized to the latent by nearest neighbour and
    /// the latent of the picture with the masked part blanked, as `StableDiffusionInpaintPipeline`
    /// makes them. Without a picture the whole of a blank one is repainted; without a mask, all
    /// of the picture (with a note).
    fn inpainting_input(
        &self,
        init: Option<&InitImage>,
        (lw, lh): (usize, usize),
        notes: &mut Vec<String>,
    ) -> Result<Tensor, PipelineError> {
        let (w, h) = (lw * self.vae_factor(), lh * self.vae_factor());
        let image = match init {
            Some(init) => init.image.to_dtype(DType::F32)?,
            None => Tensor::zeros((1, 3, h, w), DType::F32, &Device::Cpu)?,
        };
        let mask = match init.and_then(|i| i.mask.as_ref()) {
            Some(mask) => mask.pixels.to_dtype(DType::F32)?.to_device(image.device())?,
            None => {
                if init.is_some() {
                    notes.push("an inpainting model without a mask repaints the whole picture".into());
                }
                Tensor::ones((1, 1, h, w), DType::F32, image.device())?
            }
        };
        if mask.dims() != [1, 1, h, w] {
            return Err(PipelineError::Invalid {
                name: "mask size",
                value: format!("{:?}", mask.dims()),
                reason: format!("the picture is {w}x{h}"),
            });
        }
        let keep = (1.0 - &mask)?;
        let masked = image.broadcast_mul(&keep)?;
        let masked_latent = self.encode_image(&masked)?;
        // Nearest neighbour as torch's `interpolate`: source index floor(i · in / out).
        let rows = Tensor::new((0..lh).map(|i| (i * h / lh) as u32).collect::<Vec<_>>(), mask.device())?;
        let cols = Tensor::new((0..lw).map(|j| (j * w / lw) as u32).collect::<Vec<_>>(), mask.device())?;
        let small = mask.index_select(&rows, 2)?.index_select(&cols, 3)?;
        let small = small.to_device(&self.device)?.to_dtype(masked_latent.dtype())?;
        Ok(Tensor::cat(&[&small, &masked_latent], 1)?.to_dtype(self.dtype)?)
    }

    /// Pixels per latent pixel along a side.
    pub fn vae_factor(&self) -> usize {
        self.vae.downscale()
    }

    /// The model's default image size in pixels (square).
    pub fn image_size(&self) -> usize {
        self.unet.config().sample_size * self.vae_factor()
    }

    /// Tokenizes a prompt as the text encoder will see it.
    pub fn tokenize(&self, prompt: &str) -> Tokens {
        self.tokenizer.encode(prompt)
    }

    /// The tokens a render with `regions` conditions on, and each used region's token positions
    /// (by index into `regions`). A phrase found in the prompt (or an earlier region) uses
    /// those tokens; a new one is appended, as far as the encoder's positions reach. Regions
    /// with no phrase or nothing painted, and phrases cut, get a note.
    fn region_tokens(
        &self,
        prompt: &str,
        regions: &[Region],
        notes: &mut Vec<String>,
    ) -> (Tokens, Vec<(usize, Vec<usize>)>) {
        if regions.is_empty() {
            return (self.tokenize(prompt), Vec::new());
        }
        let t = &self.tokenizer;
        let (offset, room) = (t.offset(), t.room());
        let mut content = t.content(prompt);
        let mut text = prompt.to_string();
        let mut columns = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let name = format!("region {} ({:?})", i + 1, region.phrase.trim());
            if region.phrase.trim().is_empty() {
                notes.push(format!("region {}: no phrase; ignored", i + 1));
                continue;
            }
            if region.is_empty() || region.weight == 0.0 {
                notes.push(format!("{name}: nothing painted or weight 0; ignored"));
                continue;
            }
            let phrase = t.content(&region.phrase);
            if let Some(found) = find_phrase(&content, &phrase) {
                columns.push((i, found.into_iter().map(|p| p + offset).collect()));
                continue;
            }
            let start = content.len();
            let kept: Vec<usize> = (start..start + phrase.len()).filter(|&p| p < room).collect();
            if t.encode(&format!("{text} {}", region.phrase)).truncated {
                let what = if kept.is_empty() {
                    "dropped".to_string()
                } else {
                    format!("cut to {} tokens", kept.len())
                };
                notes.push(format!("{name}: {what}; the text encoder reads {room} tokens of text"));
            }
            if kept.is_empty() {
                continue;
            }
            content.extend(&phrase[..kept.len()]);
            text.push(' ');
            text.push_str(&region.phrase);
            columns.push((i, kept.into_iter().map(|p| p + offset).collect()));
        }
        let mut tokens = self.tokenize(&text);
        // The prompt's own cut is reported as ever; phrases cut have their notes.
        tokens.truncated = self.tokenize(prompt).truncated;
        (tokens, columns)
    }

    fn encode(&self, tokens: &Tokens) -> Result<Tensor, PipelineError> {
        if let Some(hit) = self.conditionings.lock().ok().and_then(|mut c| c.get(&tokens.ids)) {
            return Ok(hit);
        }
        let ids = Tensor::from_vec(tokens.ids.clone(), (1, tokens.ids.len()), &self.device)?;
        let encoded = self.text.forward(&ids)?;
        if let Ok(mut cache) = self.conditionings.lock() {
            cache.insert(tokens.ids.clone(), encoded.clone());
        }
        Ok(encoded)
    }

    /// Sets the memory budget of the text-conditioning and encoded-picture caches (half each).
    pub fn set_cache_budget(&self, bytes: usize) {
        if let Ok(mut cache) = self.conditionings.lock() {
            cache.set_budget(bytes / 2);
        }
        if let Ok(mut cache) = self.encoded_images.lock() {
            cache.set_budget(bytes / 2);
        }
    }

    /// How many encoded pictures are cached.
    pub fn cached_images(&self) -> usize {
        self.encoded_images.lock().map_or(0, |c| c.len())
    }

    /// Checks a requested size against the VAE factor.
    fn latent_size(&self, size: Option<(usize, usize)>) -> Result<(usize, usize), PipelineError> {
        let f = self.vae_factor();
        let (w, h) = size.unwrap_or((self.image_size(), self.image_size()));
        for (name, v) in [("width", w), ("height", h)] {
            if v == 0 || v % f != 0 {
                return Err(PipelineError::Invalid {
                    name,
                    value: v.to_string(),
                    reason: format!("must be a positive multiple of {f}, this model's VAE factor"),
                });
            }
        }
        let (lw, lh) = (w / f, h / f);
        self.check_memory(w, h, lw, lh)?;
        Ok((lw, lh))
    }

    /// Refuses a size whose largest tensors would not fit in the memory the system has free, so
    /// a huge size is an error rather than an abort. The self-attention scores at full latent
    /// resolution dominate (batch 2 for guidance, at most 8 heads); activations get a generous
    /// allowance.
    fn check_memory(&self, w: usize, h: usize, lw: usize, lh: usize) -> Result<(), PipelineError> {
        // The system's memory says nothing of a GPU's: there an allocation that fails becomes
        // `OutOfMemory`, naming the size.
        if !self.device.is_cpu() {
            return Ok(());
        }
        let Some(free) = available_memory_bytes() else { return Ok(()) };
        let width = self.unet.config().block_out_channels.first().copied().unwrap_or(320);
        let need = render_bytes(lw, lh, self.dtype.size_in_bytes(), width);
        if need > u128::from(free) {
            let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
            return Err(PipelineError::Invalid {
                name: "size",
                value: format!("{w}x{h}"),
                reason: format!(
                    "a render this size needs about {:.1} GiB and {:.1} GiB of memory is free",
                    gib(need),
                    gib(u128::from(free))
                ),
            });
        }
        Ok(())
    }

    /// Renders `request`; `callback` sees every step and can stop the run (then `None`). A GPU
    /// that runs out of memory is an error naming the size.
    pub fn render(
        &self,
        request: &Request,
        callback: &mut StepCallback<'_>,
    ) -> Result<Option<Rendered>, PipelineError> {
        let size = request.size.unwrap_or((self.image_size(), self.image_size()));
        self.naming_memory(size, self.render_on_device(request, callback))
    }

    /// `result`, its error naming `size` where the GPU ran out of memory.
    fn naming_memory<T>(
        &self,
        size: (usize, usize),
        result: Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        let gpu = (!self.device.is_cpu()).then(|| super::device::name(&self.device));
        result.map_err(|e| e.naming_memory(gpu, size))
    }

    fn render_on_device(
        &self,
        request: &Request,
        callback: &mut StepCallback<'_>,
    ) -> Result<Option<Rendered>, PipelineError> {
        let (lw, lh) = self.latent_size(request.size)?;
        let mut notes = Vec::new();
        let (tokens, columns) = self.region_tokens(&request.prompt, &request.regions, &mut notes);
        let mut cond = self.encode(&tokens)?;
        if let Some((other, t)) = &request.prompt_to {
            cond = lerp(&cond, &self.encode(&self.tokenize(other))?, *t)?;
        }
        let uncond = self.encode(&self.tokenize(&request.negative))?;
        let sampler = request.sampler.build(&self.scheduler, request.steps, &request.options)?;
        let mut painted = None;
        if !columns.is_empty() {
            let columns: Vec<(&Region, Vec<usize>)> =
                columns.into_iter().map(|(i, p)| (&request.regions[i], p)).collect();
            let levels = self.unet.config().block_out_channels.len();
            let maps = RegionMaps::new(&columns, cond.dim(1)?, (lw, lh), levels, self.dtype, &self.device)?;
            let sigmas = crate::core::NoiseSchedule::from_config(&self.scheduler)?.sigmas_f32();
            painted = Some(PaintedWords { maps: Arc::new(maps), cond: cond.clone(), sigmas });
        }
        let (mut network, conditioning) = self.guided(cond, uncond, request.guidance)?;
        network.regions = painted;
        if self.inpainting() {
            network.extra = Some(self.inpainting_input(request.init_image.as_ref(), (lw, lh), &mut notes)?);
        }
        let mut denoiser = ModelDenoiser::new(&mut network, self.prediction, conditioning)?;
        let shape = [1, self.latent_channels(), lh, lw];
        let noise = match &request.init_latent {
            Some(latent) if latent.dims() != shape => {
                return Err(PipelineError::Invalid {
                    name: "init latent",
                    value: format!("{:?}", latent.dims()),
                    reason: format!("this model and size need {shape:?}"),
                })
            }
            Some(latent) => latent.to_device(&self.device)?.to_dtype(self.dtype)?,
            None => SeededNoise::new(request.seed).tensor(&shape, self.dtype, &self.device)?,
        };
        let mut step_noise = SeededNoise::new(request.seed.wrapping_add(1));
        let mut ctx =
            SampleContext { denoiser: &mut denoiser, noise: &mut step_noise, callback, inpaint: None };
        let outcome = match &request.init_image {
            None => sampler.sample(&noise, &mut ctx)?,
            // An inpainting model at full strength starts from the noise alone, as diffusers'
            // inpainting pipeline does (its picture comes in through the extra channels).
            Some(init) if self.inpainting() && init.strength == 1.0 => sampler.sample(&noise, &mut ctx)?,
            Some(init) => {
                let (_, _, ih, iw) = init.image.dims4()?;
                if (iw, ih) != (lw * self.vae_factor(), lh * self.vae_factor()) {
                    return Err(PipelineError::Invalid {
                        name: "init image size",
                        value: format!("{iw}x{ih}"),
                        reason: format!(
                            "the render is {}x{}",
                            lw * self.vae_factor(),
                            lh * self.vae_factor()
                        ),
                    });
                }
                let guide = self.encode_image(&init.image)?;
                // An inpainting model sees the mask; the known part is not blended back.
                let mask = if self.inpainting() { None } else { init.mask.as_ref().map(|m| &m.latent) };
                let edit = SdEdit { guide: &guide, noise: &noise, strength: init.strength, mask };
                sdedit(sampler.as_ref(), &mut ctx, &edit)?
            }
        };
        let Some(z) = outcome.finished() else {
            return Ok(None);
        };
        let rgb = self.decode(&z)?;
        Ok(Some(Rendered {
            rgb,
            width: lw * self.vae_factor(),
            height: lh * self.vae_factor(),
            latent: z,
            unknown_words: tokens.unknown,
            truncated: tokens.truncated,
            notes,
        }))
    }

    /// Encodes a picture `[1, 3, H, W]` in [-1, 1] to a scaled latent (the distribution's mean).
    pub fn encode_image(&self, image: &Tensor) -> Result<Tensor, PipelineError> {
        let (_, _, h, w) = image.dims4()?;
        self.naming_memory((w, h), self.encode_image_on_device(image))
    }

    fn encode_image_on_device(&self, image: &Tensor) -> Result<Tensor, PipelineError> {
        use std::hash::{Hash, Hasher};
        let (_, _, h, w) = image.dims4()?;
        self.latent_size(Some((w, h)))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        image.dims().hash(&mut hasher);
        for v in image.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
            v.to_bits().hash(&mut hasher);
        }
        let key = hasher.finish();
        if let Some(hit) = self.encoded_images.lock().ok().and_then(|mut c| c.get(&key)) {
            return Ok(hit);
        }
        let image = image.to_device(&self.device)?.to_dtype(self.vae.dtype())?;
        let encoded = self.vae.encode_scaled(&image)?.to_dtype(self.dtype)?;
        if let Ok(mut cache) = self.encoded_images.lock() {
            cache.insert(key, encoded.clone());
        }
        Ok(encoded)
    }

    /// DDIM inversion of a scaled latent with the model's schedule: the unit-variance noise that
    /// DDIM (eta = 0) with the same prompt, guidance and steps maps back to it.
    pub fn invert(
        &self,
        latent: &Tensor,
        prompt: &str,
        guidance: Guidance,
        steps: usize,
        callback: &mut StepCallback<'_>,
    ) -> Result<Option<Tensor>, PipelineError> {
        let f = self.vae_factor();
        let size = (latent.dim(D::Minus1)? * f, latent.dim(D::Minus2)? * f);
        self.naming_memory(size, self.invert_on_device(latent, prompt, guidance, steps, callback))
    }

    fn invert_on_device(
        &self,
        latent: &Tensor,
        prompt: &str,
        guidance: Guidance,
        steps: usize,
        callback: &mut StepCallback<'_>,
    ) -> Result<Option<Tensor>, PipelineError> {
        if self.inpainting() {
            return Err(PipelineError::Invalid {
                name: "model",
                value: "an inpainting UNet".into(),
                reason: "DDIM inversion needs an ordinary model (one without mask inputs)".into(),
            });
        }
        let cond = self.encode(&self.tokenize(prompt))?;
        let uncond = self.encode(&self.tokenize(""))?;
        let inverse = DdimInverse::new(&self.scheduler, steps)?;
        let (mut network, conditioning) = self.guided(cond, uncond, guidance)?;
        let mut denoiser = ModelDenoiser::new(&mut network, self.prediction, conditioning)?;
        Ok(inverse.invert(latent, &mut denoiser, callback)?.finished())
    }

    /// The network and conditioning for `guidance`: classifier-free guidance for ordinary models;
    /// for a distilled (LCM) model one pass on the prompt alone with the scale as the network's
    /// guidance embedding, as diffusers' `LatentConsistencyModelPipeline` runs it.
    fn guided(
        &self,
        cond: Tensor,
        uncond: Tensor,
        guidance: Guidance,
    ) -> Result<(UNetNetwork<'_>, Conditioning), PipelineError> {
        let Some(dim) = self.unet.config().time_cond_proj_dim else {
            let network = UNetNetwork { unet: &self.unet, guidance: None, extra: None, regions: None };
            return Ok((network, Conditioning::Guided { cond, uncond, guidance }));
        };
        guidance.validate()?;
        if let Some((lo, hi)) = self.defaults.guidance_range {
            if !(lo..=hi).contains(&guidance.scale) {
                return Err(PipelineError::Invalid {
                    name: "guidance",
                    value: guidance.scale.to_string(),
                    reason: format!("this model was distilled for guidance {lo} to {hi}"),
                });
            }
        }
        let row = guidance_embedding(&[guidance.scale], dim, &self.device)?.to_dtype(self.dtype)?;
        let network = UNetNetwork { unet: &self.unet, guidance: Some(row), extra: None, regions: None };
        Ok((network, Conditioning::Guided { cond, uncond, guidance: Guidance::none() }))
    }

    /// `scale` moved into the guidance range a distilled model was trained on (the studio's
    /// controls stop there; the command line refuses instead); any scale for other models.
    pub fn clamp_guidance(&self, scale: f64) -> f64 {
        match self.defaults.guidance_range {
            Some((lo, hi)) if !scale.is_nan() => scale.clamp(lo, hi),
            _ => scale,
        }
    }

    /// Whether the UNet takes the guidance scale as an input (a distilled LCM model): one network
    /// evaluation per step whatever the scale.
    pub fn guidance_embedded(&self) -> bool {
        self.unet.config().time_cond_proj_dim.is_some()
    }

    /// Decodes a scaled latent to 8-bit RGB, row-major.
    pub fn decode(&self, latent: &Tensor) -> Result<Vec<u8>, PipelineError> {
        let image = self.vae.decode_scaled(latent)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        // [-1, 1] → [0, 1] → round(x · 255), as diffusers' `numpy_to_pil`.
        let unit = ((image.squeeze(0)?.permute((1, 2, 0))? + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
        Ok((unit * 255.0)?.round()?.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?)
    }
}

/// Free memory (`MemAvailable` in /proc/meminfo), where the system reports it.
fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The bytes a render of an `lw`×`lh` latent needs by [`Pipeline::check_memory`]'s estimate:
/// guided self-attention scores at full latent resolution (batch 2, at most 8 heads) plus an
/// allowance for activations of a `width`-channel first level. Saturates instead of
/// overflowing, so a size from a hostile config is refused rather than a panic (found by the
/// fuzz campaign: a huge `sample_size` overflowed `lw * lh`).
fn render_bytes(lw: usize, lh: usize, elem: usize, width: usize) -> u128 {
    let tokens = (lw as u128).saturating_mul(lh as u128);
    let (elem, width) = (elem as u128, width as u128);
    tokens
        .saturating_mul(tokens)
        .saturating_mul(16 * elem)
        .saturating_add(tokens.saturating_mul(128 * width * elem))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gpu_out_of_memory_names_the_size() {
        let driver = || {
            super::PipelineError::Tensor(candle_core::Error::Msg(
                "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
            ))
        };
        let named = driver().naming_memory(Some("CUDA GPU".into()), (1024, 768)).to_string();
        assert!(named.starts_with("the CUDA GPU ran out of memory rendering 1024x768"), "{named}");
        assert!(named.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{named}");
        // On the CPU, or for another failure, the error stays as it was.
        assert!(!driver().naming_memory(None, (8, 8)).to_string().contains("rendering"));
        let other = super::PipelineError::Tensor(candle_core::Error::Msg("shape mismatch".into()));
        assert_eq!(other.naming_memory(Some("CUDA GPU".into()), (8, 8)).to_string(), "shape mismatch");
    }

    use super::render_bytes;

    #[test]
    fn the_memory_estimate_saturates_for_a_huge_latent_instead_of_overflowing() {
        // 64x64 latent, f32, 320 channels: 16·4·4096² + 128·320·4·4096 bytes, by hand.
        assert_eq!(render_bytes(64, 64, 4, 320), 16 * 4 * 4096 * 4096 + 128 * 320 * 4 * 4096);
        assert_eq!(render_bytes(usize::MAX, usize::MAX, 4, 320), u128::MAX);
        assert_eq!(render_bytes(1 << 40, 1 << 40, 2, 48), u128::MAX);
    }
}
