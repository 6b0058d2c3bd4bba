//! The command line. With no subcommand it prints help (the studio window arrives later).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::core::samplers::{SamplerKind, SamplerOptions};
use crate::core::{SchedulerConfig, TimestepSpacing};

/// Latent Studio: sketch strokes, get images; scrub DDIM interpolations; tweak guidance live.
#[derive(Debug, Parser)]
#[command(name = "latent-studio", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the timesteps and noise levels a sampler visits, as JSON, to compare with diffusers.
    Timesteps(TimestepsArgs),
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

/// Runs the command line; returns the process's exit status.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!();
            Ok(())
        }
        Some(Command::Timesteps(args)) => timesteps(&args),
    }
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
