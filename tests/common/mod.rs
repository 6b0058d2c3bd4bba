//! Shared by the integration tests: the reference figures and the exact Gaussian model.
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use latent_studio::core::samplers::{Outcome, SampleContext, Sampler, StepView};
use latent_studio::core::{Network, NoiseSchedule, SchedulerConfig};
use latent_studio::core::{NoiseSource, PredictionType, Result};
use serde_json::Value;

/// Reads a fixture copied from `../shared/reference/` (diffusers 0.42.1's own figures).
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

pub fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// The data mean and standard deviation of the exact model: x_0 ~ N(0.5, 0.5²) per element.
pub const MU: f64 = 0.5;
pub const S: f64 = 0.5;

/// The ideal denoiser for Gaussian data, as the reference file defines it: at training timestep
/// t it uses a = alphas_cumprod[floor(t)] of its own schedule.
///   eps(x, t) = sqrt(1 - a) (x - sqrt(a) mu) / (a s² + 1 - a)
///   E[x0 | x] = mu + sqrt(a) s² (x - sqrt(a) mu) / (a s² + 1 - a)
///   v = sqrt(a) eps - sqrt(1 - a) E[x0 | x]
pub struct GaussianModel {
    pub schedule: NoiseSchedule,
    pub prediction: PredictionType,
    pub calls: usize,
}

impl GaussianModel {
    pub fn new(config: &SchedulerConfig) -> Self {
        let prediction =
            PredictionType::parse(config.prediction_type.as_deref().unwrap_or("epsilon")).unwrap();
        Self { schedule: NoiseSchedule::from_config(config).unwrap(), prediction, calls: 0 }
    }
}

impl Network for GaussianModel {
    fn forward(&mut self, x: &Tensor, timestep: f64, _context: Option<&Tensor>) -> Result<Tensor> {
        self.calls += 1;
        let a = self.schedule.alpha_bar(timestep.floor() as usize);
        let var = a * S * S + 1.0 - a;
        // eps = k1 x + k0
        let (k1, k0) = ((1.0 - a).sqrt() / var, -(1.0 - a).sqrt() * a.sqrt() * MU / var);
        Ok(match self.prediction {
            PredictionType::Epsilon => x.affine(k1, k0)?,
            PredictionType::VPrediction => {
                let (m1, m0) = (a.sqrt() * S * S / var, MU - a * S * S * MU / var);
                x.affine(a.sqrt() * k1 - (1.0 - a).sqrt() * m1, a.sqrt() * k0 - (1.0 - a).sqrt() * m0)?
            }
            PredictionType::Sample => {
                let (m1, m0) = (a.sqrt() * S * S / var, MU - a * S * S * MU / var);
                x.affine(m1, m0)?
            }
        })
    }
}

/// A noise source that must never be asked.
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn draw(&mut self, _like: &Tensor) -> Result<Tensor> {
        panic!("a deterministic sampler drew noise")
    }
}

/// Runs `sampler` from unit noise `x_t` and returns every state the callback saw and the outcome.
pub fn run_traced(
    sampler: &dyn Sampler,
    denoiser: &mut dyn latent_studio::core::Denoiser,
    noise: &mut dyn NoiseSource,
    x_t: &Tensor,
) -> (Vec<Vec<f64>>, Outcome) {
    let mut trace = Vec::new();
    let mut callback = |view: &StepView<'_>| {
        trace.push(values(view.x));
        ControlFlow::Continue(())
    };
    let mut ctx = SampleContext { denoiser, noise, callback: &mut callback, inpaint: None };
    let outcome = sampler.sample(x_t, &mut ctx).unwrap();
    (trace, outcome)
}

/// |got - want| ≤ tol · max(1, |want|) for every element.
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w} (diff {})",
            (g - w).abs()
        );
    }
}

/// Copies a folder tree (a fixture model to break in a test).
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let target = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `latent` tensor a fixture script saved beside a render (the starting or added noise).
pub fn saved_latent(path: &std::path::Path) -> Tensor {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .remove("latent")
        .unwrap_or_else(|| panic!("{}: no `latent` tensor", path.display()))
}

/// Asserts that a render (RGB, row-major) is the picture diffusers saved as `png`, within
/// rounding: mean absolute difference at most 0.5 and no channel off by more than 4.
pub fn assert_matches_png(name: &str, rgb: &[u8], size: (usize, usize), png: &std::path::Path) {
    let theirs = latent_studio::imageio::read_png(png).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(size, (theirs.width, theirs.height), "{name}: picture size");
    let diffs: Vec<f64> =
        rgb.iter().zip(&theirs.data).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let max = diffs.iter().copied().fold(0.0, f64::max);
    println!("{name}: mean abs diff {mean:.3}, max {max}");
    assert!(mean <= 0.5 && max <= 4.0, "{name}: mean abs diff {mean}, max {max}");
}

/// The render request of a fixture case: its prompt (and negative prompt, if any), steps and
/// guidance, from the given starting latent, at the model's size; callers add the rest.
pub fn case_request(
    case: &Value,
    sampler: latent_studio::core::samplers::SamplerKind,
    latent: Tensor,
) -> latent_studio::models::pipeline::Request {
    latent_studio::models::pipeline::Request {
        prompt: case["prompt"].as_str().unwrap_or_default().into(),
        negative: case.get("negative").and_then(Value::as_str).unwrap_or_default().into(),
        sampler,
        options: Default::default(),
        steps: case["steps"].as_u64().unwrap_or(1) as usize,
        guidance: latent_studio::core::Guidance {
            scale: case["guidance"].as_f64().unwrap_or(1.0),
            ..latent_studio::core::Guidance::none()
        },
        seed: 0,
        size: None,
        init_latent: Some(latent),
        init_image: None,
        prompt_to: None,
        regions: Vec::new(),
    }
}

/// Renders `request`, counting the steps the callback saw.
pub fn render_counting(
    pipeline: &latent_studio::models::pipeline::Pipeline,
    request: &latent_studio::models::pipeline::Request,
) -> (latent_studio::models::pipeline::Rendered, usize) {
    let mut steps = 0;
    let rendered = pipeline
        .render(request, &mut |_: &latent_studio::core::samplers::StepView<'_>| {
            steps += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    (rendered, steps)
}

/// Held by every test of a binary that uses [`on_both_kernels`]: the kernel choice is one
/// setting of the process, and a test comparing two renders for equality must not see it change
/// between them.
static KERNEL_CHOICE: Mutex<()> = Mutex::new(());

/// The fused kernels, kept for as long as the guard lives (tests that render, in a binary where
/// another test runs [`on_both_kernels`]).
pub fn fused_kernels() -> std::sync::MutexGuard<'static, ()> {
    let guard = KERNEL_CHOICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    latent_studio::kernels::set(latent_studio::kernels::Kernels::Fused);
    guard
}

/// Runs `f` with the fused CPU kernels, then with candle's generic operations (`--kernels
/// generic`, what a GPU runs), so a parity test checks both paths; the other tests of the binary
/// wait ([`fused_kernels`]), and the fused kernels are back afterwards, a failure included.
pub fn on_both_kernels(mut f: impl FnMut()) {
    use latent_studio::kernels::{self, Kernels};
    let _turn = KERNEL_CHOICE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    struct BackToFused;
    impl Drop for BackToFused {
        fn drop(&mut self) {
            kernels::set(Kernels::Fused);
        }
    }
    let _back = BackToFused;
    for chosen in [Kernels::Fused, Kernels::Generic] {
        println!("kernels: {}", chosen.name());
        kernels::set(chosen);
        f();
    }
}
