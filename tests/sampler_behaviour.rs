//! What every sampler promises besides its numbers: the callback can stop it after any step,
//! SDEdit runs the right steps and keeps what the mask protects, and bad settings are refused
//! with a typed error that names the value.

mod common;

use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use common::*;
use latent_studio::core::samplers::{Outcome, SampleContext, SamplerKind, SamplerOptions, StepView};
use latent_studio::core::sdedit::{sdedit, SdEdit};
use latent_studio::core::{
    Conditioning, CoreError, Guidance, ModelDenoiser, NoiseSource, PredictionType, SchedulerConfig,
    SeededNoise,
};

fn config() -> SchedulerConfig {
    SchedulerConfig::stable_diffusion()
}

fn build(kind: SamplerKind, steps: usize) -> Box<dyn latent_studio::core::Sampler> {
    kind.build(&config(), steps, &SamplerOptions { eta: 0.3, ..Default::default() }).unwrap()
}

#[test]
fn the_callback_stops_every_sampler_after_any_evaluation() {
    for kind in SamplerKind::ALL {
        let sampler = build(kind, 6);
        let full = if kind == SamplerKind::Heun { 11 } else { 6 };
        for stop_after in 0..full {
            let mut model = GaussianModel::new(&config());
            let mut denoiser =
                ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
            let mut noise = SeededNoise::new(1);
            let mut seen = Vec::new();
            let mut callback = |v: &StepView<'_>| {
                seen.push((v.index, v.total));
                if v.index == stop_after {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let x_t = SeededNoise::new(2).tensor(&[1, 2, 2, 2], DType::F64, &Device::Cpu).unwrap();
            let mut ctx = SampleContext {
                denoiser: &mut denoiser,
                noise: &mut noise,
                callback: &mut callback,
                inpaint: None,
            };
            let outcome = sampler.sample(&x_t, &mut ctx).unwrap();
            let Outcome::Stopped { evaluations, .. } = outcome else {
                panic!("{kind:?} ran on after being stopped at {stop_after}");
            };
            assert_eq!(evaluations, stop_after + 1, "{kind:?}");
            assert_eq!(seen.len(), stop_after + 1, "{kind:?}: callback calls");
            assert!(seen.iter().all(|&(_, total)| total == full), "{kind:?}: totals {seen:?}");
            drop(denoiser);
            assert_eq!(model.calls, stop_after + 1, "{kind:?}: network evaluations after the stop");
        }
    }
}

fn sdedit_run(
    kind: SamplerKind,
    steps: usize,
    strength: f64,
    mask: Option<&Tensor>,
) -> (Vec<f64>, usize, Vec<f64>) {
    let sampler = build(kind, steps);
    let mut model = GaussianModel::new(&config());
    let mut denoiser = ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
    let mut source = SeededNoise::new(3);
    let guide = tensor(&[0.9, 0.1, 0.4, 0.8, 0.2, 0.7, 0.3, 0.6], &[1, 2, 2, 2]);
    let noise = SeededNoise::new(4).draw(&guide).unwrap();
    let mut calls = 0;
    let mut callback = |_: &StepView<'_>| {
        calls += 1;
        ControlFlow::Continue(())
    };
    let mut ctx =
        SampleContext { denoiser: &mut denoiser, noise: &mut source, callback: &mut callback, inpaint: None };
    let out =
        sdedit(sampler.as_ref(), &mut ctx, &SdEdit { guide: &guide, noise: &noise, strength, mask }).unwrap();
    (values(&out.finished().unwrap()), calls, values(&guide))
}

