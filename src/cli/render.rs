//! `latent-studio render`: one image from a prompt, optionally SDEdit from a picture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};

use crate::core::presets::Preset;
use crate::core::samplers::{SamplerKind, SamplerOptions, StepView};
use crate::core::{Guidance, PredictionType, TimestepSpacing};
use crate::edit_mask::{CellRule, EditMask};
use crate::engine::spec::{LoraSpec, ModelSource, RegionSpec};
use crate::imageio::{read_png, write_png, Rgb};
use crate::models::lora::LoraFile;
use crate::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};

/// SDEdit strength when `--init-image` comes without `--strength` (diffusers' img2img default
/// is 0.8; A1111's denoising strength 0.75, which we follow).
const DEFAULT_STRENGTH: f64 = 0.75;

/// Arguments of `render`.
///
/// Defaults follow the model, as diffusers does: the sampler named by the folder's
/// `scheduler_config.json` (DDIM, with a notice, for classes we do not implement such as PNDM),
/// 50 steps, guidance 7.5, size = UNet sample_size × VAE factor.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The model to load.
    #[command(flatten)]
    pub model: ModelArgs,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from.
    #[arg(long, default_value = "")]
    pub negative: String,
    /// ddim, ddpm, euler, euler-a, heun, dpmpp-2m or lcm (default: the model's).
    #[arg(long)]
    pub sampler: Option<String>,
    /// A few-step model's settings: lcm (LCM models, LCM-LoRA), turbo (SD-Turbo) or hyper
    /// (Hyper-SD LoRAs) set the sampler, spacing, steps and guidance that `--sampler`,
    /// `--spacing`, `--steps` and `--guidance` do not.
    #[arg(long)]
    pub preset: Option<String>,
    /// leading, trailing or linspace (default: the model's).
    #[arg(long)]
    pub spacing: Option<String>,
    /// Karras sigmas (Euler, Heun, DPM-Solver++).
    #[arg(long)]
    pub karras: bool,
    /// Inference steps (default: the model's; 50 for Stable Diffusion).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale, 1 = off (default: the model's; 7.5 for Stable Diffusion).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Guidance rescale phi in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,
    /// DDIM eta.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed of the starting noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width in pixels (a multiple of the VAE factor).
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels (a multiple of the VAE factor).
    #[arg(long)]
    pub height: Option<usize>,
    /// SDEdit: start from this picture.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// SDEdit strength in (0, 1] (default 0.75); only with an init image, which it applies to.
    #[arg(long, requires = "init_image")]
    pub strength: Option<f64>,
    /// Edit mask, white = edit: an ordinary model edits the latent cells at least half white
    /// (blending the rest back in), an inpainting model repaints the pixels ≥ 0.5.
    #[arg(long, requires = "init_image")]
    pub mask: Option<PathBuf>,
    /// Blur the mask by a Gaussian of this many pixels first (AUTOMATIC1111's "Mask blur"): an
    /// ordinary model then blends softly across the edge.
    #[arg(long, default_value_t = 0.0, requires = "mask")]
    pub mask_blur: f32,
    /// Paint with words: `MASK.png:PHRASE[:WEIGHT]` draws PHRASE where the mask is white (any
    /// size; a phrase not in the prompt is appended to it). Repeatable.
    #[arg(long = "region", value_name = "MASK.png:PHRASE[:WEIGHT]")]
    pub regions: Vec<String>,
    /// Starting noise: a safetensors file with one f32 tensor `latent` [1, C, H/f, W/f].
    #[arg(long)]
    pub init_latent: Option<PathBuf>,
    /// Write the denoised latent (before the VAE scaling) in the same format.
    #[arg(long)]
    pub save_latent: Option<PathBuf>,
    /// The PNG to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Which model to load and how; shared by `render`, `invert` and `interpolate`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// `builtin`, `builtin-live` (its few-step student), a diffusers model folder (SD 1.x/2.x,
    /// LCM, or one written by `train` or `distill`), or a single-file `.safetensors` checkpoint.
    #[arg(long, default_value = "builtin")]
    pub model: PathBuf,
    /// Compute dtype: auto (f32 on the CPU, f16 on a GPU, an SD VAE upcast to f32), f32 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Override the model's prediction type: eps or v.
    #[arg(long)]
    pub prediction_type: Option<String>,
    /// Replace the model's autoencoder (encoding and decoding) by a diffusers `AutoencoderKL` or
    /// `AutoencoderTiny` (TAESD) folder, or another model folder's `vae/`.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// A LoRA file (kohya-ss or diffusers/PEFT `.safetensors`) merged into the UNet and text
    /// encoder, `FILE[:STRENGTH]` (strength 1 when omitted); repeat for several.
    #[arg(long = "lora", value_name = "FILE[:STRENGTH]", value_parser = parse_lora)]
    pub loras: Vec<LoraSpec>,
}

