//! `latent-studio bench`: timings as JSON lines `{"name", "value", "unit", "threads", "note"}`.
//! Weights are zeros (dense CPU kernels take the same time whatever the values) or, with
//! `--random-weights`, drawn at random (what a GPU check times). The networks run on `--device`
//! in its default precision (f32 on the CPU, f16 on a GPU).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::json;

use crate::core::samplers::SamplerKind;
use crate::core::{
    Conditioning, Guidance, ModelDenoiser, Network, PredictionType, SampleContext, SeededNoise, StepView,
};
use crate::engine::spec::ModelSource;
use crate::engine::studio::{StudioBackend, StudioJob, Task};
use crate::engine::{Engine, EventKind, OutputKey, Urgency};
use crate::models::autoencoder::{Autoencoder, AutoencoderConfig};
use crate::models::layers::count_flops;
use crate::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};
use crate::models::tiny_vae::TinyVae;
use crate::models::unet::UNet;
use crate::models::vae::VaeConfig;
use crate::training::builtin::{scheduler_config, unet_config, vae_config, IMAGE_SIZE, MAX_TOKENS};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model for the engine figures (the built-in model by default).
    #[arg(long, default_value = "builtin")]
    pub model: PathBuf,
    /// Run only the figures whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// More models for the `device_parity` figures (diffusers folders or single files), beside
    /// the built-in ones.
    #[arg(long = "parity-model")]
    pub parity_models: Vec<PathBuf>,
    /// Draw the synthetic networks' weights at random instead of zeros.
    #[arg(long)]
    pub random_weights: bool,
}

/// Where the synthetic networks run, in which precision: `--device`'s, as models load.
pub(super) fn target() -> (Device, DType) {
    let LoadOptions { device, dtype, .. } = LoadOptions::default();
    (device, dtype)
}

/// Weights for the synthetic networks: zeros, or random where `random`.
pub(super) fn weights(random: bool, dtype: DType, dev: &Device) -> VarBuilder<'static> {
    if random {
        VarBuilder::from_backend(Box::new(RandomWeights), dtype, dev.clone())
    } else {
        VarBuilder::zeros(dtype, dev)
    }
}

