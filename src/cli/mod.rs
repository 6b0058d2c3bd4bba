//! The command line. With no subcommand it opens the studio window.

mod bench;
mod bench_device;
mod bench_fast_models;
mod eval;
mod eval_regions;
mod interpolate;
mod invert;
mod progress;
mod render;
mod run_graph;
mod scenes;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::core::samplers::{SamplerKind, SamplerOptions};
use crate::core::{SchedulerConfig, TimestepSpacing};

/// Latent Studio: sketch strokes, get images; scrub DDIM interpolations; tweak guidance live.
#[derive(Debug, Parser)]
#[command(name = "latent-studio", version, about)]
pub struct Cli {
    /// Tensor threads (default: all cores). Every timing `bench` prints states its count.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Where the networks run: auto (a GPU when this build and machine have one, else the CPU),
    /// cpu, cuda:N or metal (the GPU ones need a build with `--features cuda` or `metal`).
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// Which kernels run the networks: fused (the hand-written CPU kernels where they apply) or
    /// generic (candle's device-generic operations everywhere, what a GPU runs).
    #[arg(long, global = true, default_value = "fused", value_parser = ["fused", "generic"])]
    pub kernels: String,
    /// The studio's model (a diffusers folder or a .safetensors file) instead of the built-in one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Open this graph instead of the autosaved one.
    #[arg(long)]
    pub graph: Option<PathBuf>,
    /// Where the studio keeps its autosave, settings and log (default: ~/.local/share/latent-studio).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// What to do (nothing: open the studio).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the timesteps and noise levels a sampler visits, as JSON, to compare with diffusers.
    Timesteps(TimestepsArgs),
    /// Train the built-in model from generated scenes (hours on a CPU; resumable).
    Train(TrainArgs),
    /// Distil the built-in model into its live student: few steps, guidance as an input (resumable).
    Distill(DistillArgs),
    /// Render a prompt with a Stable Diffusion folder or the built-in model (`render --help`).
    Render(Box<render::RenderArgs>),
    /// Invert a picture to DDIM starting noise (feeds `render --init-latent`); prints the round trip's PSNR.
    Invert(Box<invert::InvertArgs>),
    /// Render a strip of frames along a slerp between two noises, seeds or inverted pictures.
    Interpolate(Box<interpolate::InterpolateArgs>),
    /// Time the networks and kernels; prints one JSON object per line.
    Bench(bench::BenchArgs),
    /// Measure the model's quality (prompt adherence, Fréchet distance, SDEdit) and write sample sheets.
    Eval(Box<eval::EvalArgs>),
    /// Measure paint with words over many seeds (a sun placed by its region, a lake painted into a desert).
    EvalRegions(Box<eval_regions::EvalRegionsArgs>),
    /// Evaluate a saved graph headlessly (the studio's evaluator) and write its picture.
    Run(run_graph::RunArgs),
    /// Write generator scenes (the built-in model's training pictures) as PNGs with their captions.
    Scenes(scenes::ScenesArgs),
}

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model folder to write: diffusers layout, checkpoints, `loss.csv`, `train_state.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the folder's last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Autoencoder steps.
    #[arg(long, default_value_t = 2000)]
    pub vae_steps: usize,
    /// Peak learning rate of the autoencoder (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub vae_lr: f64,
    /// UNet and text-encoder steps.
    #[arg(long, default_value_t = 14000)]
    pub unet_steps: usize,
    /// Steps of the stroke stage after the UNet's: half of each batch are stroke pictures of
    /// their scenes, noised, with the scene as the answer, so SDEdit keeps what was painted.
    #[arg(long, default_value_t = 4000)]
    pub stroke_steps: usize,
    /// Peak learning rate of the stroke stage (and the words stage).
    #[arg(long, default_value_t = 3e-4)]
    pub stroke_lr: f64,
    /// Steps of the words stage after the stroke stage: the stroke stage's batches with paint
    /// with words' bias on the sun's, moon's or water's phrase where it is, so a painted phrase
    /// lands in its region.
    #[arg(long, default_value_t = 1500)]
    pub words_steps: usize,
    /// Decoder fine-tuning steps after the UNet (encoder frozen, so the UNet stays valid). Off by
    /// default: on the built-in design it has not sharpened the pictures yet (see the README).
    #[arg(long, default_value_t = 0)]
    pub decoder_steps: usize,
    /// Peak learning rate of the decoder fine-tuning.
    #[arg(long, default_value_t = 5e-4)]
    pub decoder_lr: f64,
    /// Weight of the adversarial loss (a patch discriminator) in the decoder fine-tuning, as a
    /// share of the pixel losses' gradient at the decoder's last layer; 0 for the pixel losses
    /// alone.
    #[arg(long, default_value_t = 0.1)]
    pub gan_weight: f64,
    /// Scenes per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// When training ends, rewrite the weights in f16 (how `assets/builtin` ships them).
    #[arg(long)]
    pub half: bool,
}

/// Arguments of `distill`.
#[derive(Debug, clap::Args)]
pub struct DistillArgs {
    /// The teacher's training folder (f32 weights and `train_state.json`).
    #[arg(long, default_value = "training/builtin-128")]
    pub teacher: PathBuf,
    /// The student's model folder to write: diffusers' LCM layout, checkpoints, `loss.csv`.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the folder's last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Distillation steps.
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Scenes per step (half of them as stroke pictures).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// When done, rewrite the weights in f16 (how `assets/builtin-live` ships them).
    #[arg(long)]
    pub half: bool,
    /// Paint-with-words lessons in every batch, for a teacher trained with the words stage.
    #[arg(long)]
    pub words: bool,
}

/// Arguments of `timesteps`.
#[derive(Debug, clap::Args)]
pub struct TimestepsArgs {
    /// A diffusers `scheduler_config.json`; Stable Diffusion 1.x's when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// ddim, ddpm, euler, euler-a, heun, dpmpp-2m or lcm.
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    /// Number of inference steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// leading, trailing or linspace (default: the config's).
    #[arg(long)]
    pub spacing: Option<String>,
    /// Use Karras sigmas (Euler, Heun, DPM-Solver++).
    #[arg(long)]
    pub karras: bool,
}

/// Keeps freed blocks of any size in the heap for reuse. glibc otherwise maps every block over
/// 32 MB (a 256² VAE's activations) fresh from the kernel and unmaps it when freed, so each
/// decode pays page faults on all of it again: this measured SD 1.5's 256² VAE decode ~15%
/// faster. The cost is that the process keeps its peak memory until it exits, as PyTorch's
/// allocator does.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists. A refusal (return 0) leaves glibc's defaults, which are merely slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// How many times candle's idle pool threads spin before parking (read when the pool starts).
const SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Runs the command line; returns the process's exit status.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            anyhow::bail!("invalid threads = 0: at least one thread is needed");
        }
        // Read once by the tensor library's thread pool, which starts with the first tensor
        // operation: nothing has run yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle reads this on every matrix product and, when it is unset, works the count out
        // again from /proc/cpuinfo each time: a tenth of a millisecond per product, which made
        // small networks (the built-in autoencoder, training steps) two to three times slower.
        // Its own default (physical cores) is worked out once here instead.
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    keep_freed_memory();
    if std::env::var_os(SPIN_LIMIT).is_none() {
        // candle's own pool (elementwise operations) spins 25,000 times after each operation
        // before it parks; the convolutions and products that follow run on rayon's pool, so on
        // a small machine that spinning takes a core from them. A shorter spin measured SD 1.5's
        // UNet at 256² ~6% faster with the built-in UNet unchanged (README, Performance).
        std::env::set_var(SPIN_LIMIT, "1000");
    }
    crate::kernels::set(crate::kernels::Kernels::parse(&cli.kernels).unwrap_or_default());
    let (device, notice) = crate::models::device::choose(&cli.device)?;
    if let Some(notice) = notice {
        eprintln!("notice: {notice}");
    }
    crate::models::device::set_default(device);
    match cli.command {
        None => {
            let data_dir = cli.data_dir.unwrap_or_else(crate::app::settings::default_data_dir);
            if cli.threads.is_none() {
                let (settings, _) = crate::app::Settings::load(&data_dir);
                if settings.threads > 0 {
                    std::env::set_var("RAYON_NUM_THREADS", settings.threads.to_string());
                }
            }
            crate::app::run(crate::app::Options { model: cli.model, graph: cli.graph, data_dir })
        }
        Some(Command::Run(args)) => run_graph::run(&args),
        Some(Command::Timesteps(args)) => timesteps(&args),
        Some(Command::Train(args)) => train(&args),
        Some(Command::Distill(args)) => distill(&args),
        Some(Command::Render(args)) => render::run(&args),
        Some(Command::Invert(args)) => invert::run(&args),
        Some(Command::Interpolate(args)) => interpolate::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::EvalRegions(args)) => eval_regions::run(&args),
        Some(Command::Scenes(args)) => scenes::run(&args),
    }
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let opts = crate::training::train::TrainOptions {
        out: args.out.clone(),
        resume: args.resume,
        vae_steps: args.vae_steps,
        vae_learning_rate: args.vae_lr,
        unet_steps: args.unet_steps,
        stroke_steps: args.stroke_steps,
        stroke_learning_rate: args.stroke_lr,
        words_steps: args.words_steps,
        decoder_steps: args.decoder_steps,
        decoder_learning_rate: args.decoder_lr,
        gan_weight: args.gan_weight,
        batch: args.batch.max(1),
        learning_rate: args.lr,
        checkpoint_every: args.checkpoint_every.max(1),
        uncond_share: 0.1,
        half: args.half,
    };
    let mut report = training_progress();
    let state = crate::training::train::train(&opts, &mut report)
        .with_context(|| format!("training into {}", args.out.display()))?;
    eprintln!(
        "done: {} autoencoder steps, {} UNet steps, {} stroke steps, {} words steps, {} decoder steps",
        state.vae_step, state.unet_step, state.stroke_step, state.words_step, state.decoder_step
    );
    Ok(())
}

/// A training run's progress bar: at most one line a second, and the last step's.
fn training_progress() -> impl FnMut(&crate::training::train::Progress) {
    let mut last_line = std::time::Instant::now();
    move |p| {
        if last_line.elapsed().as_secs_f64() < 1.0 && p.step != p.total {
            return;
        }
        last_line = std::time::Instant::now();
        let eta = (p.total - p.step) as f64 * p.secs_per_step;
        let extra = format!("loss {:.4} {:.2}s/step ", p.loss, p.secs_per_step);
        progress::draw(p.stage, p.step, p.total, &extra, eta);
    }
}

fn distill(args: &DistillArgs) -> anyhow::Result<()> {
    let opts = crate::training::distill::DistillOptions {
        teacher: args.teacher.clone(),
        out: args.out.clone(),
        resume: args.resume,
        steps: args.steps,
        batch: args.batch.max(2),
        learning_rate: args.lr,
        checkpoint_every: args.checkpoint_every.max(1),
        half: args.half,
        words: args.words,
    };
    let mut report = training_progress();
    let state = crate::training::distill::distill(&opts, &mut report)
        .with_context(|| format!("distilling {} into {}", args.teacher.display(), args.out.display()))?;
    eprintln!("done: {} distillation steps", state.step);
    Ok(())
}

fn timesteps(args: &TimestepsArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            SchedulerConfig::from_json(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => SchedulerConfig::stable_diffusion(),
    };
    let kind = SamplerKind::parse(&args.sampler)?;
    let options = SamplerOptions {
        spacing: args.spacing.as_deref().map(TimestepSpacing::parse).transpose()?,
        karras: args.karras.then_some(true),
        eta: 0.0,
    };
    let sampler = kind.build(&config, args.steps, &options)?;
    let steps: Vec<_> = (0..sampler.steps())
        .map(|i| {
            let a = sampler.alpha_bar_at(i);
            serde_json::json!({
                "step": i,
                "timestep": sampler.timestep_at(i),
                "alpha_bar": a,
                "sigma": ((1.0 - a) / a).sqrt(),
            })
        })
        .collect();
    let out = serde_json::json!({
        "sampler": kind.name(),
        "init_noise_sigma": sampler.init_noise_sigma(),
        "steps": steps,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_s_arguments_are_well_formed() {
        // clap checks its definitions (defaults against value counts, names, conflicts) only
        // when a command is built in a debug build: build them all here.
        super::Cli::command().debug_assert();
    }

    #[test]
    fn eval_regions_takes_a_disc_of_three_numbers() {
        use clap::Parser;
        let cli =
            super::Cli::try_parse_from(["latent-studio", "eval-regions", "--disc", "0.2", "0.3", "0.1"])
                .unwrap();
        let Some(super::Command::EvalRegions(args)) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!(args.disc, vec![0.2, 0.3, 0.1]);
        let defaults = super::Cli::try_parse_from(["latent-studio", "eval-regions"]).unwrap();
        let Some(super::Command::EvalRegions(args)) = defaults.command else { panic!() };
        assert_eq!(args.disc, vec![0.25, 0.22, 0.13]);
    }
}
