//! `latent-studio train`: trains the built-in model in stages — the autoencoder on scene images,
//! the UNet and text encoder on its latents (keeping a moving average of their weights), then on
//! stroke pictures of the scenes as well (so SDEdit keeps what was painted), then the decoder
//! alone against a discriminator — writing a diffusers-layout model folder with checkpoints, a
//! loss log, and a state file so an interrupted run resumes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::builtin::{
    model_defaults, scheduler_config, text_config, unet_config, vae_config, IMAGE_SIZE, MAX_TOKENS,
};
use super::discriminator::{discriminator_loss, generator_loss, PatchDiscriminator};
use super::ema::Ema;
use super::words::WordsBatch;
use crate::core::NoiseSchedule;
use crate::dataset::scenes::scene;
use crate::dataset::vocabulary::WORDS;
use crate::models::autoencoder::{AutoencoderConfig, TINY_CLASS};
use crate::models::clip::ClipTextModel;
use crate::models::pipeline::DEFAULTS_FILE;
use crate::models::tiny_vae::TinyVae;
use crate::models::tokenizer::{WordTokenizer, PAD_ID};
use crate::models::unet::UNet;

/// What can stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing the output folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A tensor operation or checkpoint load failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The state file is unreadable.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: serde_json::Error,
    },
    /// The schedule could not be built.
    #[error(transparent)]
    Core(#[from] crate::core::CoreError),
}

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The model folder to write (and resume from).
    pub out: PathBuf,
    /// Continue from the folder's checkpoint instead of starting over.
    pub resume: bool,
    /// Autoencoder steps.
    pub vae_steps: usize,
    /// Peak learning rate of the autoencoder.
    pub vae_learning_rate: f64,
    /// UNet and text-encoder steps.
    pub unet_steps: usize,
    /// Steps of the stroke stage, after the UNet's: half of each batch are stroke pictures of
    /// their scenes, noised, with the scene as the answer (see [`DiffusionStage::Strokes`]).
    pub stroke_steps: usize,
    /// Peak learning rate of the stroke stage (and of the words stage).
    pub stroke_learning_rate: f64,
    /// Steps of the words stage, after the stroke stage: the stroke stage's batches, with
    /// paint with words' bias on the phrase of the sun, moon or water where it is in the
    /// scenes that have one (see [`super::words`]).
    pub words_steps: usize,
    /// Decoder fine-tuning steps, run last: the encoder (and so the latent space the UNet learnt)
    /// stays frozen while the decoder learns to draw sharper pictures from it.
    pub decoder_steps: usize,
    /// Peak learning rate of the decoder fine-tuning.
    pub decoder_learning_rate: f64,
    /// Weight of the adversarial loss in the decoder fine-tuning, relative to the pixel losses'
    /// gradient at the decoder's last layer (0: pixel losses only).
    pub gan_weight: f64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Share of examples trained without their caption, for classifier-free guidance.
    pub uncond_share: f64,
    /// When training ends, rewrite the weights in f16 (the form the studio ships; a later
    /// `--resume` reads them back as f32).
    pub half: bool,
}

/// Where a run stands; saved beside the checkpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainState {
    /// Autoencoder steps done.
    pub vae_step: usize,
    /// UNet steps done.
    pub unet_step: usize,
    /// Stroke-stage steps done.
    pub stroke_step: usize,
    /// Words-stage steps done.
    pub words_step: usize,
    /// Decoder fine-tuning steps done.
    pub decoder_step: usize,
    /// 1 / std of the latents, measured when the UNet stage starts.
    pub scaling_factor: Option<f64>,
}

/// The two stages that train the UNet and the text encoder, one after the other with one moving
/// average of their weights.
#[derive(Debug, Clone, Copy)]
enum DiffusionStage {
    /// Denoising noised scenes: the model learns the scenes.
    Scenes,
    /// Half of each batch is a stroke picture of its scene (the scene's mean colours in blocks,
    /// a few palette colours), noised to t in [`STROKE_T_MIN`, [`STROKE_T_MAX`]), with the noise
    /// that makes the scene the clean answer. SDEdit hands the model exactly such a noised
    /// painting; after the first stage alone it answered with any scene of the caption, moving or
    /// dropping what was painted (a lake band kept 4% of its contrast at strength 0.5). Half of the
    /// stroke pictures carry another scene's caption ([`caption_order`]).
    Strokes,
    /// The stroke stage's batches, and in the examples whose scene has a sun, moon or water (and
    /// whose caption is their own), paint with words' bias on that phrase's tokens where the
    /// thing is ([`super::words::lesson`]).
    Words,
}