/// Random weights of the scale a trained network has: the init's constant where it asks for one
/// other than zero (norms' scales), else N(0, 1/fan-in).
struct RandomWeights;

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: candle_core::Shape,
        _name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let candle_nn::Init::Const(value) = init {
            if value != 0.0 {
                return Tensor::full(value as f32, shape, dev)?.to_dtype(dtype);
            }
        }
        let fan_in: usize = shape.dims().iter().skip(1).product();
        let std = 1.0 / (fan_in.max(1) as f64).sqrt();
        Tensor::randn(0f32, std as f32, shape, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights have no shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Prints one figure as a JSON line; a closed stdout (`bench | head -1`) is not an error.
pub(super) fn emit(name: &str, value: f64, unit: &str, note: &str) {
    use std::io::Write;
    let line = json!({"name": name, "value": value, "unit": unit, "threads": threads(), "note": note});
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Median seconds of `repeat` runs of `f`, after one warm-up run; each waits for the device's
/// queued work (a GPU returns before its kernels have run).
pub(super) fn median_secs(repeat: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let device = target().0;
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (dev, dtype) = target();
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    // The practical ceiling: measured first whenever a figure is compared with it.
    let needs_ceiling = ["matmul_f32", "builtin_unet_eval", "sd15_unet_eval_256"].iter().any(|n| wanted(n));
    let ceiling = if needs_ceiling { Some(matmul_rate()?) } else { None };
    if let (true, Some(rate)) = (wanted("matmul_f32"), ceiling) {
        emit(
            "matmul_f32",
            rate / 1e9,
            "GFLOP/s",
            "1024x1024 by 1024x1024, best of 20: the practical ceiling",
        );
    }
    let vb = weights(args.random_weights, dtype, &dev);
    if let (true, Some(rate)) = (wanted("builtin_unet_eval"), ceiling) {
        let unet = UNet::new(&unet_config(), vb.clone())?;
        let c = unet_config();
        let x = Tensor::zeros((2, c.in_channels, c.sample_size, c.sample_size), dtype, &dev)?;
        let ctx = Tensor::zeros((2, MAX_TOKENS, c.cross_attention_dim), dtype, &dev)?;
        network_figures(
            "builtin_unet_eval",
            "built-in UNet, batch 2 (guidance), 16x16 latent",
            &unet,
            &x,
            &ctx,
            rate,
            args.repeat,
        )?;
    }
    if wanted("builtin_vae_encode") || wanted("builtin_vae_decode") {
        let vae = TinyVae::new(&vae_config(), vb.clone())?;
        let (f, c, size) = (vae.config().downscale(), vae.config().latent_channels, IMAGE_SIZE);
        let image = Tensor::zeros((1, 3, size, size), dtype, &dev)?;
        let secs = median_secs(args.repeat, || Ok(vae.encode(&image).map(|_| ())?))?;
        emit(
            "builtin_vae_encode",
            secs * 1e3,
            "ms",
            &format!("{size}x{size} RGB to a {0}x{0}x{c} latent", size / f),
        );
        let z = Tensor::zeros((1, c, size / f, size / f), dtype, &dev)?;
        let secs = median_secs(args.repeat, || Ok(vae.decode(&z).map(|_| ())?))?;
        emit(
            "builtin_vae_decode",
            secs * 1e3,
            "ms",
            &format!("{0}x{0}x{c} latent to {size}x{size} RGB", size / f),
        );
    }
    if let (true, Some(rate)) = (wanted("sd15_unet_eval_256"), ceiling) {
        let unet = UNet::new(&super::bench_fast_models::sd15_unet(), vb.clone())?;
        let x = Tensor::zeros((1, 4, 32, 32), dtype, &dev)?;
        let ctx = Tensor::zeros((1, 77, 768), dtype, &dev)?;
        network_figures(
            "sd15_unet_eval_256",
            "SD 1.5 UNet, batch 1, 256x256 (32x32 latent)",
            &unet,
            &x,
            &ctx,
            rate,
            args.repeat.min(3),
        )?;
    }
    if wanted("sd15_vae_decode_256") {
        // As the pipeline runs it: in f32 inside an f16 model (`force_upcast`).
        let vae = Autoencoder::new(&AutoencoderConfig::Kl(VaeConfig::default()), vb.clone())?;
        let z = Tensor::zeros((1, 4, 32, 32), dtype, &dev)?;
        let secs = median_secs(args.repeat.min(3), || Ok(vae.decode_scaled(&z).map(|_| ())?))?;
        emit("sd15_vae_decode_256", secs * 1e3, "ms", "SD 1.5 VAE, 32x32x4 latent to 256x256 RGB");
    }
    super::bench_fast_models::run(args.repeat, args.random_weights, &wanted)?;
    if wanted("device_parity") {
        super::bench_device::run(&args.parity_models)?;
    }
    if wanted("sampler_overhead") {
        sampler_overhead(args.repeat)?;
    }
    if wanted("builtin_render") || wanted("builtin_sdedit") {
        render_figures(&args.model, args.repeat, &wanted)?;
    }
    if wanted("live_frame") || wanted("live_fps") {
        live_figures(&args.model)?;
    }
    if wanted("engine") {
        engine_figures(&args.model)?;
    }
    if wanted("ui_frame") || wanted("studio_resident") {
        ui_figures();
    }
    Ok(())
}

/// The machine's f32 matrix-multiply rate in FLOP/s: the best of 20 products, since a ceiling
/// is what the machine can reach (a shared machine's noise only ever lowers it).
fn matmul_rate() -> anyhow::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?;
    let mut best = f64::INFINITY;
    for _ in 0..20 {
        let t = Instant::now();
        a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best)
}

/// One UNet evaluation: its time, its arithmetic and the share of the ceiling it reaches.
fn network_figures(
    name: &str,
    note: &str,
    unet: &UNet,
    x: &Tensor,
    ctx: &Tensor,
    ceiling: f64,
    repeat: usize,
) -> anyhow::Result<()> {
    let t = Tensor::full(500f32, x.dim(0)?, x.device())?;
    let (result, flops) = count_flops(|| unet.forward(x, &t, ctx));
    result?;
    let secs = median_secs(repeat, || Ok(unet.forward(x, &t, ctx).map(|_| ())?))?;
    emit(name, secs * 1e3, "ms", note);
    emit(
        &format!("{name}_gflop"),
        flops as f64 / 1e9,
        "GFLOP",
        "convolutions (counted as direct convolutions), linear layers and attention products",
    );
    if x.device().is_cpu() {
        emit(
            &format!("{name}_ceiling_share"),
            flops as f64 / secs / ceiling,
            "share",
            "the counted FLOP/s over the measured matmul_f32 rate (Winograd convolutions do fewer multiplies than counted)",
        );
    }
    Ok(())
}

/// A network that costs nothing: what remains of a sampling loop is the sampler's own work.
struct Passthrough;

impl Network for Passthrough {
    fn forward(
        &mut self,
        x: &Tensor,
        _timestep: f64,
        _context: Option<&Tensor>,
    ) -> crate::core::Result<Tensor> {
        Ok(x.clone())
    }
}

/// Everything of a DDIM step with guidance that is not the network: batching the guided pair,
/// combining the predictions, the update, the step callback.
fn sampler_overhead(repeat: usize) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let steps = 20;
    let sampler = SamplerKind::Ddim.build(&scheduler_config(), steps, &Default::default())?;
    let cond = Tensor::zeros((1, 16, 64), DType::F32, &dev)?;
    let noise = Tensor::randn(0f32, 1.0, (1, 4, 16, 16), &dev)?;
    let secs = median_secs(repeat, || {
        let mut network = Passthrough;
        let conditioning = Conditioning::Guided {
            cond: cond.clone(),
            uncond: cond.clone(),
            guidance: Guidance { scale: 5.0, ..Guidance::none() },
        };
        let mut denoiser = ModelDenoiser::new(&mut network, PredictionType::Epsilon, conditioning)?;
        let mut step_noise = SeededNoise::new(2);
        let mut callback = |_: &StepView<'_>| std::ops::ControlFlow::Continue(());
        let mut ctx = SampleContext {
            denoiser: &mut denoiser,
            noise: &mut step_noise,
            callback: &mut callback,
            inpaint: None,
        };
        sampler.sample(&noise, &mut ctx)?;
        Ok(())
    })?;
    emit(
        "sampler_overhead_per_step",
        secs / steps as f64 * 1e3,
        "ms",
        "DDIM with guidance 5 on a 16x16x4 latent, network replaced by a pass-through",
    );
    Ok(())
}