fn parse_lora(arg: &str) -> Result<LoraSpec, String> {
    let spec = LoraSpec::parse(arg);
    if spec.strength.is_finite() {
        Ok(spec)
    } else {
        Err(format!("{arg}: the strength must be a finite number"))
    }
}

impl ModelArgs {
    /// Loads the model.
    pub fn load(&self) -> anyhow::Result<Pipeline> {
        let LoadOptions { dtype, device, .. } = LoadOptions::default();
        let dtype = match self.dtype.as_str() {
            "auto" => dtype,
            "f32" => DType::F32,
            "f16" => DType::F16,
            other => bail!("invalid dtype {other}: expected auto, f32 or f16"),
        };
        let prediction_type = match self.prediction_type.as_deref() {
            None => None,
            Some("eps" | "epsilon") => Some(PredictionType::Epsilon),
            Some("v" | "v_prediction") => Some(PredictionType::VPrediction),
            Some(other) => bail!("invalid prediction type {other}: expected eps or v"),
        };
        let source = ModelSource::from_arg(&self.model);
        let path = source.path();
        if !path.exists() && source != ModelSource::Path(self.model.clone()) {
            bail!(
                "the {} model is not in {} yet: train it with `latent-studio {} --out {}`",
                source.name(),
                path.display(),
                if source == ModelSource::Builtin { "train" } else { "distill" },
                path.display()
            );
        }
        let mut pipeline = Pipeline::load(&path, &LoadOptions { dtype, device, prediction_type })?;
        if let Some(vae) = &self.vae {
            pipeline.swap_vae(vae)?;
        }
        if !self.loras.is_empty() {
            let mut files = Vec::new();
            for lora in &self.loras {
                files.push((Arc::new(LoraFile::read(&lora.path)?), lora.strength));
            }
            for report in pipeline.set_loras(&files)? {
                if !report.unmatched.is_empty() {
                    eprintln!(
                        "warning: {}: {} of its layers are not in this model: {}",
                        report.path.display(),
                        report.unmatched.len(),
                        report.unmatched.join(", ")
                    );
                }
            }
        }
        Ok(pipeline)
    }