impl DiffusionStage {
    fn name(self) -> &'static str {
        match self {
            Self::Scenes => "unet",
            Self::Strokes => "strokes",
            Self::Words => "words",
        }
    }

    /// Steps the stage takes and its peak learning rate.
    fn plan(self, opts: &TrainOptions) -> (usize, f64) {
        match self {
            Self::Scenes => (opts.unet_steps, opts.learning_rate),
            Self::Strokes => (opts.stroke_steps, opts.stroke_learning_rate),
            Self::Words => (opts.words_steps, opts.stroke_learning_rate),
        }
    }

    /// The state's count of steps done in this stage.
    fn done(self, state: &mut TrainState) -> &mut usize {
        match self {
            Self::Scenes => &mut state.unet_step,
            Self::Strokes => &mut state.stroke_step,
            Self::Words => &mut state.words_step,
        }
    }

    /// How many of a batch of `batch` are stroke pictures.
    fn stroke_examples(self, batch: usize) -> usize {
        match self {
            Self::Scenes => 0,
            Self::Strokes | Self::Words => batch / 2,
        }
    }

    /// The first training seed of the stage (stages see different scenes).
    fn seed_base(self) -> u64 {
        match self {
            Self::Scenes => TRAIN_SEED_BASE + (1 << 24),
            Self::Strokes => TRAIN_SEED_BASE + (3 << 24),
            Self::Words => TRAIN_SEED_BASE + (7 << 24),
        }
    }
}

/// The lowest timestep a stroke picture is noised to in the stroke stage (SDEdit strength 0.25):
/// below it so little noise covers the strokes that their flat edges are what the picture shows.
pub(super) const STROKE_T_MIN: usize = 250;

/// The highest timestep a stroke picture is noised to (SDEdit strength 0.75, the studio's
/// default). Above it a noised painting looks like noise alone, so the strokes-over-caption
/// lesson of [`caption_order`] would teach text-to-image to ignore its caption: trained up to
/// t = 999 the model's prompt adherence fell from 95.8% to 90.0% (time of day 71%).
pub(super) const STROKE_T_MAX: usize = 750;

/// Which example's caption each of a batch of `batch` is trained with, when its first `strokes`
/// are stroke pictures: the first half of those take the caption of a scene from the rest of
/// the batch, so their strokes and caption disagree, and the answer is still the scene the
/// strokes were painted from. Paint that contradicts the prompt (a night-blue sky on "sunset")
/// is then kept, as SDEdit promises, rather than painted over with the caption's colours; with
/// captions that always agreed the model learnt to correct the paint toward the caption.
pub(super) fn caption_order(batch: usize, strokes: usize, device: &Device) -> candle_core::Result<Tensor> {
    let order: Vec<u32> = (0..batch)
        .map(|i| if i < strokes / 2 && strokes + i < batch { strokes + i } else { i } as u32)
        .collect();
    Tensor::from_vec(order, batch, device)
}

