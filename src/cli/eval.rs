//! `latent-studio eval`: the built-in model's quality in figures (JSON lines, as `bench`), and
//! sample sheets to look at. An attribute classifier trained on generator scenes scores prompt
//! adherence and (in its feature space) a Fréchet distance to real scenes; stroke pictures made
//! from scenes measure SDEdit's realism/faithfulness trade-off.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;

use super::bench::emit;
use super::render::ModelArgs;
use crate::core::Guidance;
use crate::dataset::scenes::{scene, stated_labels, SceneParams};
use crate::evaluation::classifier::{self, images_tensor, AttributeClassifier, ClassifierTraining, SIZE};
use crate::evaluation::frechet::{frechet_distance, Gaussian};
use crate::evaluation::paintings::{contrast_kept, layout_correlation, painting};
use crate::evaluation::sharpness::mean_edge_energy;
use crate::evaluation::strokes::strokes;
use crate::imageio::{sheet, write_png};
use crate::models::pipeline::{InitImage, Pipeline, Request};

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model to evaluate.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Pictures generated for prompt adherence and the Fréchet distance (and real scenes per set).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Stroke pictures edited at each SDEdit strength.
    #[arg(long, default_value_t = 48)]
    pub sdedit_count: usize,
    /// Classifier weights: read when the file exists, otherwise trained and written there.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Classifier training steps (64 scenes each), when it is trained.
    #[arg(long, default_value_t = 1500)]
    pub classifier_steps: usize,
    /// The sample sheet: eight prompts (columns) by four seeds (rows).
    #[arg(long, default_value = "docs/samples.png")]
    pub grid: PathBuf,
    /// The SDEdit sheet: per row a scene, its strokes, and edits at strengths 0.3, 0.5, 0.7, 0.9.
    #[arg(long, default_value = "docs/sdedit.png")]
    pub sdedit_grid: PathBuf,
    /// The paintings sheet: per row a flat-colour painting and its edits at 0.3, 0.5, 0.7, 0.9.
    #[arg(long, default_value = "docs/paintings.png")]
    pub paintings_grid: PathBuf,
    /// Guidance scale (default: the model's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Sampling steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
}

