//! Classifier-free guidance (Ho & Salimans 2022): out = uncond + s · (cond − uncond), with
//! guidance rescale (Lin et al. 2023, section 3.4) and a guidance interval
//! (Kynkäänniemi et al. 2024).

use candle_core::Tensor;

use super::error::{CoreError, Result};
use super::tensor_ops::lincomb;

/// How strongly, and when, the prompt steers the sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Guidance {
    /// s: 1 = conditional prediction only (no unconditional pass), 0 = unconditional only,
    /// between them a blend, above 1 extrapolation away from the unconditional prediction.
    pub scale: f64,
    /// phi in [0, 1]: blend toward the guided output rescaled to the conditional output's
    /// standard deviation, which counters over-exposure at high scales.
    pub rescale: f64,
    /// Apply guidance only for training timesteps in `[lo, hi]`; elsewhere scale 1.
    pub interval: Option<(f64, f64)>,
}

impl Default for Guidance {
    fn default() -> Self {
        Self { scale: 7.5, rescale: 0.0, interval: None }
    }
}

/// A network pass on a batch of samples with a batch of conditionings.
pub type ForwardFn<'a> = dyn FnMut(&Tensor, &Tensor) -> Result<Tensor> + 'a;

impl Guidance {
    /// No guidance: scale 1.
    pub fn none() -> Self {
        Self { scale: 1.0, rescale: 0.0, interval: None }
    }

    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if !self.scale.is_finite() {
            return Err(CoreError::invalid("guidance scale", self.scale, "must be a finite number"));
        }
        if !(0.0..=1.0).contains(&self.rescale) {
            return Err(CoreError::invalid("guidance rescale", self.rescale, "must lie in [0, 1]"));
        }
        if let Some((lo, hi)) = self.interval {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(CoreError::invalid(
                    "guidance interval",
                    format!("[{lo}, {hi}]"),
                    "the lower end must not exceed the upper end",
                ));
            }
        }
        Ok(())
    }

    /// The scale in force at `timestep`.
    pub fn scale_at(&self, timestep: f64) -> f64 {
        match self.interval {
            Some((lo, hi)) if !(lo..=hi).contains(&timestep) => 1.0,
            _ => self.scale,
        }
    }

    /// The guided output: one network pass when only one side is needed (scale 1 or 0),
    /// otherwise one batched pass over `[uncond, cond]`.
    pub fn apply(
        &self,
        x: &Tensor,
        timestep: f64,
        cond: &Tensor,
        uncond: &Tensor,
        forward: &mut ForwardFn<'_>,
    ) -> Result<Tensor> {
        let scale = self.scale_at(timestep);
        if scale == 1.0 {
            return forward(x, cond);
        }
        if scale == 0.0 {
            return forward(x, uncond);
        }
        let batch = x.dim(0)?;
        let both = forward(&Tensor::cat(&[x, x], 0)?, &Tensor::cat(&[uncond, cond], 0)?)?;
        let (u, c) = (both.narrow(0, 0, batch)?, both.narrow(0, batch, batch)?);
        let guided = lincomb(&[(1.0 - scale, &u), (scale, &c)])?;
        if self.rescale > 0.0 {
            rescale(&guided, &c, self.rescale)
        } else {
            Ok(guided)
        }
    }
}

/// Lin et al. (2023) eq. 15–16: x_rescaled = x_cfg · std(x_cond) / std(x_cfg), blended with
/// x_cfg by phi. Standard deviations per batch item, unbiased, as `torch.std`.
pub fn rescale(guided: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    let ratio = (std_per_item(cond)? / std_per_item(guided)?)?;
    let mut dims = vec![1usize; guided.rank()];
    dims[0] = guided.dim(0)?;
    let ratio = ratio.reshape(dims)?;
    let rescaled = guided.broadcast_mul(&ratio)?;
    lincomb(&[(phi, &rescaled), (1.0 - phi, guided)])
}

