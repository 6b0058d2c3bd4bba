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
            if !(lo <= hi) {
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
        return Err(CoreError::invalid("guidance rescale", "a one-element sample", "needs at least two elements"));
    }
    let mean = flat.mean_keepdim(1)?;
    let var = (flat.broadcast_sub(&mean)?.sqr()?.sum(1)? / (n - 1) as f64)?;
    Ok(var.sqrt()?)
}