/// The sample sheet's prompts, in the captions' own grammar: every attribute appears in one.
const PROMPTS: [&str; 8] = [
    "sunset over snowy mountains with a lake",
    "the sea at night with a pale moon and many stars",
    "a view of desert dunes at noon with a bright sun",
    "a forest at dawn with clouds",
    "a view of a still lake with a pine forest at dusk with a pale moon",
    "farm fields with hills during the day with fluffy clouds",
    "the ocean with a sandy beach at sundown with a bright sun",
    "a dark night over snowy mountains with pine trees with a full moon",
];
/// SDEdit strengths measured; the sheet shows the ones in [`SHEET_STRENGTHS`].
const STRENGTHS: [f64; 8] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
const SHEET_STRENGTHS: [f64; 4] = [0.3, 0.5, 0.7, 0.9];
/// Seeds of the scenes behind each set; all below the training seeds (2^32 and up).
const SET_A: u64 = 0;
const SET_B: u64 = 1 << 20;
const SDEDIT_SET: u64 = 2 << 20;
const PAINTING_SET: u64 = 3 << 20;
const CLASSIFIER_SEEDS: u64 = 1 << 40;
/// What the paintings' figures are reported for, in [`Element::kind`](crate::evaluation::paintings::Element)'s words.
const PAINTED_KINDS: [&str; 5] = ["disc", "peak", "water", "beach", "trees"];

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let pipeline = args.model.load()?;
    let size = pipeline.image_size();
    if size % SIZE != 0 {
        anyhow::bail!("the model draws {size}x{size} pictures; the judge reads multiples of {SIZE}");
    }
    let net = classifier_for(args)?;
    let judge = Judge { net: &net, size };
    let settings = Settings {
        steps: args.steps.unwrap_or(pipeline.defaults().steps),
        guidance: args.guidance.unwrap_or(pipeline.defaults().guidance),
        size,
    };
    eprintln!("{} steps, guidance {}", settings.steps, settings.guidance);
    let generate = |prompt: &str, seed: u64, sdedit: Option<(&Vec<f32>, f64)>| {
        generate(&pipeline, settings, prompt, seed, sdedit)
    };
    let n = args.count.max(2);

    // The classifier on fresh scenes: two sets, A (whose captions are then generated) and B.
    let set = |first: u64| (first..first + n as u64).map(|s| scene(s, size)).collect::<Vec<_>>();
    let (real_a, real_b) = (set(SET_A), set(SET_B));
    let real_images = |v: &[crate::dataset::Scene]| v.iter().map(|s| s.image.clone()).collect::<Vec<_>>();
    let (images_a, images_b) = (real_images(&real_a), real_images(&real_b));
    let mut predicted = judge.predict(&images_a)?;
    predicted.extend(judge.predict(&images_b)?);
    let labels: Vec<_> = real_a.iter().chain(&real_b).map(|s| s.params.labels()).collect();
    report_accuracy(
        "classifier",
        &classifier::accuracy(&predicted, &labels),
        "fresh generator scenes; goal >= 0.95",
    );

    // The autoencoder alone: set A's scenes encoded and decoded.
    let decoded =
        images_a.iter().map(|i| round_trip(&pipeline, i, size)).collect::<anyhow::Result<Vec<_>>>()?;
    let psnr = images_a.iter().zip(&decoded).map(|(a, d)| psnr_db(a, d)).sum::<f64>() / n as f64;
    emit("autoencoder_psnr", psnr, "dB", &format!("{n} scenes encoded and decoded, mean PSNR"));
    let edges = mean_edge_energy(&decoded, size) / mean_edge_energy(&images_a, size).max(1e-12);
    emit("autoencoder_edge_energy_ratio", edges, "", "decoded / original scenes");

    // Prompt adherence: pictures generated from set A's captions, scored on what each caption states.
    let bar = super::progress::Bar::new("generate");
    let mut generated = Vec::with_capacity(n);
    for (i, s) in real_a.iter().enumerate() {
        generated.push(generate(&s.caption, SET_A + i as u64, None)?);
        bar.update(i + 1, n);
    }
    let stated: Vec<_> =
        (0..n as u64).map(|i| stated_labels(&SceneParams::random(SET_A + i), SET_A + i)).collect();
    let adherence = classifier::accuracy(&judge.predict(&generated)?, &stated);
    report_accuracy("adherence", &adherence, "generated from the scenes' captions; goal >= 0.85");

    let gaussian_b = judge.gaussian(&images_b)?;
    // The floor the UNet works above: the autoencoder's own decodings against fresh scenes.
    emit(
        "frechet_autoencoder",
        frechet_distance(&judge.gaussian(&decoded)?, &gaussian_b),
        "",
        &format!("{n} scenes encoded and decoded vs {n} fresh scenes"),
    );
    let fd_generated = frechet_distance(&judge.gaussian(&generated)?, &gaussian_b);
    let fd_real = frechet_distance(&judge.gaussian(&images_a)?, &gaussian_b);
    emit(
        "frechet_generated",
        fd_generated,
        "",
        &format!("{n} generated vs {n} fresh scenes, classifier features"),
    );
    emit("frechet_real", fd_real, "", &format!("{n} fresh scenes vs {n} other fresh scenes: the scale"));
    let (edges_generated, edges_real) =
        (mean_edge_energy(&generated, size), mean_edge_energy(&images_a, size));
    let note = format!("mean |luminance step| between neighbouring pixels, {size}x{size}, [0,1] units");
    emit("edge_energy_generated", edges_generated, "", &format!("{n} generated pictures; {note}"));
    emit("edge_energy_scenes", edges_real, "", &format!("their {n} scenes; {note}"));
    emit(
        "edge_energy_ratio",
        edges_generated / edges_real.max(1e-12),
        "",
        "generated / scenes; goal 0.75-1.5",
    );

    // SDEdit: realism (Fréchet distance to real scenes) against faithfulness (RMS distance to the strokes).
    let scenes: Vec<_> = (0..args.sdedit_count.max(2) as u64).map(|i| scene(SDEDIT_SET + i, size)).collect();
    // Blocks of a sixteenth of the side, six colours: the same strokes at any size.
    let painted: Vec<Vec<f32>> = scenes.iter().map(|s| strokes(&s.image, size, size / 16, 6)).collect();
    emit(
        "sdedit_strokes_frechet",
        frechet_distance(&judge.gaussian(&painted)?, &gaussian_b),
        "",
        "the stroke pictures themselves (strength 0)",
    );
    let mut sheet_rows: Vec<Vec<Vec<f32>>> =
        scenes.iter().zip(&painted).take(4).map(|(s, p)| vec![s.image.clone(), p.clone()]).collect();
    let bar = super::progress::Bar::new("sdedit");
    for (k, &strength) in STRENGTHS.iter().enumerate() {
        let mut edited = Vec::with_capacity(scenes.len());
        for (i, (s, p)) in scenes.iter().zip(&painted).enumerate() {
            let seed = SDEDIT_SET + i as u64;
            edited.push(generate(&s.caption, seed, Some((p, strength)))?);
            bar.update(k * scenes.len() + i + 1, STRENGTHS.len() * scenes.len());
        }
        let distance = edited.iter().zip(&painted).map(|(e, p)| rms(e, p)).sum::<f64>() / edited.len() as f64;
        let realism = frechet_distance(&judge.gaussian(&edited)?, &gaussian_b);
        let stated: Vec<_> =
            scenes.iter().zip(SDEDIT_SET..).map(|(s, seed)| stated_labels(&s.params, seed)).collect();
        let adherence = classifier::overall(&classifier::accuracy(&judge.predict(&edited)?, &stated));
        let note = format!("strength {strength}, {} stroke pictures", scenes.len());
        emit(
            &format!("sdedit_{strength}_stroke_rms"),
            distance,
            "",
            &format!("{note}; RMS to the strokes, [0,1] pixels"),
        );
        emit(&format!("sdedit_{strength}_frechet"), realism, "", &format!("{note}; vs fresh scenes"));
        emit(&format!("sdedit_{strength}_adherence"), adherence, "share", &note);
        if SHEET_STRENGTHS.contains(&strength) {
            for (row, e) in sheet_rows.iter_mut().zip(&edited) {
                row.push(e.clone());
            }
        }
    }
    write_sheet(&args.sdedit_grid, &sheet_rows, size)?;
    painting_figures(args, size, &generate)?;

    // The sample sheet.
    let bar = super::progress::Bar::new("samples");
    let mut rows = Vec::new();
    for seed in 1..=4u64 {
        let mut row = Vec::new();
        for prompt in PROMPTS {
            row.push(generate(prompt, seed, None)?);
            bar.update((seed as usize - 1) * PROMPTS.len() + row.len(), 4 * PROMPTS.len());
        }
        rows.push(row);
    }
    write_sheet(&args.grid, &rows, size)?;
    eprintln!(
        "wrote {}, {} and {}",
        args.grid.display(),
        args.sdedit_grid.display(),
        args.paintings_grid.display()
    );
    Ok(())
}