/// Stroke pictures of the first `count` of `images` (`[B, 3, H, W]` in [-1, 1]): blocks of 2, 4,
/// 8 or 16 pixels in 3 to 8 colours, drawn from `seed`, the way a person blocks in a scene.
pub(super) fn stroke_pictures(images: &Tensor, count: usize, seed: u64) -> Result<Tensor, TrainError> {
    use rayon::prelude::*;
    let (_, _, h, w) = images.dims4()?;
    let hwc = ((images.narrow(0, 0, count)?.permute((0, 2, 3, 1))? + 1.0)? * 0.5)?.contiguous()?;
    let pixels: Vec<Vec<f32>> = (0..count)
        .map(|i| hwc.get(i)?.flatten_all()?.to_vec1::<f32>())
        .collect::<candle_core::Result<_>>()?;
    let painted: Vec<f32> = pixels
        .par_iter()
        .enumerate()
        .map(|(i, image)| {
            let pick = (seed + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let cell = [2, 4, 8, 16][(pick % 4) as usize];
            let colours = 3 + (pick / 4 % 6) as usize;
            crate::evaluation::strokes::strokes(image, w.min(h), cell, colours)
        })
        .flatten()
        .map(|v| v * 2.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(painted, (count, h, w, 3), images.device())?.permute((0, 3, 1, 2))?.contiguous()?)
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    /// `vae`, `unet`, `strokes` or `decoder`.
    pub stage: &'static str,
    /// Steps done in this stage.
    pub step: usize,
    /// Steps this stage takes.
    pub total: usize,
    /// Smoothed loss.
    pub loss: f64,
    /// Seconds per step, smoothed.
    pub secs_per_step: f64,
}

pub(super) const STATE_FILE: &str = "train_state.json";
pub(super) const VAE_WEIGHTS: &str = "vae/diffusion_pytorch_model.safetensors";
pub(super) const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
pub(super) const TEXT_WEIGHTS: &str = "text_encoder/model.safetensors";
/// The UNet's and text encoder's own weights while training; the model folder's weights are
/// their exponential moving average, which samples better.
pub(super) const UNET_RAW: &str = "train/unet.safetensors";
const TEXT_RAW: &str = "train/text_encoder.safetensors";
/// The decoder's adversary, kept to resume its fine-tuning.
const DISCRIMINATOR: &str = "train/discriminator.safetensors";
/// Largest standard deviation of the noise added to latents before decoding while the
/// autoencoder trains: the decoder learns to draw from slightly-off latents, as a UNet's are.
const LATENT_NOISE: f32 = 0.1;
/// Weight of the loss on neighbouring pixels' differences (edges) beside the per-pixel one. Both
/// are squared errors: an L1 loss on the differences is least for a flat picture wherever edges
/// are sparse, and with it the autoencoder stalled at the mean picture (MSE 0.30 after 350 steps;
/// squared errors: 0.07 after 100).
const EDGE_WEIGHT: f64 = 0.5;
/// Weight of the latents' mean square in the autoencoder's loss: keeps them from growing into
/// the decoder's clamp.
const LATENT_PENALTY: f64 = 1e-3;
/// Seeds of training scenes start here; evaluation uses seeds below it.
pub(super) const TRAIN_SEED_BASE: u64 = 1 << 32;
/// The sheet of scenes and their decodings written at each autoencoder checkpoint.
const RECONSTRUCTIONS: &str = "reconstructions.png";
/// How many scenes it shows (seeds 0 and up, below the training seeds).
const RECONSTRUCTION_COUNT: usize = 8;

pub(super) fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, TrainError> {
    r.map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

pub(super) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    if let Some(dir) = path.parent() {
        io(dir, std::fs::create_dir_all(dir))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| TrainError::State { path: path.into(), source })?;
    let tmp = path.with_extension("json.tmp");
    io(&tmp, std::fs::write(&tmp, text))?;
    io(path, std::fs::rename(&tmp, path))
}

pub(super) fn save(map: &VarMap, path: &Path) -> Result<(), TrainError> {
    save_as(map, path, DType::F32)
}

/// Writes a map's tensors in `dtype` (f32 checkpoints while training, f16 to ship).
pub(super) fn save_as(map: &VarMap, path: &Path, dtype: DType) -> Result<(), TrainError> {
    if let Some(dir) = path.parent() {
        io(dir, std::fs::create_dir_all(dir))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    let tensors = map
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the weight map's lock is poisoned".into()))?
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>, candle_core::Error>>()?;
    candle_core::safetensors::save(&tensors, &tmp)?;
    io(path, std::fs::rename(&tmp, path))
}

/// Loads a checkpoint into a map whatever its float type (f32 checkpoints, f16 shipped weights).
fn load_into(map: &VarMap, path: &Path) -> Result<(), TrainError> {
    load_into_except(map, path, "")
}

/// [`load_into`], leaving the variables whose names start with `fresh` (non-empty) as they are
/// when the file lacks them: layers a distilled network adds to its teacher's.
pub(super) fn load_into_except(map: &VarMap, path: &Path, fresh: &str) -> Result<(), TrainError> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let data =
        map.data().lock().map_err(|_| candle_core::Error::Msg("the weight map's lock is poisoned".into()))?;
    for (name, var) in data.iter() {
        if !fresh.is_empty() && name.starts_with(fresh) && !tensors.contains_key(name) {
            continue;
        }
        let Some(tensor) = tensors.get(name) else {
            return Err(candle_core::Error::Msg(format!("{}: no tensor `{name}`", path.display())).into());
        };
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)
            .map_err(|e| candle_core::Error::Msg(format!("{}: tensor `{name}`: {e}", path.display())))?;
    }
    Ok(())
}

/// The word tokenizer over the scene vocabulary.
pub fn builtin_tokenizer() -> WordTokenizer {
    WordTokenizer::new(WORDS.iter().copied(), MAX_TOKENS)
}

/// Writes every config file of the model folder (weights come with the checkpoints).
fn write_configs(out: &Path, tokenizer: &WordTokenizer, scaling_factor: f64) -> Result<(), TrainError> {
    let mut vae = AutoencoderConfig::Tiny(vae_config());
    vae.set_scaling_factor(scaling_factor);
    let vae_json =
        vae.to_json().map_err(|source| TrainError::State { path: out.join("vae/config.json"), source })?;
    write_json(&out.join("vae/config.json"), &vae_json)?;
    write_json(&out.join("unet/config.json"), &unet_config())?;
    write_json(&out.join("text_encoder/config.json"), &text_config(tokenizer.vocab_size()))?;
    write_json(&out.join("tokenizer/tokenizer.json"), &tokenizer.to_json())?;
    write_json(&out.join("scheduler/scheduler_config.json"), &scheduler_config())?;
    write_json(&out.join(DEFAULTS_FILE), &model_defaults())?;
    write_json(
        &out.join("model_index.json"),
        &serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", TINY_CLASS],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["latent-studio", "WordTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"],
        }),
    )
}

/// A batch of scene images `[B, 3, 128, 128]` in [-1, 1] and their token ids `[B, tokens]`.
pub(super) fn batch(
    first_seed: u64,
    size: usize,
    tokenizer: &WordTokenizer,
    device: &Device,
) -> Result<(Tensor, Tensor), TrainError> {
    use rayon::prelude::*;
    // Scenes are drawn in parallel: on many cores their generation would otherwise rival the step.
    let scenes: Vec<_> =
        (0..size as u64).into_par_iter().map(|i| scene(first_seed + i, IMAGE_SIZE)).collect();
    let mut pixels = Vec::with_capacity(size * 3 * IMAGE_SIZE * IMAGE_SIZE);
    let mut ids = Vec::with_capacity(size * MAX_TOKENS);
    for s in &scenes {
        // HWC in [0, 1] → CHW in [-1, 1].
        for c in 0..3 {
            pixels.extend(s.image.iter().skip(c).step_by(3).map(|v| v * 2.0 - 1.0));
        }
        ids.extend(tokenizer.encode(&s.caption).ids);
    }
    let images = Tensor::from_vec(pixels, (size, 3, IMAGE_SIZE, IMAGE_SIZE), device)?;
    let ids = Tensor::from_vec(ids, (size, MAX_TOKENS), device)?;
    Ok((images, ids))
}

