//! `bench`'s parity figures: the same renders on this run's device and kernels (`--device`,
//! `--kernels`) and on the CPU's fused kernels in f32, as the largest and the mean difference of
//! their 8-bit pixels. On a GPU they check its path against the CPU; on the CPU with
//! `--kernels generic` they check the generic path against the fused one.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::bench::{emit, render_job, target};
use crate::engine::spec::ModelSource;
use crate::engine::studio::Task;
use crate::kernels::{self, Kernels};
use crate::models::pipeline::{LoadOptions, Pipeline};

/// The pixels of `bench`'s DDIM render (seed 1, its native size) of `path` with its default steps
/// (at most 20) and guidance, on `device` in `dtype` with `chosen` kernels.
fn render(path: &Path, device: Device, dtype: DType, chosen: Kernels) -> anyhow::Result<Vec<u8>> {
    kernels::set(chosen);
    let pipeline = Pipeline::load(path, &LoadOptions { dtype, device, prediction_type: None })?;
    let defaults = pipeline.defaults();
    let Task::Render(request) = render_job(defaults.guidance, defaults.steps.clamp(1, 20)).task else {
        anyhow::bail!("not a render")
    };
    let rendered = pipeline.render(&request, &mut |_| ControlFlow::Continue(()))?;
    rendered.map(|r| r.rgb).ok_or_else(|| anyhow::anyhow!("the render stopped"))
}

/// Emits `device_parity_max` and `device_parity_mean` for each model: the built-in model, its
/// live student where it is there, and `extra` (diffusers folders or single files).
pub(super) fn run(extra: &[PathBuf]) -> anyhow::Result<()> {
    let chosen = kernels::current();
    let (device, dtype) = target();
    let mut models = vec![ModelSource::Builtin.path(), ModelSource::BuiltinLive.path()];
    models.retain(|p| p.exists());
    models.extend(extra.iter().cloned());
    let on = format!("{} ({dtype:?}, {} kernels)", crate::models::device::name(&device), chosen.name());
    for path in &models {
        let reference = render(path, Device::Cpu, DType::F32, Kernels::Fused);
        let tested = render(path, device.clone(), dtype, chosen);
        kernels::set(chosen);
        let (reference, tested) = (reference?, tested?);
        if reference.len() != tested.len() {
            anyhow::bail!("{}: renders of different sizes", path.display());
        }
        let diffs = reference.iter().zip(&tested).map(|(a, b)| a.abs_diff(*b));
        let max = diffs.clone().max().unwrap_or(0);
        let mean = diffs.map(f64::from).sum::<f64>() / reference.len().max(1) as f64;
        let note = format!("{}: {on} vs CPU (F32, fused kernels), 8-bit pixels", path.display());
        emit("device_parity_max", f64::from(max), "levels", &note);
        emit("device_parity_mean", mean, "levels", &note);
    }
    Ok(())
}