/// Draws one picture: prompt, seed, and an SDEdit start (picture, strength).
type Generate<'a> = dyn Fn(&str, u64, Option<(&Vec<f32>, f64)>) -> anyhow::Result<Vec<f32>> + 'a;

/// SDEdit on flat-colour paintings: at each strength, how much of each painted element's
/// contrast with its background stays (disc, peak, water, beach, trees), and how well the
/// picture's 8×8 luminance layout follows the painting's; a sheet of the first four.
fn painting_figures(args: &EvalArgs, size: usize, generate: &Generate) -> anyhow::Result<()> {
    let paintings: Vec<_> =
        (0..args.sdedit_count.max(2) as u64).map(|i| painting(PAINTING_SET + i, size)).collect();
    let mut sheet_rows: Vec<Vec<Vec<f32>>> =
        paintings.iter().take(4).map(|p| vec![p.image.clone()]).collect();
    let bar = super::progress::Bar::new("paintings");
    for (k, &strength) in STRENGTHS.iter().enumerate() {
        let mut kept: Vec<(&str, f64)> = Vec::new();
        let mut layout = 0.0;
        for (i, p) in paintings.iter().enumerate() {
            let edited = generate(&p.caption, PAINTING_SET + i as u64, Some((&p.image, strength)))?;
            kept.extend(p.elements.iter().map(|e| (e.kind, contrast_kept(e, &p.image, &edited))));
            layout += layout_correlation(&p.image, &edited, size, 8) / paintings.len() as f64;
            if let Some(row) = sheet_rows.get_mut(i).filter(|_| SHEET_STRENGTHS.contains(&strength)) {
                row.push(edited);
            }
            bar.update(k * paintings.len() + i + 1, STRENGTHS.len() * paintings.len());
        }
        let note = format!("strength {strength}, {} flat-colour paintings", paintings.len());
        for kind in PAINTED_KINDS {
            let shares: Vec<f64> = kept.iter().filter(|(k, _)| *k == kind).map(|(_, v)| *v).collect();
            let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
            let detail = format!("{note}; {} {kind}s, their luminance contrast with what is beside them kept, mean share; goal >= 0.5 at 0.5", shares.len());
            emit(&format!("sdedit_{strength}_{kind}_contrast_kept"), mean, "share", &detail);
        }
        let detail = format!("{note}; 8x8 mean-luminance correlation with the painting; goal >= 0.8 at 0.5");
        emit(&format!("sdedit_{strength}_layout_correlation"), layout, "", &detail);
    }
    write_sheet(&args.paintings_grid, &sheet_rows, size)
}