/// `inputs` noised to the cumulative alphas `a` (`[B, 1, 1, 1]`) with `noise`, and the noise the
/// UNet should predict there: the one that makes `targets` the clean latent, `(x_t − √a·target) /
/// √(1 − a)`. Where the input is the target that is `noise` itself; for a stroke picture it turns
/// the predicted clean latent into the scene's, so denoising a noised painting draws the scene it
/// simplifies.
fn noised_and_target(
    inputs: &Tensor,
    targets: &Tensor,
    noise: &Tensor,
    a: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let x_t = (inputs.broadcast_mul(&a.sqrt()?)? + noise.broadcast_mul(&(1.0 - a)?.sqrt()?)?)?;
    let target = (noise + (inputs - targets)?.broadcast_mul(&(a / (1.0 - a)?)?.sqrt()?)?)?;
    Ok((x_t, target))
}

/// Learning rate: linear warm-up over 100 steps, then cosine decay to a tenth at the end. A run
/// resumed mid-stage (at step `first` > 0) starts with fresh optimizer moments, whose first updates
/// are as large as the rate itself, so it warms up again over 50 steps.
pub(super) fn learning_rate(peak: f64, step: usize, total: usize, first: usize) -> f64 {
    let warm = 100usize.min(total / 4).max(1);
    let rate = if step < warm {
        peak * (step + 1) as f64 / warm as f64
    } else {
        let progress = (step - warm) as f64 / (total - warm).max(1) as f64;
        peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    };
    if first > 0 {
        rate * ((step.saturating_sub(first) + 1) as f64 / 50.0).min(1.0)
    } else {
        rate
    }
}

