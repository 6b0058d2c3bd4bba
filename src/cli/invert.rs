//! `latent-studio invert`: a picture to the starting noise DDIM maps back to it.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;

use super::progress::Bar;
use super::render::{image_tensor, write_latent, ModelArgs};
use crate::core::samplers::{SamplerKind, StepView};
use crate::core::Guidance;
use crate::imageio::read_png;
use crate::models::pipeline::{Pipeline, Request};

/// Arguments of `invert`.
#[derive(Debug, clap::Args)]
pub struct InvertArgs {
    /// The model to load.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The picture (its size must be a multiple of the VAE factor).
    #[arg(long)]
    pub image: PathBuf,
    /// The prompt the inversion is conditioned on.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Guidance scale of the inversion and of the check render (1 = none, the faithful choice).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f64,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// The noise file to write (the `render --init-latent` format).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Inverts `image` with `pipeline`; returns the unit-variance noise.
pub fn invert_image(
    pipeline: &Pipeline,
    image: &crate::imageio::Rgb,
    prompt: &str,
    guidance: f64,
    steps: usize,
) -> anyhow::Result<candle_core::Tensor> {
    let latent = pipeline.encode_image(&image_tensor(image)?)?;
    let bar = Bar::new("invert");
    let mut callback = |v: &StepView<'_>| {
        bar.update(v.index + 1, v.total);
        ControlFlow::Continue(())
    };
    let guidance = Guidance { scale: guidance, ..Guidance::none() };
    pipeline.invert(&latent, prompt, guidance, steps, &mut callback)?.context("the inversion was stopped")
}

/// Peak signal-to-noise ratio of two 8-bit pictures, in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
        / a.len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

/// Runs `invert`: writes the noise and prints the round trip's reconstruction PSNR.
pub fn run(args: &InvertArgs) -> anyhow::Result<()> {
    let pipeline = args.model.load()?;
    let image = read_png(&args.image)?;
    let noise = invert_image(&pipeline, &image, &args.prompt, args.guidance, args.steps)?;
    write_latent(&args.output, &noise)?;
    let request = Request {
        prompt: args.prompt.clone(),
        negative: String::new(),
        sampler: SamplerKind::Ddim,
        options: Default::default(),
        steps: args.steps,
        guidance: Guidance { scale: args.guidance, ..Guidance::none() },
        seed: 0,
        size: Some((image.width, image.height)),
        init_latent: Some(noise),
        init_image: None,
        prompt_to: None,
        regions: Vec::new(),
    };
    let back = pipeline
        .render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(()))?
        .context("the check render was stopped")?;
    println!("reconstruction PSNR {:.2} dB", psnr(&back.rgb, &image.data));
    Ok(())
}