#[test]
fn sdedit_runs_the_last_int_n_times_strength_steps() {
    for (strength, want) in [(1.0, 10), (0.75, 7), (0.5, 5), (0.25, 2)] {
        let (_, calls, _) = sdedit_run(SamplerKind::Ddim, 10, strength, None);
        assert_eq!(calls, want, "strength {strength}");
    }
    let (_, calls, _) = sdedit_run(SamplerKind::Heun, 10, 0.5, None);
    assert_eq!(calls, 9, "Heun: 5 steps, the last one single");
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn sdedit_strays_further_from_the_guide_as_strength_grows() {
    for kind in [SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::DpmPp2m] {
        let d: Vec<f64> = [0.2, 0.5, 0.9]
            .iter()
            .map(|&s| {
                let (out, _, guide) = sdedit_run(kind, 20, s, None);
                distance(&out, &guide)
            })
            .collect();
        assert!(d[0] < d[1] && d[1] < d[2], "{kind:?}: distances {d:?}");
    }
}

#[test]
fn sdedit_with_a_mask_changes_only_the_masked_region() {
    // Edit the first channel only.
    let mask = tensor(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[1, 2, 2, 2]);
    for kind in SamplerKind::ALL {
        let (out, _, guide) = sdedit_run(kind, 10, 0.8, Some(&mask));
        for i in 4..8 {
            assert!((out[i] - guide[i]).abs() < 1e-12, "{kind:?}: protected value {i} changed");
        }
        assert!(
            (0..4).any(|i| (out[i] - guide[i]).abs() > 1e-3),
            "{kind:?}: the masked region did not change"
        );
    }
}

fn assert_invalid(err: CoreError, name: &str) {
    match &err {
        CoreError::InvalidSetting { name: got, .. } => assert_eq!(*got, name, "{err}"),
        other => panic!("expected an invalid {name}, got {other}"),
    }
}

#[test]
fn bad_settings_are_refused_with_the_setting_named() {
    let opts = SamplerOptions::default();
    for kind in SamplerKind::ALL {
        assert_invalid(kind.build(&config(), 0, &opts).err().unwrap(), "steps");
    }
    // More inference steps than the schedule has training timesteps.
    let short = SchedulerConfig { num_train_timesteps: Some(20), ..config() };
    for kind in [SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::DpmPp2m] {
        let err = kind.build(&short, 50, &opts).err().unwrap();
        assert!(err.to_string().contains("only 20 training timesteps"), "{err}");
    }
    let err = SamplerKind::Ddim.build(&config(), 10, &SamplerOptions { eta: -0.5, ..opts }).err().unwrap();
    assert_invalid(err, "eta");
    assert_invalid(SamplerKind::parse("plms").unwrap_err(), "sampler");
    let bad_schedule = SchedulerConfig { beta_schedule: Some("sigmoid".into()), ..config() };
    assert_invalid(SamplerKind::Ddim.build(&bad_schedule, 10, &opts).err().unwrap(), "beta_schedule");
    let guidance = Guidance { rescale: 1.5, ..Guidance::default() };
    assert_invalid(guidance.validate().unwrap_err(), "guidance rescale");
}

#[test]
fn sdedit_refuses_bad_strength_and_mismatched_shapes() {
    let sampler = build(SamplerKind::Ddim, 10);
    let mut model = GaussianModel::new(&config());
    let mut denoiser = ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
    let mut source = SeededNoise::new(3);
    let mut callback = |_: &StepView<'_>| ControlFlow::Continue(());
    let mut ctx =
        SampleContext { denoiser: &mut denoiser, noise: &mut source, callback: &mut callback, inpaint: None };
    let guide = Tensor::zeros((1, 2, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let other = Tensor::zeros((1, 2, 4, 4), DType::F64, &Device::Cpu).unwrap();
    for strength in [0.0, 1.5, -1.0] {
        let err = sdedit(
            sampler.as_ref(),
            &mut ctx,
            &SdEdit { guide: &guide, noise: &guide, strength, mask: None },
        );
        assert_invalid(err.unwrap_err(), "strength");
    }
    let err = sdedit(
        sampler.as_ref(),
        &mut ctx,
        &SdEdit { guide: &guide, noise: &other, strength: 0.5, mask: None },
    );
    assert!(matches!(err, Err(CoreError::ShapeMismatch { what: "SDEdit noise", .. })));
    let err = sdedit(
        sampler.as_ref(),
        &mut ctx,
        &SdEdit { guide: &guide, noise: &guide, strength: 0.5, mask: Some(&other) },
    );
    assert!(matches!(err, Err(CoreError::ShapeMismatch { what: "SDEdit mask", .. })));
    let err = latent_studio::core::interpolate::slerp(&guide, &other, 0.5);
    assert!(matches!(err, Err(CoreError::ShapeMismatch { .. })));
}
