//! `latent-studio bench`: timings as JSON lines `{"name", "value", "unit", "threads", "note"}`.
//! Weights are zeros: dense tensor kernels take the same time whatever the values.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::json;

use crate::models::unet::{UNet, UNetConfig};
use crate::models::vae::Vae;
use crate::training::builtin::{unet_config, vae_config};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
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
    Ok(())
}
