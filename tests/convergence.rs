//! On the exact Gaussian model, the samplers approach the closed-form answer at the order each
//! method promises, DDIM matches its closed form, and DDIM inversion followed by DDIM sampling
//! returns the start within a derived bound.
//!
//! The model: data x_0 ~ N(mu, s²) per element. At level a (x = sqrt(a) x_0 + sqrt(1-a) eps)
//! the sample is N(sqrt(a) mu, v_a), v_a = a s² + 1 - a, and the exact eps and E[x_0 | x] are
//! affine in x (see `common::GaussianModel`). The probability-flow ODE keeps the standardised
//! coordinate z = (x - sqrt(a) mu) / sqrt(v_a) fixed, so the exact answer from a start at level
//! a_T is x_0 = mu + s z.

mod common;

use std::ops::ControlFlow;

use common::*;
use latent_studio::core::inversion::DdimInverse;
use latent_studio::core::samplers::{SamplerKind, SamplerOptions, StepView};
use latent_studio::core::{Conditioning, ModelDenoiser, PredictionType, SchedulerConfig};

fn trailing_config() -> SchedulerConfig {
    SchedulerConfig {
        timestep_spacing: Some("trailing".into()),
        steps_offset: Some(0),
        set_alpha_to_one: Some(true),
        clip_sample: Some(false),
        ..SchedulerConfig::stable_diffusion()
    }
}

/// alphas_cumprod of Stable Diffusion's schedule as diffusers computed it (not our code).
fn reference_alphas() -> Vec<f64> {
    floats(&fixture("schedules.json")["schedules"]["sd_scaled_linear"]["alphas_cumprod"])
}

const X_T: [f64; 8] = [1.3, -0.7, 0.2, -1.9, 0.05, 2.2, -0.4, 0.9];

/// Largest error against the exact flow of the state at training timestep 499, reached after
/// half of the `steps` (trailing spacing visits 999 - 1000 i / steps). Measuring mid-way keeps the
/// deliberately first-order final step of Heun and DPM-Solver++ (to sigma 0) out of the figure.
fn error_at_midpoint(kind: SamplerKind, steps: usize) -> f64 {
    let config = trailing_config();
    let sampler = kind.build(&config, steps, &SamplerOptions::default()).unwrap();
    let mut model = GaussianModel::new(&config);
    let mut denoiser = ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
    let x_t = tensor(&X_T, &[1, 2, 2, 2]);
    let (trace, _) = run_traced(sampler.as_ref(), &mut denoiser, &mut NoNoise, &x_t);
    let half = steps / 2;
    let index = if kind == SamplerKind::Heun { 2 * half - 1 } else { half - 1 };
    let alphas = reference_alphas();
    let (a_t, a_mid) = (alphas[999], alphas[499]);
    let sigma_space = matches!(kind, SamplerKind::Euler | SamplerKind::Heun);
    let init = sampler.init_noise_sigma();
    trace[index]
        .iter()
        .zip(X_T)
        .map(|(got, x)| {
            let start = x * init;
            let start_vp = if sigma_space { start * a_t.sqrt() } else { start };
            let z = (start_vp - a_t.sqrt() * MU) / (a_t * S * S + 1.0 - a_t).sqrt();
            let exact_vp = a_mid.sqrt() * MU + (a_mid * S * S + 1.0 - a_mid).sqrt() * z;
            let exact = if sigma_space { exact_vp / a_mid.sqrt() } else { exact_vp };
            (got - exact).abs()
        })
        .fold(0.0, f64::max)
}

/// Observed orders ln(e1 / e2) / ln(n2 / n1) between step counts that divide 1000 (DDIM steps
/// back by 1000 / steps, so other counts would add diffusers' spacing mismatch).
fn orders(kind: SamplerKind) -> Vec<f64> {
    let steps = [20usize, 40, 100, 200];
    let errors: Vec<f64> = steps.iter().map(|&n| error_at_midpoint(kind, n)).collect();
    (0..3).map(|i| (errors[i] / errors[i + 1]).ln() / (steps[i + 1] as f64 / steps[i] as f64).ln()).collect()
}

#[test]
fn ddim_and_euler_converge_at_first_order() {
    for kind in [SamplerKind::Ddim, SamplerKind::Euler] {
        for p in orders(kind) {
            assert!((0.9..1.1).contains(&p), "{kind:?}: observed order {p}");
        }
    }
}

#[test]
fn heun_and_dpm_solver_converge_at_second_order() {
    for kind in [SamplerKind::Heun, SamplerKind::DpmPp2m] {
        for p in orders(kind) {
            assert!((1.85..2.2).contains(&p), "{kind:?}: observed order {p}");
        }
    }
}

/// theta(a) = atan2(sqrt(1 - a), s sqrt(a)): the angle of the vector (s sqrt(a), sqrt(1 - a))
/// whose norm is sqrt(v_a).
fn theta(a: f64) -> f64 {
    (1.0 - a).sqrt().atan2(S * a.sqrt())
}