/// Trains (or resumes) the built-in model into `opts.out`.
pub fn train(opts: &TrainOptions, report: &mut dyn FnMut(&Progress)) -> Result<TrainState, TrainError> {
    let device = Device::Cpu;
    let tokenizer = builtin_tokenizer();
    let state_path = opts.out.join(STATE_FILE);
    let mut state = if opts.resume && state_path.exists() {
        let text = io(&state_path, std::fs::read_to_string(&state_path))?;
        serde_json::from_str(&text)
            .map_err(|source| TrainError::State { path: state_path.clone(), source })?
    } else {
        TrainState::default()
    };
    write_configs(&opts.out, &tokenizer, state.scaling_factor.unwrap_or(1.0))?;

    let mut vae_map = VarMap::new();
    let vae = TinyVae::new(&vae_config(), VarBuilder::from_varmap(&vae_map, DType::F32, &device))?;
    let mut unet_map = VarMap::new();
    let unet = UNet::new(&unet_config(), VarBuilder::from_varmap(&unet_map, DType::F32, &device))?;
    let mut text_map = VarMap::new();
    let text = ClipTextModel::new(
        &text_config(tokenizer.vocab_size()),
        VarBuilder::from_varmap(&text_map, DType::F32, &device),
    )?;
    if !opts.resume {
        zero_residual_branches(&vae_map)?;
    } else {
        // The raw weights where training left them, else (a folder from before they were kept)
        // the model's own.
        let parts = [
            (&mut vae_map, VAE_WEIGHTS, VAE_WEIGHTS),
            (&mut unet_map, UNET_RAW, UNET_WEIGHTS),
            (&mut text_map, TEXT_RAW, TEXT_WEIGHTS),
        ];
        for (map, raw, model) in parts {
            let path = [raw, model].iter().map(|rel| opts.out.join(rel)).find(|p| p.exists());
            if let Some(path) = path {
                load_into(map, &path)?;
            }
        }
    }

    let log_path = opts.out.join("loss.csv");
    let mut log = io(&log_path, std::fs::OpenOptions::new().create(true).append(true).open(&log_path))?;

    if state.vae_step < opts.vae_steps {
        let mut opt = AdamW::new(
            vae_map.all_vars(),
            ParamsAdamW { lr: opts.vae_learning_rate, weight_decay: 0.0, ..Default::default() },
        )?;
        let mut meter = Meter::default();
        let vae_first = state.vae_step;
        while state.vae_step < opts.vae_steps {
            let t0 = Instant::now();
            let seed = TRAIN_SEED_BASE + (state.vae_step * opts.batch) as u64;
            let (images, _) = batch(seed, opts.batch, &tokenizer, &device)?;
            let (z, recon) = round_trip(&vae, &images, true)?;
            let (loss, rec) = pixel_loss(&recon, &images)?;
            // A small penalty keeps the latents inside the decoder's clamp.
            let loss = (loss + (z.sqr()?.mean_all()? * LATENT_PENALTY)?)?;
            opt.set_learning_rate(learning_rate(
                opts.vae_learning_rate,
                state.vae_step,
                opts.vae_steps,
                vae_first,
            ));
            opt.backward_step(&loss)?;
            state.vae_step += 1;
            let value = rec;
            meter.update(value, t0.elapsed().as_secs_f64());
            io(&log_path, writeln!(log, "vae,{},{value}", state.vae_step))?;
            report(&Progress {
                stage: "vae",
                step: state.vae_step,
                total: opts.vae_steps,
                loss: meter.loss,
                secs_per_step: meter.secs,
            });
            if state.vae_step % opts.checkpoint_every == 0 || state.vae_step == opts.vae_steps {
                save(&vae_map, &opts.out.join(VAE_WEIGHTS))?;
                write_reconstructions(&vae, &opts.out)?;
                write_json(&state_path, &state)?;
            }
        }
    }

    let schedule = NoiseSchedule::from_config(&scheduler_config())?;
    let alphas: Vec<f32> = schedule.alphas_cumprod().iter().map(|&a| a as f32).collect();
    let alphas = Tensor::from_vec(alphas, schedule.train_steps(), &device)?;
    let scaling = match state.scaling_factor {
        Some(s) => s,
        None => {
            let (images, _) = batch(TRAIN_SEED_BASE, 64, &tokenizer, &device)?;
            let latents = vae.encode(&images)?;
            let std = f64::from(latents.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()?);
            let s = 1.0 / std.max(1e-6);
            state.scaling_factor = Some(s);
            write_configs(&opts.out, &tokenizer, s)?;
            s
        }
    };
    let averaged = state.unet_step + state.stroke_step + state.words_step;
    let mut ema_unet = Ema::new(&unet_map, averaged)?;
    let mut ema_text = Ema::new(&text_map, averaged)?;
    if opts.resume && opts.out.join(UNET_RAW).exists() {
        ema_unet.load(&opts.out.join(UNET_WEIGHTS))?;
        ema_text.load(&opts.out.join(TEXT_WEIGHTS))?;
    }
    let pad = Tensor::full(PAD_ID, (1, MAX_TOKENS), &device)?;
    for stage in [DiffusionStage::Scenes, DiffusionStage::Strokes, DiffusionStage::Words] {
        let (steps, peak) = stage.plan(opts);
        if *stage.done(&mut state) >= steps {
            continue;
        }
        let mut vars: Vec<Var> = unet_map.all_vars();
        vars.extend(text_map.all_vars());
        let mut opt = AdamW::new(vars, ParamsAdamW { lr: peak, weight_decay: 0.0, ..Default::default() })?;
        let mut meter = Meter::default();
        let first = *stage.done(&mut state);
        let b = opts.batch;
        let strokes = stage.stroke_examples(b);
        while *stage.done(&mut state) < steps {
            let t0 = Instant::now();
            let step = *stage.done(&mut state);
            let seed = stage.seed_base() + (step * b) as u64;
            let (images, ids) = batch(seed, b, &tokenizer, &device)?;
            let ids =
                if strokes > 0 { ids.index_select(&caption_order(b, strokes, &device)?, 0)? } else { ids };
            // Drop the caption of a share of examples so the model also learns the unconditional case.
            let keep = Tensor::rand(0f32, 1.0, b, &device)?.ge(opts.uncond_share as f32)?.unsqueeze(1)?;
            let ids = keep.broadcast_as(ids.shape())?.where_cond(&ids, &pad.broadcast_as(ids.shape())?)?;
            let targets = (vae.encode(&images)?.detach() * scaling)?;
            let inputs = if strokes > 0 {
                // Only the stroke pictures need encoding: the rest are their own targets.
                let painted = (vae.encode(&stroke_pictures(&images, strokes, seed)?)?.detach() * scaling)?;
                Tensor::cat(&[painted, targets.narrow(0, strokes, b - strokes)?], 0)?
            } else {
                targets.clone()
            };
            // Stroke examples are noised between STROKE_T_MIN (below it the strokes' own flat
            // edges would be the right answer) and STROKE_T_MAX; the scenes over the whole span.
            let stroke = |i: usize, v: usize, other: usize| if i < strokes { v } else { other } as f32;
            let last = schedule.train_steps() - 1;
            let lowest: Vec<f32> = (0..b).map(|i| stroke(i, STROKE_T_MIN, 0)).collect();
            let span: Vec<f32> =
                (0..b).map(|i| stroke(i, STROKE_T_MAX - STROKE_T_MIN, schedule.train_steps())).collect();
            let (lowest, span) = (Tensor::from_vec(lowest, b, &device)?, Tensor::from_vec(span, b, &device)?);
            let t = (Tensor::rand(0f32, 1.0, b, &device)? * span)?
                .add(&lowest)?
                .floor()?
                .clamp(0f32, last as f32)?;
            let a = alphas.index_select(&t.to_dtype(DType::U32)?, 0)?.reshape((b, 1, 1, 1))?;
            let noise = inputs.randn_like(0.0, 1.0)?;
            let (x_t, target) = noised_and_target(&inputs, &targets, &noise, &a)?;
            let (ids, bias) = match stage {
                DiffusionStage::Words => {
                    let lessons = WordsBatch::new(&ids, seed, strokes / 2, &tokenizer)?;
                    let alphas: Vec<f64> =
                        a.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
                    let bias = lessons.bias(&alphas, false)?;
                    (lessons.ids, bias)
                }
                _ => (ids, None),
            };
            let context = text.forward(&ids)?;
            let pred = unet.forward_with_regions(&x_t, &t, &context, None, bias.as_ref())?;
            let loss = (&pred - &target)?.sqr()?.mean(D::Minus1)?.mean_all()?;
            opt.set_learning_rate(learning_rate(peak, step, steps, first));
            opt.backward_step(&loss)?;
            ema_unet.update()?;
            ema_text.update()?;
            *stage.done(&mut state) += 1;
            let step = step + 1;
            let value = f64::from(loss.to_scalar::<f32>()?);
            meter.update(value, t0.elapsed().as_secs_f64());
            io(&log_path, writeln!(log, "{},{step},{value}", stage.name()))?;
            report(&Progress {
                stage: stage.name(),
                step,
                total: steps,
                loss: meter.loss,
                secs_per_step: meter.secs,
            });
            if step.is_multiple_of(opts.checkpoint_every) || step == steps {
                save(&unet_map, &opts.out.join(UNET_RAW))?;
                save(&text_map, &opts.out.join(TEXT_RAW))?;
                ema_unet.save(&opts.out.join(UNET_WEIGHTS), DType::F32)?;
                ema_text.save(&opts.out.join(TEXT_WEIGHTS), DType::F32)?;
                write_json(&state_path, &state)?;
            }
        }
    }
    if state.decoder_step < opts.decoder_steps {
        train_decoder(opts, &mut state, &vae, &vae_map, &mut log, report)?;
    }
    if opts.half {
        save_as(&vae_map, &opts.out.join(VAE_WEIGHTS), DType::F16)?;
        for (map, rel) in [(&unet_map, UNET_RAW), (&text_map, TEXT_RAW)] {
            if opts.out.join(rel).exists() {
                save_as(map, &opts.out.join(rel), DType::F16)?;
            }
        }
        if state.unet_step + state.stroke_step + state.words_step > 0 {
            ema_unet.save(&opts.out.join(UNET_WEIGHTS), DType::F16)?;
            ema_text.save(&opts.out.join(TEXT_WEIGHTS), DType::F16)?;
        }
    }
    Ok(state)
}

