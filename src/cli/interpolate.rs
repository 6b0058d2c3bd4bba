//! `latent-studio interpolate`: a strip of DDIM frames along a slerp between two noises (seeds,
//! noise files, or pictures inverted first), optionally lerping the prompt too.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Tensor};

use super::invert::invert_image;
use super::progress::Bar;
use super::render::{read_latent, ModelArgs};
use crate::core::interpolate::slerp;
use crate::core::samplers::{SamplerKind, StepView};
use crate::core::{Guidance, SeededNoise};
use crate::imageio::{read_png, write_png, Rgb};
use crate::models::pipeline::{Pipeline, Request};

/// Arguments of `interpolate`.
#[derive(Debug, clap::Args)]
pub struct InterpolateArgs {
    /// The model to load.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (at the start of the strip).
    #[arg(long)]
    pub prompt: String,
    /// A second prompt: the conditioning moves from `--prompt` to this along the strip.
    #[arg(long)]
    pub prompt_to: Option<String>,
    /// Start: `seed:N`, a noise `.safetensors` file, or a `.png` picture (inverted first).
    #[arg(long)]
    pub from: String,
    /// End, in the same forms.
    #[arg(long)]
    pub to: String,
    /// Frames, both endpoints included.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// ddim (deterministic, the default), or another sampler.
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    /// Inference steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (default: the model's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Width in pixels.
    #[arg(long)]
    pub width: Option<usize>,
    /// Height in pixels.
    #[arg(long)]
    pub height: Option<usize>,
    /// An animated `.gif` (12 frames per second), or a folder for `frame_0000.png`...
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The noise an endpoint names.
fn endpoint(
    spec: &str,
    pipeline: &Pipeline,
    prompt: &str,
    steps: usize,
    size: (usize, usize),
) -> anyhow::Result<Tensor> {
    if let Some(seed) = spec.strip_prefix("seed:") {
        let seed: u64 = seed.parse().with_context(|| format!("endpoint {spec}: the seed is not a number"))?;
        let (f, channels) = (pipeline.vae_factor(), pipeline.latent_channels());
        return Ok(SeededNoise::new(seed).tensor(
            &[1, channels, size.1 / f, size.0 / f],
            DType::F32,
            &candle_core::Device::Cpu,
        )?);
    }
    let path = Path::new(spec);
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => read_latent(path),
        Some("png") => {
            let image = read_png(path)?;
            invert_image(pipeline, &image, prompt, 1.0, steps)
        }
        _ => bail!("endpoint {spec}: expected seed:N, a .safetensors noise file or a .png picture"),
    }
}

/// Runs `interpolate`.
pub fn run(args: &InterpolateArgs) -> anyhow::Result<()> {
    if args.frames < 2 {
        bail!("invalid frames = {}: a strip needs at least its two endpoints", args.frames);
    }
    let pipeline = args.model.load()?;
    let steps = args.steps.unwrap_or(pipeline.defaults().steps);
    let guidance = args.guidance.unwrap_or(pipeline.defaults().guidance);
    let sampler = SamplerKind::parse(&args.sampler)?;
    let default = pipeline.image_size();
    let size = (args.width.unwrap_or(default), args.height.unwrap_or(default));
    let a = endpoint(&args.from, &pipeline, &args.prompt, steps, size)?;
    let b = endpoint(&args.to, &pipeline, &args.prompt, steps, size)?;
    let bar = Bar::new("interpolate");
    let mut frames = Vec::with_capacity(args.frames);
    for i in 0..args.frames {
        let t = i as f64 / (args.frames - 1) as f64;
        let request = Request {
            prompt: args.prompt.clone(),
            negative: String::new(),
            sampler,
            options: Default::default(),
            steps,
            guidance: Guidance { scale: guidance, ..Guidance::none() },
            seed: 0,
            size: Some(size),
            init_latent: Some(slerp(&a, &b, t)?),
            init_image: None,
            prompt_to: args.prompt_to.clone().map(|p| (p, t)),
            regions: Vec::new(),
        };
        let image = pipeline
            .render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(()))?
            .context("a frame render was stopped")?;
        frames.push(Rgb { width: image.width, height: image.height, data: image.rgb });
        bar.update(i + 1, args.frames);
    }
    let is_gif = args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif"));
    if is_gif {
        Ok(crate::imageio::write_gif(&args.output, &frames)?)
    } else {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        for (i, frame) in frames.iter().enumerate() {
            let parameters = format!(
                "{}\nSteps: {}, Sampler: {}, CFG scale: {}, Frame: {i}",
                args.prompt,
                steps,
                sampler.a1111_name(),
                guidance
            );
            write_png(&args.output.join(format!("frame_{i:04}.png")), frame, &parameters)?;
        }
        Ok(())
    }
}