/// With the exact model, one DDIM step (eta = 0) from level a to a' maps
/// z' = z · (s² sqrt(a a') + sqrt((1-a)(1-a'))) / sqrt(v_a v_a') = z · cos(theta(a) - theta(a')),
/// by substituting the exact eps and x_0 into x' = sqrt(a') x_0 + sqrt(1-a') eps. So a whole DDIM
/// run multiplies z by the product of the cosines of its angle steps.
#[test]
fn ddim_equals_its_closed_form_product_of_cosines() {
    let config = trailing_config();
    let steps = 25;
    let alphas = reference_alphas();
    let sampler = SamplerKind::Ddim.build(&config, steps, &SamplerOptions::default()).unwrap();
    let mut model = GaussianModel::new(&config);
    let mut denoiser = ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
    let x_t = tensor(&X_T, &[1, 2, 2, 2]);
    let (_, outcome) = run_traced(sampler.as_ref(), &mut denoiser, &mut NoNoise, &x_t);
    let got = values(&outcome.finished().unwrap());

    // Trailing timesteps 999, 959, ..., 39, then alpha_bar = 1.
    let mut levels: Vec<f64> = (0..steps).map(|i| alphas[999 - 40 * i]).collect();
    levels.push(1.0);
    let shrink: f64 = levels.windows(2).map(|w| (theta(w[0]) - theta(w[1])).cos()).product();
    let a_t = levels[0];
    for (g, x) in got.iter().zip(X_T) {
        let z = (x - a_t.sqrt() * MU) / (a_t * S * S + 1.0 - a_t).sqrt();
        let want = MU + S * z * shrink; // at a = 1, v = s²
        assert!((g - want).abs() < 1e-6, "got {g}, want {want}");
    }
}

/// One scalar affine map x -> A x + B per step, derived from the exact model.
///
/// Inversion step from level a to a' (diffusers evaluates the network at the *target* timestep,
/// i.e. with a', but converts with a): eps = (sig'/v') (x - c' mu), x_0 = (x - sig eps) / c,
/// x' = c' x_0 + sig' eps  =>  A = c'/c + k sig'/v', B = -k sig' c' mu / v', k = sig' - c' sig / c.
/// DDIM step from a to a' (network at a): the same with the roles of the levels in eps swapped:
/// A = c'/c + k sig/v, B = -k sig c mu / v.  (c = sqrt(a), sig = sqrt(1 - a).)
fn affine_step(a: f64, a_next: f64, net_a: f64) -> (f64, f64) {
    let (c, sig, cn, sn) = (a.sqrt(), (1.0 - a).sqrt(), a_next.sqrt(), (1.0 - a_next).sqrt());
    let (cm, sm) = (net_a.sqrt(), (1.0 - net_a).sqrt());
    let v = net_a * S * S + 1.0 - net_a;
    let k = sn - cn * sig / c;
    (cn / c + k * sm / v, -k * sm * cm * MU / v)
}

/// The derived round trip: x_rec = A x_0 + B, composing the inversion's steps and DDIM's.
fn derived_round_trip(steps: usize, x0: f64) -> f64 {
    let alphas = reference_alphas();
    let ratio = 1000 / steps;
    let ts: Vec<usize> = (0..steps).map(|i| i * ratio + 1).collect(); // leading, offset 1
    let mut x = x0;
    let mut a = 1.0; // set_alpha_to_one
    for &t in &ts {
        let (m, b) = affine_step(a, alphas[t], alphas[t]);
        x = m * x + b;
        a = alphas[t];
    }
    for (i, &t) in ts.iter().enumerate().rev() {
        let a_prev = if i == 0 { 1.0 } else { alphas[ts[i - 1]] };
        let (m, b) = affine_step(alphas[t], a_prev, alphas[t]);
        x = m * x + b;
    }
    x
}

#[test]
fn ddim_inversion_then_sampling_returns_the_start_within_the_derived_bound() {
    let config = SchedulerConfig {
        set_alpha_to_one: Some(true),
        clip_sample: Some(false),
        ..SchedulerConfig::stable_diffusion()
    };
    let x0_values = [0.1, 0.5, 0.9, 1.4, -0.3, 0.75, 0.6, 0.2];
    let mut previous_error = f64::INFINITY;
    for steps in [10, 50] {
        let inverse = DdimInverse::new(&config, steps).unwrap();
        let ddim = SamplerKind::Ddim.build(&config, steps, &SamplerOptions::default()).unwrap();
        let mut model = GaussianModel::new(&config);
        let mut denoiser =
            ModelDenoiser::new(&mut model, PredictionType::Epsilon, Conditioning::None).unwrap();
        let x0 = tensor(&x0_values, &[1, 2, 2, 2]);
        let mut ignore = |_: &StepView<'_>| ControlFlow::Continue(());
        let noise = inverse.invert(&x0, &mut denoiser, &mut ignore).unwrap().finished().unwrap();
        let (_, outcome) = run_traced(ddim.as_ref(), &mut denoiser, &mut NoNoise, &noise);
        let back = values(&outcome.finished().unwrap());
        let mut worst = 0.0f64;
        for (g, x) in back.iter().zip(x0_values) {
            let derived = derived_round_trip(steps, x);
            // The derived map is exact for this model: the sampler must land on it...
            assert!((g - derived).abs() < 1e-6, "{steps} steps: got {g}, derived {derived}");
            // ...and the derived error is the bound the round trip stays within.
            let bound = (derived - x).abs() + 1e-6;
            assert!((g - x).abs() <= bound);
            worst = worst.max((g - x).abs());
        }
        // More steps, smaller error.
        assert!(worst < previous_error, "{steps} steps: {worst} ≥ {previous_error}");
        previous_error = worst;
    }
}
