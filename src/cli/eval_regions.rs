//! `latent-studio eval-regions`: paint with words measured over many seeds. A sun painted as a
//! disc on the left or the right of the sky, on prompts that name no sun, should stand on the
//! painted side; a lake painted over the lower third of a desert should make that third
//! water-coloured. Figures as JSON lines (as `bench`), a sheet to look at, and the cost of the
//! regions in render time.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::bench::emit;
use super::render::ModelArgs;
use crate::core::Guidance;
use crate::evaluation::regions::{blueness, disc_on_side};
use crate::imageio::{sheet, write_png};
use crate::models::pipeline::{Pipeline, Request};
use crate::models::regions::{Region, DEFAULT_WEIGHT};

/// Arguments of `eval-regions`.
#[derive(Debug, clap::Args)]
pub struct EvalRegionsArgs {
    /// The model to evaluate.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Renders per test (seeds; the sun alternates sides).
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// The regions' weight.
    #[arg(long, default_value_t = DEFAULT_WEIGHT)]
    pub weight: f64,
    /// Sampling steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The sun's disc: its centre's distance from the side (the left disc's x; the right one's
    /// is 1 − x), its centre's height and its radius, as fractions of the side.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "RADIUS"], default_values_t = [0.25, 0.22, 0.13])]
    pub disc: Vec<f32>,
    /// The sheet, 8 seeds a row after the mask: the sun phrase in the prompt (no region) for the
    /// seeds of the left and of the right disc, the same seeds with the disc on the left and on
    /// the right; a desert without and with the lake.
    #[arg(long, default_value = "docs/paint_with_words.png")]
    pub sheet: PathBuf,
}

/// Prompts that name no sun (day, dawn and sunset, when the model's world has one).
const SUN_PROMPTS: [&str; 8] = [
    "snowy mountains with a lake during the day",
    "rolling hills with a forest in daylight",
    "a view of the sea with a sandy beach at noon",
    "farm fields with hills at sunset",
    "mountains with pine trees at dawn",
    "a clear day over a green meadow",
    "the ocean during the day with some clouds",
    "a view of a lake with a pine forest at sunrise",
];
const SUN: &str = "a bright sun";

/// Desert prompts: the model's world never has water in the desert.
const DESERT_PROMPTS: [&str; 6] = [
    "a view of desert dunes at noon",
    "sand dunes during the day",
    "a desert at sunset",
    "desert dunes at dawn with some clouds",
    "a bright day over sand dunes",
    "a desert in daylight",
];
const LAKE: &str = "a calm lake";

/// Blueness gained that counts as "clearly bluer".
const BLUER: f32 = 0.05;