/// The decoder alone on the frozen encoder (the UNet's latent space stays valid): the pixel
/// losses, and with `opts.gan_weight` > 0 a patch discriminator that sees the latent, trained in
/// turns with the decoder.
fn train_decoder(
    opts: &TrainOptions,
    state: &mut TrainState,
    vae: &TinyVae,
    vae_map: &VarMap,
    log: &mut std::fs::File,
    report: &mut dyn FnMut(&Progress),
) -> Result<(), TrainError> {
    let device = Device::Cpu;
    let (tokenizer, state_path, log_path) =
        (builtin_tokenizer(), opts.out.join(STATE_FILE), opts.out.join("loss.csv"));
    let named: Vec<(String, Var)> = vae_map
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the weight map's lock is poisoned".into()))?
        .iter()
        .filter(|(name, _)| name.starts_with("decoder."))
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    let last = last_layer(&named)?;
    let vars: Vec<Var> = named.into_iter().map(|(_, var)| var).collect();
    let params = ParamsAdamW { lr: opts.decoder_learning_rate, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), params.clone())?;
    let disc_map = VarMap::new();
    let config = vae.config();
    let disc = PatchDiscriminator::new(
        config.downscale(),
        config.latent_channels,
        VarBuilder::from_varmap(&disc_map, DType::F32, &device),
    )?;
    let disc_path = opts.out.join(DISCRIMINATOR);
    if opts.resume && disc_path.exists() {
        load_into(&disc_map, &disc_path)?;
    }
    // The discriminator's Adam with a short memory, as GANs usually train.
    let mut disc_opt = AdamW::new(disc_map.all_vars(), ParamsAdamW { beta1: 0.5, beta2: 0.9, ..params })?;
    let mut meter = Meter::default();
    let first = state.decoder_step;
    while state.decoder_step < opts.decoder_steps {
        let t0 = Instant::now();
        let seed = TRAIN_SEED_BASE + (2 << 24) + (state.decoder_step * opts.batch) as u64;
        let (images, _) = batch(seed, opts.batch, &tokenizer, &device)?;
        let (z, recon) = round_trip(vae, &images, false)?;
        let (loss, value) = pixel_loss(&recon, &images)?;
        let rate = learning_rate(opts.decoder_learning_rate, state.decoder_step, opts.decoder_steps, first);
        let mut grads = loss.backward()?;
        if opts.gan_weight > 0.0 {
            let fake = disc.forward(&recon.detach(), &z)?;
            let d_loss = discriminator_loss(&disc.forward(&images, &z)?, &fake)?;
            disc_opt.set_learning_rate(rate);
            disc_opt.backward_step(&d_loss)?;
            let d_value = d_loss.to_scalar::<f32>()?;
            io(&log_path, writeln!(log, "discriminator,{},{d_value}", state.decoder_step + 1))?;
            let gan_grads = generator_loss(&disc.forward(&recon, &z)?)?.backward()?;
            let weight = adaptive_weight(&grads, &gan_grads, &last)? * opts.gan_weight;
            for var in &vars {
                if let (Some(g), Some(a)) = (grads.get(var.as_tensor()), gan_grads.get(var.as_tensor())) {
                    let sum = (g + (a * weight)?)?;
                    grads.insert(var.as_tensor(), sum);
                }
            }
        }
        opt.set_learning_rate(rate);
        opt.step(&grads)?;
        state.decoder_step += 1;
        meter.update(value, t0.elapsed().as_secs_f64());
        io(&log_path, writeln!(log, "decoder,{},{value}", state.decoder_step))?;
        report(&Progress {
            stage: "decoder",
            step: state.decoder_step,
            total: opts.decoder_steps,
            loss: meter.loss,
            secs_per_step: meter.secs,
        });
        if state.decoder_step.is_multiple_of(opts.checkpoint_every)
            || state.decoder_step == opts.decoder_steps
        {
            save(vae_map, &opts.out.join(VAE_WEIGHTS))?;
            write_reconstructions(vae, &opts.out)?;
            save(&disc_map, &disc_path)?;
            write_json(&state_path, state)?;
        }
    }
    Ok(())
}

