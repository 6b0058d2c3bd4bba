//! The model interface the samplers call, and the adapters from what networks predict
//! (noise, v, or x_0) to it.

use candle_core::Tensor;

use super::config::PredictionType;
use super::error::Result;
use super::guidance::Guidance;
use super::tensor_ops::lincomb;

/// The noise level a prediction is asked at.
///
/// `timestep` is what the network is conditioned on; `alpha_bar` is the level the sample is
/// actually at, used to convert the network's output. They differ in DDIM inversion (diffusers
/// evaluates the network at the next timestep) and for Karras sigmas between training timesteps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// Training timestep the network sees (fractional for interpolated sigmas).
    pub timestep: f64,
    /// alpha_bar of the sample: x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps.
    pub alpha_bar: f64,
}

/// What a denoiser says about a noisy sample: its clean estimate and the noise in it.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Predicted clean sample x_0.
    pub x0: Tensor,
    /// Predicted noise eps, consistent with `x0`: x_t = sqrt(a) x0 + sqrt(1 - a) eps.
    pub eps: Tensor,
}

/// A model as every sampler sees it.
pub trait Denoiser {
    /// Predicts x_0 and eps for `x_t`, a sample in variance-preserving scale (unit variance at
    /// full noise) at `level`.
    fn predict(&mut self, x_t: &Tensor, level: NoiseLevel) -> Result<Prediction>;
}

/// A network's raw forward pass: `x` is a batch of samples, `context` a batch of conditionings
/// (text embeddings) of the same batch size, or `None` for unconditional networks.
pub trait Network {
    /// Runs the network once on the whole batch.
    fn forward(&mut self, x: &Tensor, timestep: f64, context: Option<&Tensor>) -> Result<Tensor>;
}

impl PredictionType {
    /// Converts a network's raw output at `alpha_bar` into x_0 and eps (the formulas of diffusers'
    /// `DDIMScheduler.step`, equation 12 of Song et al. 2021 and Salimans & Ho 2022 for v).
    pub fn to_prediction(self, output: Tensor, x_t: &Tensor, alpha_bar: f64) -> Result<Prediction> {
        let (sa, sb) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
        Ok(match self {
            Self::Epsilon => {
                let x0 = lincomb(&[(1.0 / sa, x_t), (-sb / sa, &output)])?;
                Prediction { x0, eps: output }
            }
            Self::VPrediction => {
                let x0 = lincomb(&[(sa, x_t), (-sb, &output)])?;
                let eps = lincomb(&[(sa, &output), (sb, x_t)])?;
                Prediction { x0, eps }
            }
            Self::Sample => {
                let eps = lincomb(&[(1.0 / sb, x_t), (-sa / sb, &output)])?;
                Prediction { x0: output, eps }
            }
        })
    }
}

/// What a network is conditioned on.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// An unconditional network.
    None,
    /// Text conditioning with classifier-free guidance. `uncond` is the empty prompt's embedding,
    /// or the negative prompt's: a negative prompt is just another conditioning.
    Guided {
        /// Embedding of the prompt, batch 1 or the sample's batch.
        cond: Tensor,
        /// Embedding of the negative (or empty) prompt, same shape as `cond`.
        uncond: Tensor,
        /// Scale, rescale and interval.
        guidance: Guidance,
    },
}

/// Turns a [`Network`] into a [`Denoiser`]: runs guidance on the raw outputs (as diffusers'
/// pipelines do) and converts them by prediction type.
pub struct ModelDenoiser<'n, N: Network + ?Sized> {
    network: &'n mut N,
    prediction: PredictionType,
    conditioning: Conditioning,
}

impl<'n, N: Network + ?Sized> ModelDenoiser<'n, N> {
    /// Wraps `network`; fails if the conditioning's tensors or guidance settings are invalid.
    pub fn new(network: &'n mut N, prediction: PredictionType, conditioning: Conditioning) -> Result<Self> {
        if let Conditioning::Guided { cond, uncond, guidance } = &conditioning {
            guidance.validate()?;
            super::tensor_ops::check_same_shape("negative conditioning", cond, uncond)?;
        }
        Ok(Self { network, prediction, conditioning })
    }

    /// The raw, guided network output for `x` at `timestep`.
    fn output(&mut self, x: &Tensor, timestep: f64) -> Result<Tensor> {
        match &self.conditioning {
            Conditioning::None => self.network.forward(x, timestep, None),
            Conditioning::Guided { cond, uncond, guidance } => {
                let batch = x.dim(0)?;
                let cond = expand_batch(cond, batch)?;
                let uncond = expand_batch(uncond, batch)?;
                guidance.apply(x, timestep, &cond, &uncond, &mut |x, ctx| {
                    self.network.forward(x, timestep, Some(ctx))
                })
            }
        }
    }
}

impl<N: Network + ?Sized> Denoiser for ModelDenoiser<'_, N> {
    fn predict(&mut self, x_t: &Tensor, level: NoiseLevel) -> Result<Prediction> {
        let output = self.output(x_t, level.timestep)?;
        self.prediction.to_prediction(output, x_t, level.alpha_bar)
    }
}

/// Repeats a batch-1 conditioning to `batch`; leaves a matching batch alone.
fn expand_batch(t: &Tensor, batch: usize) -> Result<Tensor> {
    let have = t.dim(0)?;
    if have == batch {
        return Ok(t.clone());
    }
    if have != 1 {
        let mut expected = t.dims().to_vec();
        expected[0] = batch;
        return Err(super::error::CoreError::ShapeMismatch {
            what: "conditioning batch",
            expected,
            found: t.dims().to_vec(),
        });
    }
    Ok(Tensor::cat(&vec![t; batch], 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// x_t built from a known x_0 and eps: each adapter must recover both from its output.
    #[test]
    fn every_prediction_type_recovers_x0_and_eps() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.3f64, -1.2, 0.8], &dev).unwrap();
        let eps = Tensor::new(&[1.1f64, 0.4, -0.7], &dev).unwrap();
        let a: f64 = 0.37;
        let x_t = lincomb(&[(a.sqrt(), &x0), ((1.0 - a).sqrt(), &eps)]).unwrap();
        let v = lincomb(&[(a.sqrt(), &eps), (-(1.0 - a).sqrt(), &x0)]).unwrap();
        for (kind, output) in [
            (PredictionType::Epsilon, &eps),
            (PredictionType::VPrediction, &v),
            (PredictionType::Sample, &x0),
        ] {
            let p = kind.to_prediction(output.clone(), &x_t, a).unwrap();
            for (got, want) in [(&p.x0, &x0), (&p.eps, &eps)] {
                let diff = (got - want).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
                assert!(diff < 1e-12, "{kind:?}: {diff}");
            }
        }
    }
}
