//! `latent-studio bench`: timings as JSON lines `{"name", "value", "unit", "threads", "note"}`.
//! Weights are zeros: dense tensor kernels take the same time whatever the values.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::json;

use crate::core::samplers::SamplerKind;
use crate::core::Guidance;
use crate::engine::studio::{StudioBackend, StudioJob, Task};
use crate::engine::{Engine, EventKind, OutputKey, Urgency};
use crate::models::pipeline::{LoadOptions, Request};
use crate::models::unet::{UNet, UNetConfig};
use crate::models::vae::Vae;
use crate::training::builtin::{unet_config, vae_config};

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
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn emit(name: &str, value: f64, unit: &str, note: &str) {
    println!("{}", json!({"name": name, "value": value, "unit": unit, "threads": threads(), "note": note}));
}

/// Median seconds of `repeat` runs of `f`, after one warm-up run.
fn median_secs(repeat: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Stable Diffusion 1.5's UNet config.
fn sd15_unet() -> UNetConfig {
    UNetConfig { cross_attention_dim: 768, ..UNetConfig::default() }
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    if wanted("matmul_f32") {
        let n = 1024;
        let a = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
        let secs = median_secs(args.repeat, || Ok(a.matmul(&b).map(|_| ())?))?;
        emit("matmul_f32", 2.0 * (n * n * n) as f64 / secs / 1e9, "GFLOP/s", "1024x1024 by 1024x1024");
    }
    let vb = VarBuilder::zeros(DType::F32, &dev);
    if wanted("builtin_unet_eval") {
        let unet = UNet::new(&unet_config(), vb.clone())?;
        let x = Tensor::zeros((2, 4, 16, 16), DType::F32, &dev)?;
        let t = Tensor::full(500f32, 2, &dev)?;
        let ctx = Tensor::zeros((2, 16, 64), DType::F32, &dev)?;
        let secs = median_secs(args.repeat, || Ok(unet.forward(&x, &t, &ctx).map(|_| ())?))?;
        emit("builtin_unet_eval", secs * 1e3, "ms", "built-in UNet, batch 2 (guidance), 16x16 latent");
    }
    if wanted("builtin_vae_decode") {
        let vae = Vae::new(&vae_config(), vb.clone())?;
        let z = Tensor::zeros((1, 4, 16, 16), DType::F32, &dev)?;
        let secs = median_secs(args.repeat, || Ok(vae.decode(&z).map(|_| ())?))?;
        emit("builtin_vae_decode", secs * 1e3, "ms", "16x16x4 latent to 64x64 RGB");
    }
    if wanted("sd15_unet_eval_256") {
        let unet = UNet::new(&sd15_unet(), vb.clone())?;
        let x = Tensor::zeros((1, 4, 32, 32), DType::F32, &dev)?;
        let t = Tensor::full(500f32, 1, &dev)?;
        let ctx = Tensor::zeros((1, 77, 768), DType::F32, &dev)?;
        let secs = median_secs(args.repeat.min(3), || Ok(unet.forward(&x, &t, &ctx).map(|_| ())?))?;
        emit("sd15_unet_eval_256", secs * 1e3, "ms", "SD 1.5 UNet, batch 1, 256x256 (32x32 latent)");
    }
    if wanted("engine") {
        engine_figures(&args.model)?;
    }
    if wanted("ui_frame") {
        ui_figures();
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

fn render_job(guidance: f64, steps: usize) -> StudioJob {
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
    let path =
        if model.as_os_str() == "builtin" { super::render::builtin_model_dir() } else { model.to_path_buf() };
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