/// The classifier: read from `--classifier` when that file exists, else trained (and saved there).
fn classifier_for(args: &EvalArgs) -> anyhow::Result<AttributeClassifier> {
    if let Some(path) = args.classifier.as_ref().filter(|p| p.exists()) {
        return classifier::load(path).with_context(|| format!("reading the classifier {}", path.display()));
    }
    let opts = ClassifierTraining {
        steps: args.classifier_steps.max(1),
        batch: 64,
        learning_rate: 2e-3,
        first_seed: CLASSIFIER_SEEDS,
    };
    let start = std::time::Instant::now();
    let mut loss = 0.0;
    let trained = classifier::train(&opts, &mut |step, l| {
        loss = if step == 1 { l } else { 0.95 * loss + 0.05 * l };
        let eta = start.elapsed().as_secs_f64() / step as f64 * (opts.steps - step) as f64;
        if step % 10 == 0 || step == opts.steps {
            super::progress::draw("classifier", step, opts.steps, &format!("loss {loss:.3} "), eta);
        }
    })?;
    if let Some(path) = &args.classifier {
        trained.weights.save(path).with_context(|| format!("writing the classifier {}", path.display()))?;
    }
    Ok(trained.classifier)
}

/// The classifier applied in batches, to pictures of `size` box-filtered to the judge's side.
struct Judge<'a> {
    net: &'a AttributeClassifier,
    size: usize,
}

impl Judge<'_> {
    const BATCH: usize = 64;

    fn predict(&self, images: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<usize>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(Self::BATCH) {
            out.extend(self.net.predict(&self.tensor(chunk)?)?);
        }
        Ok(out)
    }

    fn gaussian(&self, images: &[Vec<f32>]) -> anyhow::Result<Gaussian> {
        let mut features = Vec::with_capacity(images.len());
        for chunk in images.chunks(Self::BATCH) {
            features.extend(self.net.features(&self.tensor(chunk)?)?.to_vec2::<f32>()?);
        }
        Ok(Gaussian::fit(&features))
    }

    fn tensor(&self, images: &[Vec<f32>]) -> anyhow::Result<candle_core::Tensor> {
        let small: Vec<Vec<f32>> = images.iter().map(|i| box_downsample(i, self.size, SIZE)).collect();
        Ok(images_tensor(&small, &Device::Cpu)?)
    }
}