/// Whole renders with the trained model through the pipeline: text-to-image and SDEdit.
fn render_figures(
    model: &std::path::Path,
    repeat: usize,
    wanted: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let path = ModelSource::from_arg(model).path();
    let pipeline = Pipeline::load(&path, &LoadOptions::default())?;
    let Task::Render(request) = render_job(5.0, 20).task else { anyhow::bail!("not a render") };
    let render = |request: &Request| -> anyhow::Result<()> {
        pipeline.render(request, &mut |_| std::ops::ControlFlow::Continue(()))?;
        Ok(())
    };
    let size = pipeline.image_size();
    if wanted("builtin_render") {
        let secs = median_secs(repeat, || render(&request))?;
        emit(
            "builtin_render_20_steps",
            secs * 1e3,
            "ms",
            &format!("DDIM 20 steps, guidance 5, text to {size}x{size} picture; goal <= 150"),
        );
    }
    if wanted("builtin_sdedit") {
        let picture = Tensor::zeros((1, 3, size, size), DType::F32, &target().0)?;
        let sdedit = Request {
            init_image: Some(InitImage { image: picture, strength: 0.5, mask: None }),
            ..(*request).clone()
        };
        let secs = median_secs(repeat, || render(&sdedit))?;
        emit(
            "builtin_sdedit_0.5",
            secs * 1e3,
            "ms",
            "SDEdit at strength 0.5: 10 of 20 DDIM steps, guidance 5",
        );
    }
    Ok(())
}

/// The studio's per-frame CPU time and frame interval while the engine renders continuously.
fn ui_figures() {
    let dir = std::env::temp_dir().join(format!("latent-studio-bench-{}", std::process::id()));
    let times = crate::app::bench::frame_times(Duration::from_secs(5), dir.clone());
    let _ = std::fs::remove_dir_all(&dir);
    let q = crate::app::bench::quantile;
    let note = format!("built-in model rendering throughout; {} renders finished in 5 s", times.renders);
    if let Some(mb) = times.resident_mb {
        emit(
            "studio_resident_mb",
            mb,
            "MB",
            "this process after the studio ran with the built-in model (headless: no window renderer); goal < 500",
        );
    }
    emit("ui_frame_cpu_median", q(&times.frame_ms, 0.5), "ms", &note);
    emit("ui_frame_cpu_p99", q(&times.frame_ms, 0.99), "ms", &note);
    emit("ui_frame_interval_median", q(&times.interval_ms, 0.5), "ms", "frames asked for every 16 ms");
    emit(
        "ui_frame_interval_p99",
        q(&times.interval_ms, 0.99),
        "ms",
        "frames asked for every 16 ms; goal <= 16",
    );
}

