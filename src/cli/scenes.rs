//! `latent-studio scenes`: writes generator scenes drawn natively at a size as PNG files with
//! their captions, the pictures the built-in model learns from, for looking at and for
//! comparing figures (edge energy, Fréchet distance) against.

use std::path::PathBuf;

use anyhow::Context;

use crate::dataset::scenes::scene;
use crate::imageio::{write_atomic, write_png, Rgb};

/// Arguments of `scenes`.
#[derive(Debug, clap::Args)]
pub struct ScenesArgs {
    /// How many scenes.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Side in pixels; every scene is drawn at this size, not resampled.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// The first scene's seed; the others follow it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The folder to write `scene_NNNNN.png` and `captions.json` into (created if missing).
    #[arg(short, long)]
    pub out: PathBuf,
}

/// Largest side `scenes` draws: a scene is drawn in memory at once (4096² is 200 MB of f32).
const MAX_SIZE: usize = 4096;

/// Writes the scenes and a JSON object mapping each file name to its seed and caption.
pub fn run(args: &ScenesArgs) -> anyhow::Result<()> {
    if !(8..=MAX_SIZE).contains(&args.size) {
        anyhow::bail!("invalid size = {}: scenes are drawn at 8 to {MAX_SIZE} pixels", args.size);
    }
    if args.seed.checked_add(args.count as u64).is_none() {
        anyhow::bail!("invalid seed = {}: seed + count overflows", args.seed);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut captions = serde_json::Map::new();
    for i in 0..args.count as u64 {
        let seed = args.seed + i;
        let s = scene(seed, args.size);
        let name = format!("scene_{i:05}.png");
        let data = s.image.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        let rgb = Rgb { width: args.size, height: args.size, data };
        write_png(&args.out.join(&name), &rgb, &s.caption)?;
        captions.insert(name, serde_json::json!({ "seed": seed, "caption": s.caption }));
    }
    let path = args.out.join("captions.json");
    let text = serde_json::to_string_pretty(&captions)?;
    write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} scenes of {}x{} and captions.json to {}",
        args.count,
        args.size,
        args.size,
        args.out.display()
    );
    Ok(())
}