/// A square RGB picture (channels last) of side `from` shrunk to `to` (which divides it) by
/// averaging blocks.
fn box_downsample(image: &[f32], from: usize, to: usize) -> Vec<f32> {
    if from == to {
        return image.to_vec();
    }
    let k = from / to;
    let mut out = vec![0f32; to * to * 3];
    for y in 0..from {
        for x in 0..from {
            for c in 0..3 {
                out[((y / k) * to + x / k) * 3 + c] += image[(y * from + x) * 3 + c] / (k * k) as f32;
            }
        }
    }
    out
}

/// Steps, guidance and size of every picture `eval` makes.
#[derive(Debug, Clone, Copy)]
struct Settings {
    steps: usize,
    guidance: f64,
    size: usize,
}

/// One picture with the model's sampler, as `size`×`size` values in [0, 1], channels last;
/// `sdedit` starts it from a stroke picture at a strength.
fn generate(
    pipeline: &Pipeline,
    settings: Settings,
    prompt: &str,
    seed: u64,
    sdedit: Option<(&Vec<f32>, f64)>,
) -> anyhow::Result<Vec<f32>> {
    let (sampler, _) = pipeline.default_sampler();
    let init_image = match sdedit {
        Some((picture, strength)) => {
            Some(InitImage { image: picture_tensor(picture, settings.size)?, strength, mask: None })
        }
        None => None,
    };
    let request = Request {
        prompt: prompt.into(),
        negative: String::new(),
        sampler,
        options: Default::default(),
        steps: settings.steps,
        guidance: Guidance { scale: settings.guidance, ..Guidance::default() },
        seed,
        size: Some((settings.size, settings.size)),
        init_latent: None,
        init_image,
        prompt_to: None,
        regions: Vec::new(),
    };
    let rendered = pipeline
        .render(&request, &mut |_| std::ops::ControlFlow::Continue(()))?
        .context("the render stopped")?;
    Ok(rendered.rgb.iter().map(|&v| f32::from(v) / 255.0).collect())
}

/// `[1, 3, size, size]` in [-1, 1] from a picture with channels last, values in [0, 1].
fn picture_tensor(picture: &[f32], size: usize) -> anyhow::Result<candle_core::Tensor> {
    let planar: Vec<f32> =
        (0..3).flat_map(|c| picture.iter().skip(c).step_by(3).map(|v| v * 2.0 - 1.0)).collect();
    Ok(candle_core::Tensor::from_vec(planar, (1, 3, size, size), &Device::Cpu)?)
}

/// A picture (channels last, [0, 1]) through the model's encoder and decoder.
fn round_trip(pipeline: &Pipeline, picture: &[f32], size: usize) -> anyhow::Result<Vec<f32>> {
    let latent = pipeline.encode_image(&picture_tensor(picture, size)?)?;
    Ok(pipeline.decode(&latent)?.iter().map(|&v| f32::from(v) / 255.0).collect())
}

/// Peak signal-to-noise ratio in dB of `b` against `a` (values in [0, 1]).
fn psnr_db(a: &[f32], b: &[f32]) -> f64 {
    let mse = rms(a, b).powi(2);
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (sum / a.len().max(1) as f64).sqrt()
}

/// Prints the overall share and one line per attribute that was scored.
fn report_accuracy(prefix: &str, per_attribute: &[(&str, f64, usize)], note: &str) {
    emit(&format!("{prefix}_accuracy"), classifier::overall(per_attribute), "share", note);
    for (name, share, seen) in per_attribute.iter().filter(|(_, _, n)| *n > 0) {
        emit(&format!("{prefix}_{name}"), *share, "share", &format!("{seen} labels"));
    }
}

/// Writes rows of `size`×`size` pictures, 4 pixels apart, each at least 128 pixels wide
/// (small pictures enlarged by a whole factor).
fn write_sheet(path: &std::path::Path, rows: &[Vec<Vec<f32>>], size: usize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_png(path, &sheet(rows, size), "latent-studio eval")?;
    Ok(())
}