pub(super) fn render_job(guidance: f64, steps: usize) -> StudioJob {
    StudioJob {
        output: OutputKey("output".into()),
        task: Task::Render(Box::new(Request {
            prompt: "sunset over snowy mountains with a lake".into(),
            negative: String::new(),
            sampler: SamplerKind::Ddim,
            options: Default::default(),
            steps,
            guidance: Guidance { scale: guidance, ..Guidance::none() },
            seed: 1,
            size: None,
            init_latent: None,
            init_image: None,
            prompt_to: None,
            regions: Vec::new(),
        })),
    }
}

/// Waits for the first event of `job` matching `pred`; returns when it came.
fn wait_for(
    engine: &Engine<StudioJob>,
    pred: impl Fn(&crate::engine::Event) -> bool,
) -> anyhow::Result<Instant> {
    loop {
        let e = engine.events().recv_timeout(Duration::from_secs(120))?;
        if let EventKind::Failed { error } = &e.kind {
            anyhow::bail!("engine job failed: {error}");
        }
        if pred(&e) {
            return Ok(Instant::now());
        }
    }
}

/// The engine on a real model: first preview, cancel latency, renders during a drag.
fn engine_figures(model: &std::path::Path) -> anyhow::Result<()> {
    let path = ModelSource::from_arg(model).path();
    let engine = Engine::spawn(StudioBackend::default(), Arc::new(|| {}))?;
    let load = Task::LoadModel { path, options: LoadOptions::default() };
    engine.submit(StudioJob { output: OutputKey("model".into()), task: load }, Urgency::Discrete);
    wait_for(&engine, |e| matches!(e.kind, EventKind::Done { .. }))?;

    // One whole 20-step render, for scale.
    let t = Instant::now();
    let id = engine.submit(render_job(5.0, 20), Urgency::Discrete);
    wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Done { .. }))?;
    let render_secs = t.elapsed().as_secs_f64();
    emit("engine_render_20_steps", render_secs * 1e3, "ms", "DDIM 20 steps, guidance 5, through the engine");

    let t = Instant::now();
    let id = engine.submit(render_job(5.0, 20), Urgency::Discrete);
    let first = wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Progress { .. }))?;
    emit("engine_first_preview", (first - t).as_secs_f64() * 1e3, "ms", "submit to first step preview");
    wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Done { .. }))?;

    let id = engine.submit(render_job(5.0, 200), Urgency::Discrete);
    wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Progress { step: 3, .. }))?;
    let t = Instant::now();
    let next = engine.submit(render_job(4.0, 20), Urgency::Discrete);
    let cancelled = wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Cancelled))?;
    emit(
        "engine_cancel_latency",
        (cancelled - t).as_secs_f64() * 1e3,
        "ms",
        "discrete change to the old job's end",
    );
    wait_for(&engine, |e| e.job == next && matches!(e.kind, EventKind::Done { .. }))?;

    // A slider dragged for 5 s, one change every 16 ms.
    let start = Instant::now();
    let mut done = 0usize;
    let mut last = None;
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(5) {
        last = Some(engine.submit(render_job(3.0 + f64::from(i % 100) * 0.05, 20), Urgency::Drag));
        i += 1;
        let tick = Instant::now() + Duration::from_millis(16);
        while let Ok(e) = engine.events().recv_deadline(tick) {
            done += usize::from(matches!(e.kind, EventKind::Done { .. }));
        }
    }
    if let Some(last) = last {
        wait_for(&engine, |e| e.job == last && matches!(e.kind, EventKind::Done { .. }))?;
    }
    emit(
        "engine_drag_renders_per_s",
        done as f64 / 5.0,
        "1/s",
        &format!("a change every 16 ms for 5 s; one render alone takes {:.0} ms", render_secs * 1e3),
    );
    Ok(())
}