/// The decoder's output convolution's weight: the highest-numbered `decoder.layers.N.weight`.
fn last_layer(named: &[(String, Var)]) -> Result<Var, TrainError> {
    named
        .iter()
        .filter_map(|(name, var)| {
            let index = name.strip_prefix("decoder.layers.")?.strip_suffix(".weight")?;
            Some((index.parse::<usize>().ok()?, var))
        })
        .max_by_key(|(index, _)| *index)
        .map(|(_, var)| var.clone())
        .ok_or_else(|| candle_core::Error::Msg("the decoder has no output layer".into()).into())
}

/// LDM's adaptive weight of the adversarial term: the ratio of the pixel loss's gradient norm
/// to the adversarial loss's at the decoder's last layer, so the discriminator's push is a set
/// share of the pixel losses' whatever its scale (a fixed weight let it take over: the decoder
/// drifted from the pictures within 200 steps).
fn adaptive_weight(pixel: &GradStore, adversarial: &GradStore, last: &Var) -> Result<f64, TrainError> {
    let norm = |grads: &GradStore| -> Result<f64, TrainError> {
        Ok(match grads.get(last.as_tensor()) {
            Some(g) => f64::from(g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?),
            None => 0.0,
        })
    };
    Ok((norm(pixel)? / (norm(adversarial)? + 1e-4)).clamp(0.0, 1e4))
}

/// Writes [`RECONSTRUCTIONS`] into `out`: fixed scenes in the top row, their decodings below, to
/// look at while the autoencoder trains.
fn write_reconstructions(vae: &TinyVae, out: &Path) -> Result<(), TrainError> {
    let (images, _) = batch(0, RECONSTRUCTION_COUNT, &builtin_tokenizer(), &Device::Cpu)?;
    let decoded = vae.decode(&vae.encode(&images)?)?;
    // CHW in [-1, 1] → HWC in [0, 1], per picture.
    let pictures = |t: &Tensor| -> Result<Vec<Vec<f32>>, TrainError> {
        let t = ((t.permute((0, 2, 3, 1))? + 1.0)? * 0.5)?;
        Ok((0..RECONSTRUCTION_COUNT)
            .map(|i| t.get(i)?.flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()?)
    };
    let sheet = crate::imageio::sheet(&[pictures(&images)?, pictures(&decoded)?], IMAGE_SIZE);
    let path = out.join(RECONSTRUCTIONS);
    crate::imageio::write_png(&path, &sheet, "latent-studio train: scenes (top) and their decodings")
        .map_err(|e| TrainError::Io { path, source: std::io::Error::other(e.reason) })
}

/// The latents of `images` and their decodings, noise of a random strength added to the
/// latents first (the decoder learns to draw from slightly-off latents, as a UNet's are). With
/// `train_encoder` false the latents are detached: only the decoder learns.
fn round_trip(vae: &TinyVae, images: &Tensor, train_encoder: bool) -> Result<(Tensor, Tensor), TrainError> {
    let z = vae.encode(images)?;
    let z = if train_encoder { z } else { z.detach() };
    let sigma = Tensor::rand(0f32, LATENT_NOISE, (z.dim(0)?, 1, 1, 1), z.device())?;
    let noisy = (&z + z.randn_like(0.0, 1.0)?.broadcast_mul(&sigma)?)?;
    let recon = vae.decode(&noisy)?;
    Ok((z, recon))
}

/// Per-pixel squared error plus squared error on neighbouring pixels' differences (edges), and
/// the per-pixel part alone for the log.
fn pixel_loss(recon: &Tensor, images: &Tensor) -> Result<(Tensor, f64), TrainError> {
    let diff = (recon - images)?;
    let mse = diff.sqr()?.mean_all()?;
    let value = f64::from(mse.to_scalar::<f32>()?);
    let loss = (mse + (edge_mse(recon, images)? * EDGE_WEIGHT)?)?;
    Ok((loss, value))
}

/// Mean squared difference between two pictures' horizontal and vertical neighbour differences.
fn edge_mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = a.dims4()?;
    let dx = |t: &Tensor| t.narrow(3, 1, w - 1)? - t.narrow(3, 0, w - 1)?;
    let dy = |t: &Tensor| t.narrow(2, 1, h - 1)? - t.narrow(2, 0, h - 1)?;
    (dx(a)? - dx(b)?)?.sqr()?.mean_all()? + (dy(a)? - dy(b)?)?.sqr()?.mean_all()?
}