/// A coverage map at `size`: a disc `(x, y, radius)` (fractions of the side), or the lower third.
fn mask(size: usize, disc: Option<(f32, f32, f32)>) -> Vec<f32> {
    let s = size as f32;
    (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 + 0.5, (i / size) as f32 + 0.5);
            let inside = match disc {
                Some((cx, cy, r)) => (x - cx * s).hypot(y - cy * s) < r * s,
                None => y >= s * 2.0 / 3.0,
            };
            if inside {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Runs `eval-regions`.
pub fn run(args: &EvalRegionsArgs) -> anyhow::Result<()> {
    let pipeline = args.model.load()?;
    let size = pipeline.image_size();
    let steps = args.steps.unwrap_or(pipeline.defaults().steps);
    let render = |prompt: &str, seed: u64, regions: Vec<Region>| -> anyhow::Result<(Vec<f32>, f64)> {
        let (sampler, _) = pipeline.default_sampler();
        let request = Request {
            prompt: prompt.into(),
            negative: String::new(),
            sampler,
            options: Default::default(),
            steps,
            guidance: Guidance { scale: pipeline.defaults().guidance, ..Guidance::default() },
            seed,
            size: None,
            init_latent: None,
            init_image: None,
            prompt_to: None,
            regions,
        };
        let t = Instant::now();
        let rendered = render_request(&pipeline, &request)?;
        Ok((rendered, t.elapsed().as_secs_f64()))
    };
    let region = |coverage: Vec<f32>, phrase: &str| Region {
        width: size,
        height: size,
        coverage,
        phrase: phrase.into(),
        weight: args.weight,
    };
    let n = args.count.max(2);
    let (dx, dy, dr) = match args.disc[..] {
        [x, y, r] if [x, y, r].iter().all(|v| v.is_finite()) && r > 0.0 && (0.0..=0.5).contains(&x) => {
            (x, y, r)
        }
        _ => anyhow::bail!("--disc {:?}: choose X in [0, 0.5], a finite Y and a positive RADIUS", args.disc),
    };
    let disc_at = |left: bool| (if left { dx } else { 1.0 - dx }, dy, dr);
    let (mut placed, mut placed_without, mut secs_with, mut secs_without) = (0usize, 0usize, 0f64, 0f64);
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 6];
    for i in 0..n {
        let seed = i as u64;
        let prompt = SUN_PROMPTS[(i / 2) % SUN_PROMPTS.len()];
        let left = i % 2 == 0;
        let disc = mask(size, Some(disc_at(left)));
        // Without the region the phrase is still in the prompt: the sun appears, on either side.
        let (plain, t0) = render(&format!("{prompt} with {SUN}"), seed, Vec::new())?;
        let (painted, t1) = render(prompt, seed, vec![region(disc, SUN)])?;
        placed_without += usize::from(disc_on_side(&plain, size, left));
        placed += usize::from(disc_on_side(&painted, size, left));
        (secs_without, secs_with) = (secs_without + t0, secs_with + t1);
        if i < 16 {
            // Columns of the sheet: a seed's render without its region, and with it on its side.
            rows[if left { 0 } else { 1 }].push(plain);
            rows[if left { 2 } else { 3 }].push(painted);
        }
    }
    emit(
        "words_sun_on_painted_side",
        placed as f64 / n as f64,
        "share",
        &format!("{n} renders, weight {}", args.weight),
    );
    emit(
        "words_sun_on_side_without_region",
        placed_without as f64 / n as f64,
        "share",
        "the phrase in the prompt instead",
    );
    let (mut gained, mut bluer) = (0f64, 0usize);
    for i in 0..n {
        let seed = i as u64;
        let prompt = DESERT_PROMPTS[i % DESERT_PROMPTS.len()];
        let (plain, _) = render(prompt, seed, Vec::new())?;
        let (painted, _) = render(prompt, seed, vec![region(mask(size, None), LAKE)])?;
        let third = 2.0 / 3.0..1.0;
        let gain = blueness(&painted, size, third.clone()) - blueness(&plain, size, third);
        gained += f64::from(gain);
        bluer += usize::from(gain > BLUER);
        if i < 8 {
            rows[4].push(plain);
            rows[5].push(painted);
        }
    }
    emit(
        "words_lake_blueness_gain",
        gained / n as f64,
        "B-(R+G)/2",
        "lower third, with the region minus without",
    );
    emit(
        "words_lake_bluer",
        bluer as f64 / n as f64,
        "share",
        &format!("renders whose lower third gained over {BLUER}"),
    );
    emit(
        "words_render_time_ratio",
        secs_with / secs_without.max(1e-9),
        "ratio",
        "one region vs none, same steps",
    );
    // Sheet rows: the masks first, then the renders.
    let masks = [mask(size, Some(disc_at(true))), mask(size, Some(disc_at(false))), mask(size, None)];
    let grey = |m: &Vec<f32>| m.iter().flat_map(|&v| [v; 3]).collect::<Vec<f32>>();
    let none = vec![0.0; size * size * 3];
    for (row, first) in
        rows.iter_mut().zip([&none, &none, &grey(&masks[0]), &grey(&masks[1]), &none, &grey(&masks[2])])
    {
        row.insert(0, first.clone());
    }
    if let Some(dir) = args.sheet.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_png(&args.sheet, &sheet(&rows, size), "latent-studio eval-regions")?;
    Ok(())
}

/// One render as RGB in [0, 1].
fn render_request(pipeline: &Pipeline, request: &Request) -> anyhow::Result<Vec<f32>> {
    let rendered = pipeline
        .render(request, &mut |_| std::ops::ControlFlow::Continue(()))?
        .context("the render stopped")?;
    Ok(rendered.rgb.iter().map(|&v| f32::from(v) / 255.0).collect())
}