/// Live mode's frames: a scripted five-second stroke through the engine on the live student
/// (`--model builtin` means its student; another model is used as it is). Every 16 ms (a 60 Hz
/// pointer) the stroke grows by a point and the canvas is submitted as a drag-urgency SDEdit
/// job at strength 0.5; each frame rasterises, encodes, runs the student's evaluations, decodes
/// and hands the picture over. `live_frame` is the median time from a frame's start to its
/// picture's arrival, `live_fps` the frames delivered per second; the teacher's 20-step render
/// through the same engine sets the ratio.
fn live_figures(model: &std::path::Path) -> anyhow::Result<()> {
    use crate::engine::spec::{ImageSpec, InitSpec, NoiseSpec, RenderSpec};
    use crate::sketch::{Canvas, Stroke};
    let source = match ModelSource::from_arg(model) {
        ModelSource::Builtin => ModelSource::BuiltinLive,
        other => other,
    };
    let engine = Engine::spawn(StudioBackend::default(), Arc::new(|| {}))?;
    let load = Task::LoadModel { path: source.path(), options: LoadOptions::default() };
    engine.submit(StudioJob { output: OutputKey("model".into()), task: load }, Urgency::Discrete);
    wait_for(&engine, |e| matches!(e.kind, EventKind::Done { .. }))?;
    // The first-start sketch, and a sun-coloured stroke painted across it.
    let sketch = Canvas::default();
    let spec = |canvas: Canvas| RenderSpec {
        model: source.clone(),
        loras: Vec::new(),
        vae: None,
        prompt: "sunset over snowy mountains with a lake".into(),
        negative: String::new(),
        prompt_to: None,
        regions: Vec::new(),
        sampler: SamplerKind::Lcm,
        steps: None,
        spacing: None,
        karras: None,
        eta: 0.0,
        guidance: 5.0,
        rescale: 0.0,
        noise: NoiseSpec::Seed(1),
        init: Some(InitSpec { image: ImageSpec::Canvas { canvas, base: None }, strength: 0.5, mask: None }),
    };
    let job =
        |spec: RenderSpec| StudioJob { output: OutputKey("live".into()), task: Task::Spec(Box::new(spec)) };
    // A warm-up frame (conditioning, caches).
    let id = engine.submit(job(spec(sketch.clone())), Urgency::Discrete);
    wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Done { .. }))?;

    let mut stroke = Stroke { color: [250, 215, 90], radius: 0.06, points: vec![], ..sketch.brush.clone() };
    let (mut started, mut frames) = (std::collections::HashMap::new(), Vec::new());
    // A frame lasts from its job's start to its picture's arrival here.
    let mut record = |e: crate::engine::Event, frames: &mut Vec<f64>| match e.kind {
        EventKind::Started => {
            started.insert(e.job, Instant::now());
        }
        EventKind::Done { .. } => {
            if let Some(t) = started.remove(&e.job) {
                frames.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        EventKind::Failed { error } => eprintln!("live frame failed: {error}"),
        _ => {}
    };
    let start = Instant::now();
    let mut last = id;
    while start.elapsed() < Duration::from_secs(5) {
        let p = start.elapsed().as_secs_f32() / 5.0;
        stroke.points.push([0.15 + 0.7 * p, 0.35 + 0.15 * (p * 6.0).sin(), 1.0]);
        let mut canvas = sketch.clone();
        canvas.push(stroke.clone());
        last = engine.submit(job(spec(canvas)), Urgency::Drag);
        let tick = Instant::now() + Duration::from_millis(16);
        while let Ok(e) = engine.events().recv_deadline(tick) {
            record(e, &mut frames);
        }
    }
    let delivered = frames.len();
    loop {
        let e = engine.events().recv_timeout(Duration::from_secs(60))?;
        let end = e.job == last && !matches!(e.kind, EventKind::Started | EventKind::Progress { .. });
        record(e, &mut frames);
        if end {
            break;
        }
    }
    frames.sort_by(f64::total_cmp);
    let at =
        |q: f64| frames.get(((frames.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let (median, p95) = (at(0.5), at(0.95));

    // The teacher's whole 20-step render through the same engine, for the ratio.
    let teacher = Task::LoadModel { path: ModelSource::Builtin.path(), options: LoadOptions::default() };
    engine.submit(StudioJob { output: OutputKey("model".into()), task: teacher }, Urgency::Discrete);
    wait_for(&engine, |e| matches!(e.kind, EventKind::Done { .. }))?;
    let mut renders = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let id = engine.submit(render_job(5.0, 20), Urgency::Discrete);
        wait_for(&engine, |e| e.job == id && matches!(e.kind, EventKind::Done { .. }))?;
        renders.push(t.elapsed().as_secs_f64() * 1e3);
    }
    renders.sort_by(f64::total_cmp);
    let teacher_ms = renders[renders.len() / 2];
    emit(
        "live_frame",
        median,
        "ms",
        &format!(
            "{}: median of {} frames of a 5 s stroke (SDEdit 0.5, its default steps), p95 {p95:.1} ms; \
             {:.2}x the teacher's 20-step render ({teacher_ms:.1} ms)",
            source.name(),
            frames.len(),
            median / teacher_ms
        ),
    );
    emit("live_fps", delivered as f64 / 5.0, "1/s", "frames delivered per second during the 5 s stroke");
    Ok(())
}