/// Starts each residual block of the autoencoder as the identity by zeroing the last convolution
/// of its branch ("zero-init residual"): without normalisation, blocks at their random start
/// multiply the signal's scale block after block (first reconstructions came out ~20x too large).
fn zero_residual_branches(map: &VarMap) -> Result<(), TrainError> {
    let data =
        map.data().lock().map_err(|_| candle_core::Error::Msg("the weight map's lock is poisoned".into()))?;
    for (name, var) in data.iter() {
        if name.ends_with(".conv.4.weight") || name.ends_with(".conv.4.bias") {
            var.set(&var.as_tensor().zeros_like()?)?;
        }
    }
    Ok(())
}

/// Exponential moving averages of the loss and the step time.
#[derive(Debug, Default)]
pub(super) struct Meter {
    pub(super) loss: f64,
    pub(super) secs: f64,
    seen: usize,
}

impl Meter {
    pub(super) fn update(&mut self, loss: f64, secs: f64) {
        let k = if self.seen < 20 { 1.0 / (self.seen + 1) as f64 } else { 0.05 };
        self.loss += k * (loss - self.loss);
        self.secs += k * (secs - self.secs);
        self.seen += 1;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{caption_order, learning_rate, noised_and_target};

    #[test]
    fn half_the_stroke_pictures_take_a_scene_caption_from_the_other_half_of_the_batch() {
        let order = |b, s| caption_order(b, s, &Device::Cpu).unwrap().to_vec1::<u32>().unwrap();
        // Batch 8, 4 strokes: strokes 0 and 1 borrow scenes 4 and 5's captions.
        assert_eq!(order(8, 4), [4, 5, 2, 3, 4, 5, 6, 7]);
        // Batch 5, 2 strokes: stroke 0 borrows scene 2's.
        assert_eq!(order(5, 2), [2, 1, 2, 3, 4]);
        // No stroke pictures, or a batch of one: every example keeps its own caption.
        assert_eq!(order(4, 0), [0, 1, 2, 3]);
        assert_eq!(order(1, 0), [0]);
    }

    #[test]
    fn the_predicted_noise_of_a_stroke_example_makes_the_scene_the_clean_latent() {
        let dev = Device::Cpu;
        let input = Tensor::new(&[[[[0.5f32, -1.0]]], [[[2.0, 0.25]]]], &dev).unwrap();
        let scene = Tensor::new(&[[[[0.5f32, -1.0]]], [[[-0.75, 1.5]]]], &dev).unwrap();
        let noise = Tensor::new(&[[[[0.3f32, 1.2]]], [[[-0.4, 0.9]]]], &dev).unwrap();
        let a = Tensor::new(&[0.8f32, 0.3], &dev).unwrap().reshape((2, 1, 1, 1)).unwrap();
        let (x_t, eps) = noised_and_target(&input, &scene, &noise, &a).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // DDIM's clean estimate from the target noise, by hand: (x_t − √(1−a)·eps) / √a.
        let (x, e) = (flat(x_t), flat(eps));
        for (i, want) in [0.5f32, -1.0, -0.75, 1.5].into_iter().enumerate() {
            let alpha = if i < 2 { 0.8f32 } else { 0.3 };
            let clean = (x[i] - (1.0 - alpha).sqrt() * e[i]) / alpha.sqrt();
            assert!((clean - want).abs() < 1e-5, "element {i}: {clean} vs {want}");
        }
        // The first example is its own scene: the target is the noise itself.
        assert!((e[0] - 0.3).abs() < 1e-6 && (e[1] - 1.2).abs() < 1e-6, "{e:?}");
        // x_t is the input noised: √0.3·2 + √0.7·(−0.4).
        assert!((x[2] - (0.3f32.sqrt() * 2.0 - 0.7f32.sqrt() * 0.4)).abs() < 1e-5, "{x:?}");
    }

    #[test]
    fn the_rate_warms_up_decays_to_a_tenth_and_warms_up_again_on_resume() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(learning_rate(1.0, 0, 1000, 0), 0.01));
        assert!(close(learning_rate(1.0, 99, 1000, 0), 1.0));
        // Halfway through the decay, cos = 0: 0.1 + 0.45.
        assert!(close(learning_rate(1.0, 550, 1000, 0), 0.55));
        assert!(close(learning_rate(1.0, 1000, 1000, 0), 0.1));
        // Resumed at 550: a fiftieth of the scheduled rate first, the whole of it 49 steps on.
        assert!(close(learning_rate(1.0, 550, 1000, 550), 0.55 / 50.0));
        assert!(close(learning_rate(1.0, 599, 1000, 550), learning_rate(1.0, 599, 1000, 0)));
    }
}