fn std_per_item(t: &Tensor) -> Result<Tensor> {
    let flat = t.flatten_from(1)?;
    let n = flat.dim(1)?;
    if n < 2 {
        return Err(CoreError::invalid(
            "guidance rescale",
            "a one-element sample",
            "needs at least two elements",
        ));
    }
    let mean = flat.mean_keepdim(1)?;
    let var = (flat.broadcast_sub(&mean)?.sqr()?.sum(1)? / (n - 1) as f64)?;
    Ok(var.sqrt()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A fake network whose output is the conditioning's first value, broadcast; it records the
    /// batch sizes it was called with.
    fn forward_recording(calls: &mut Vec<usize>) -> impl FnMut(&Tensor, &Tensor) -> Result<Tensor> + '_ {
        move |x, ctx| {
            calls.push(x.dim(0)?);
            let per_item = ctx.flatten_from(1)?.narrow(1, 0, 1)?; // [B, 1]
            Ok(per_item.reshape((x.dim(0)?, 1, 1, 1))?.broadcast_as(x.shape())?.contiguous()?)
        }
    }

    fn setup() -> (Tensor, Tensor, Tensor) {
        let x = Tensor::zeros((1, 2, 2, 2), DType::F64, &Device::Cpu).unwrap();
        let cond = Tensor::full(3.0f64, (1, 4, 8), &Device::Cpu).unwrap();
        let uncond = Tensor::full(1.0f64, (1, 4, 8), &Device::Cpu).unwrap();
        (x, cond, uncond)
    }

    fn first(t: &Tensor) -> f64 {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
    }

    #[test]
    fn scale_one_and_zero_take_a_single_pass() {
        let (x, cond, uncond) = setup();
        for (scale, want) in [(1.0, 3.0), (0.0, 1.0)] {
            let mut calls = Vec::new();
            let g = Guidance { scale, ..Guidance::default() };
            let out = g.apply(&x, 500.0, &cond, &uncond, &mut forward_recording(&mut calls)).unwrap();
            assert_eq!(calls, vec![1], "scale {scale}");
            assert_eq!(first(&out), want);
        }
    }

    #[test]
    fn other_scales_take_one_batched_pass_and_extrapolate() {
        let (x, cond, uncond) = setup();
        for scale in [0.5, 7.5, -1.0] {
            let mut calls = Vec::new();
            let g = Guidance { scale, ..Guidance::default() };
            let out = g.apply(&x, 500.0, &cond, &uncond, &mut forward_recording(&mut calls)).unwrap();
            assert_eq!(calls, vec![2]);
            assert!((first(&out) - (1.0 + scale * 2.0)).abs() < 1e-12, "scale {scale}");
        }
    }

    #[test]
    fn outside_the_interval_guidance_is_off() {
        let (x, cond, uncond) = setup();
        let g = Guidance { scale: 7.5, rescale: 0.0, interval: Some((200.0, 800.0)) };
        let mut calls = Vec::new();
        let out = g.apply(&x, 900.0, &cond, &uncond, &mut forward_recording(&mut calls)).unwrap();
        assert_eq!((calls.clone(), first(&out)), (vec![1], 3.0));
        let out = g.apply(&x, 800.0, &cond, &uncond, &mut forward_recording(&mut calls)).unwrap();
        assert_eq!(first(&out), 16.0);
    }

    #[test]
    fn full_rescale_gives_the_conditional_standard_deviation() {
        let dev = Device::Cpu;
        let cond = Tensor::new(&[[1.0f64, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]], &dev).unwrap();
        let guided = Tensor::new(&[[2.0f64, 6.0, 10.0, 14.0], [5.0, 5.0, 9.0, 9.0]], &dev).unwrap();
        let full = rescale(&guided, &cond, 1.0).unwrap().to_vec2::<f64>().unwrap();
        // Item 0: std(cond) = 1.29, std(guided) = 5.16, ratio 1/4. Item 1: ratio 1/4 as well.
        assert_eq!(full[0], vec![0.5, 1.5, 2.5, 3.5]);
        assert_eq!(full[1], vec![1.25, 1.25, 2.25, 2.25]);
        let none = rescale(&guided, &cond, 0.0).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(none, guided.to_vec2::<f64>().unwrap());
    }

    #[test]
    fn invalid_settings_name_themselves() {
        let bad = [
            Guidance { scale: f64::NAN, ..Guidance::default() },
            Guidance { rescale: -0.1, ..Guidance::default() },
            Guidance { interval: Some((900.0, 100.0)), ..Guidance::default() },
        ];
        let names: Vec<String> = bad.iter().map(|g| g.validate().unwrap_err().to_string()).collect();
        assert!(names[0].contains("guidance scale"));
        assert!(names[1].contains("guidance rescale"));
        assert!(names[2].contains("guidance interval"));
    }
}
