//! Which training timesteps an N-step sampler visits, and the sigmas between them, as diffusers'
//! `set_timesteps` computes them.

use super::config::TimestepSpacing;
use super::error::{CoreError, Result};
use super::schedule::NoiseSchedule;

/// Checks a step count against the schedule: at least one step, at most one per training step.
pub fn check_steps(steps: usize, train_steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(CoreError::invalid("steps", steps, "at least one step is needed"));
    }
    if steps > train_steps {
        return Err(CoreError::invalid(
            "steps",
            steps,
            format!("the schedule has only {train_steps} training timesteps"),
        ));
    }
    Ok(())
}

/// NumPy's `round`: halves go to the even neighbour.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Integer timesteps (descending) of the DDIM/DDPM family for `steps` inference steps.
pub fn discrete_timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    train_steps: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    check_steps(steps, train_steps)?;
    let out: Vec<usize> = match spacing {
        TimestepSpacing::Linspace => fractional_linspace(steps, train_steps)
            .into_iter()
            .map(|t| round_half_even(f64::from(t)) as usize)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = train_steps / steps;
            // A config's huge `steps_offset` saturates and is refused below, instead of overflowing.
            (0..steps).rev().map(|i| (i * ratio).saturating_add(steps_offset)).collect()
        }
        TimestepSpacing::Trailing => trailing(steps, train_steps),
    };
    if let Some(&bad) = out.iter().find(|&&t| t >= train_steps) {
        return Err(CoreError::invalid(
            "steps_offset",
            steps_offset,
            format!("timestep {bad} lies past the schedule's {train_steps} training timesteps"),
        ));
    }
    Ok(out)
}

/// `np.round(np.arange(train, 0, -train / steps)) - 1`.
fn trailing(steps: usize, train_steps: usize) -> Vec<usize> {
    let ratio = train_steps as f64 / steps as f64;
    (0..steps).map(|i| round_half_even(train_steps as f64 - i as f64 * ratio) as usize - 1).collect()
}

/// `np.linspace(0, train - 1, steps, dtype=float32)[::-1]`: NumPy computes in double and casts.
fn fractional_linspace(steps: usize, train_steps: usize) -> Vec<f32> {
    let last = (train_steps - 1) as f64;
    if steps == 1 {
        return vec![0.0];
    }
    let step = last / (steps - 1) as f64;
    (0..steps).rev().map(|i| if i == steps - 1 { last as f32 } else { (i as f64 * step) as f32 }).collect()
}

/// Timesteps of the sigma-space samplers (Euler, Heun): like [`discrete_timesteps`] but `linspace`
/// is not rounded, as diffusers' `EulerDiscreteScheduler` leaves it.
pub fn continuous_timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    train_steps: usize,
    steps_offset: usize,
) -> Result<Vec<f32>> {
    match spacing {
        TimestepSpacing::Linspace => {
            check_steps(steps, train_steps)?;
            Ok(fractional_linspace(steps, train_steps))
        }
        _ => Ok(discrete_timesteps(spacing, steps, train_steps, steps_offset)?
            .into_iter()
            .map(|t| t as f32)
            .collect()),
    }
}

/// Sigma at fractional timestep `t`, linearly interpolated between the schedule's `float32`
/// sigmas (`np.interp`).
pub fn interp_sigma(sigmas: &[f32], t: f64) -> f64 {
    let last = sigmas.len() - 1;
    if t <= 0.0 {
        return f64::from(sigmas[0]);
    }
    if t >= last as f64 {
        return f64::from(sigmas[last]);
    }
    let lo = t.floor() as usize;
    let w = t - lo as f64;
    let (a, b) = (f64::from(sigmas[lo]), f64::from(sigmas[lo + 1]));
    a + w * (b - a)
}

/// Karras et al. (2022) eq. 5: `steps` sigmas from `sigma_max` down to `sigma_min`, rho = 7.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    (0..steps)
        .map(|i| {
            let ramp = if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
            (max_inv + ramp * (min_inv - max_inv)).powf(rho)
        })
        .collect()
}

/// The fractional training timestep whose sigma is `sigma`: linear interpolation in log-sigma
/// between neighbouring training timesteps (diffusers' `_sigma_to_t`, log-sigmas in `float32`).
pub fn sigma_to_t(sigma: f64, sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let logs: Vec<f64> = sigmas.iter().map(|s| f64::from(s.ln())).collect();
    let above = logs.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low = above.saturating_sub(1).min(logs.len() - 2);
    let (lo, hi) = (logs[low], logs[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Sigmas (descending, ending with a final zero) and model timesteps of the Euler family, for
/// `steps` steps: spaced timesteps, or Karras sigmas between the extreme sigmas of those timesteps.
pub fn sigma_plan(
    schedule: &NoiseSchedule,
    spacing: TimestepSpacing,
    karras: bool,
    steps: usize,
    steps_offset: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let schedule = schedule.with_finite_terminal_sigma();
    let table = schedule.sigmas_f32();
    let timesteps = continuous_timesteps(spacing, steps, schedule.train_steps(), steps_offset)?;
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_sigma(&table, f64::from(t))).collect();
    let mut model_t: Vec<f64> = timesteps.iter().map(|&t| f64::from(t)).collect();
    if karras {
        let (min, max) = (sigmas[sigmas.len() - 1], sigmas[0]);
        sigmas = karras_sigmas(min, max, steps);
        model_t = sigmas.iter().map(|&s| f64::from(sigma_to_t(s, &table) as f32)).collect();
    }
    let mut sigmas: Vec<f64> = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
    sigmas.push(0.0);
    Ok((sigmas, model_t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_steps_offset_is_refused_not_overflowed() {
        let e = discrete_timesteps(TimestepSpacing::Leading, 20, 1000, usize::MAX)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("steps_offset"), "{e}");
    }

    #[test]
    fn numpy_rounding_goes_to_even() {
        assert_eq!(round_half_even(499.5), 500.0);
        assert_eq!(round_half_even(498.5), 498.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(2.6), 3.0);
    }

    #[test]
    fn zero_steps_and_too_many_steps_are_refused() {
        let err = discrete_timesteps(TimestepSpacing::Leading, 0, 1000, 1).unwrap_err();
        assert!(err.to_string().contains("steps = 0"), "{err}");
        let err = discrete_timesteps(TimestepSpacing::Trailing, 1001, 1000, 0).unwrap_err();
        assert!(err.to_string().contains("1000 training timesteps"), "{err}");
    }

    #[test]
    fn sigma_to_t_inverts_interpolation_at_integers() {
        let schedule = NoiseSchedule::new(
            &super::super::schedule::BetaSchedule::ScaledLinear { start: 0.00085, end: 0.012 },
            1000,
            false,
        )
        .unwrap();
        let table = schedule.sigmas_f32();
        for t in [0usize, 1, 17, 500, 998, 999] {
            let got = sigma_to_t(f64::from(table[t]), &table);
            assert!((got - t as f64).abs() < 1e-3, "t = {t}: {got}");
        }
    }
}