    /// The model's name for PNG metadata.
    pub fn name(&self) -> String {
        self.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// Reads a `latent` tensor from a safetensors file.
pub fn read_latent(path: &Path) -> anyhow::Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let latent =
        tensors.remove("latent").with_context(|| format!("{}: no tensor named `latent`", path.display()))?;
    if latent.rank() != 4 || latent.dim(0)? != 1 {
        bail!("{}: `latent` must have shape [1, C, H, W], found {:?}", path.display(), latent.dims());
    }
    Ok(latent.to_dtype(DType::F32)?)
}

/// Writes `latent` as a safetensors file with one f32 tensor `latent`.
pub fn write_latent(path: &Path, latent: &Tensor) -> anyhow::Result<()> {
    let map = HashMap::from([("latent".to_string(), latent.to_dtype(DType::F32)?)]);
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&map, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `[1, 3, H, W]` in [-1, 1].
pub fn image_tensor(image: &Rgb) -> anyhow::Result<Tensor> {
    let data: Vec<f32> = image.data.iter().map(|&v| f32::from(v) / 127.5 - 1.0).collect();
    Ok(Tensor::from_vec(data, (image.height, image.width, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?)
}

/// The edit mask of a mask picture: its mean brightness per pixel; a latent cell is edited when at
/// least half its pixels are (unblurred), an inpainting model repaints pixels ≥ 0.5.
fn edit_mask(mask: &Rgb, factor: usize, blur: f32) -> anyhow::Result<EditMask> {
    let coverage: Vec<f32> = mask
        .data
        .chunks_exact(3)
        .map(|p| (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / (3.0 * 255.0))
        .collect();
    Ok(EditMask::new(&coverage, mask.width, mask.height, factor, blur, CellRule::Majority)?)
}

/// The `--region` arguments read: masks from their files, phrases and weights.
fn regions(args: &[String], size: usize) -> anyhow::Result<Vec<crate::models::regions::Region>> {
    args.iter()
        .map(|arg| {
            let spec = RegionSpec::parse(arg).map_err(anyhow::Error::msg)?;
            Ok(crate::engine::spec::region(&spec, size, size)?)
        })
        .collect()
}

/// Runs `render`.
pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    let pipeline = args.model.load()?;
    let preset = args.preset.as_deref().map(Preset::parse).transpose()?.map(Preset::settings);
    let steps = args.steps.or(preset.map(|p| p.steps)).unwrap_or(pipeline.defaults().steps);
    let guidance = args.guidance.or(preset.map(|p| p.guidance)).unwrap_or(pipeline.defaults().guidance);
    let spacing = match (&args.spacing, preset) {
        (Some(name), _) => Some(TimestepSpacing::parse(name)?),
        (None, Some(p)) => p.spacing,
        (None, None) => None,
    };
    let sampler = match (&args.sampler, preset) {
        (Some(name), _) => SamplerKind::parse(name)?,
        (None, Some(p)) => p.sampler,
        (None, None) => {
            let (kind, notice) = pipeline.default_sampler();
            if let Some(notice) = notice {
                eprintln!("notice: {notice}");
            }
            kind
        }
    };
    let size = match (args.width, args.height) {
        (None, None) => None,
        (w, h) => Some((w.unwrap_or(pipeline.image_size()), h.unwrap_or(pipeline.image_size()))),
    };
    let init_image = match &args.init_image {
        None => None,
        Some(path) => {
            let image = read_png(path)?;
            let mask = match &args.mask {
                None => None,
                Some(m) => {
                    let mask = read_png(m)?;
                    if (mask.width, mask.height) != (image.width, image.height) {
                        bail!(
                            "{}: the mask is {}x{}, the picture {}x{}",
                            m.display(),
                            mask.width,
                            mask.height,
                            image.width,
                            image.height
                        );
                    }
                    if !(args.mask_blur.is_finite() && (0.0..=64.0).contains(&args.mask_blur)) {
                        bail!("invalid --mask-blur {}: choose 0 to 64 pixels", args.mask_blur);
                    }
                    Some(edit_mask(&mask, pipeline.vae_factor(), args.mask_blur)?)
                }
            };
            Some(InitImage {
                image: image_tensor(&image)?,
                strength: args.strength.unwrap_or(DEFAULT_STRENGTH),
                mask,
            })
        }
    };
    let size = match (&init_image, size) {
        (Some(init), None) => Some((init.image.dim(3)?, init.image.dim(2)?)),
        (_, size) => size,
    };
    let request = Request {
        prompt: args.prompt.clone(),
        negative: args.negative.clone(),
        sampler,
        options: SamplerOptions { spacing, karras: args.karras.then_some(true), eta: args.eta },
        steps,
        guidance: Guidance { scale: guidance, rescale: args.guidance_rescale, interval: None },
        seed: args.seed,
        size,
        init_latent: args.init_latent.as_deref().map(read_latent).transpose()?,
        init_image,
        prompt_to: None,
        regions: regions(&args.regions, pipeline.image_size())?,
    };
    let tokens = pipeline.tokenize(&args.prompt);
    if tokens.truncated {
        eprintln!(
            "warning: the prompt is longer than the text encoder's {} tokens and was truncated",
            tokens.ids.len()
        );
    }
    let progress = super::progress::Bar::new("render");
    let mut callback = |v: &StepView<'_>| {
        progress.update(v.index + 1, v.total);
        std::ops::ControlFlow::Continue(())
    };
    let image = pipeline.render(&request, &mut callback)?.context("the render was stopped")?;
    if !image.unknown_words.is_empty() {
        eprintln!("warning: the model does not know: {}", image.unknown_words.join(", "));
    }
    for note in &image.notes {
        eprintln!("note: {note}");
    }
    if let Some(path) = &args.save_latent {
        write_latent(path, &image.latent)?;
    }
    let negative = if args.negative.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", args.negative)
    };
    let model = args.model.name();
    let parameters = format!(
        "{}{negative}\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {model}",
        args.prompt,
        steps,
        sampler.a1111_name(),
        guidance,
        args.seed,
        image.width,
        image.height
    );
    write_png(&args.output, &Rgb { width: image.width, height: image.height, data: image.rgb }, &parameters)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    #[test]
    fn strength_and_mask_need_an_init_image() {
        let parse = |extra: &[&str]| {
            let base = ["latent-studio", "render", "--prompt", "a hill", "-o", "out.png"];
            Cli::try_parse_from(base.iter().chain(extra))
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--strength", "0.5"]).is_err(), "a strength alone would be silently ignored");
        assert!(parse(&["--mask", "m.png"]).is_err());
        assert!(parse(&["--init-image", "a.png", "--strength", "0.5", "--mask", "m.png"]).is_ok());
    }
}
