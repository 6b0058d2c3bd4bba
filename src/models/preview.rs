//! Cheap live previews: a linear map from latent channels to RGB, fitted per model by decoding a
//! few random latents on load. Applying it costs one small matrix product per step (the studio
//! runs it in a shader), where a VAE decode per step would cost more than the step itself.

use candle_core::{DType, Device, Tensor};

use super::pipeline::{Pipeline, PipelineError};
use crate::core::SeededNoise;

/// rgb = weights · latent + bias, per latent pixel, in [-1, 1] image units.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatentRgbMap {
    /// `[channel][rgb]`.
    pub weights: Vec<[f32; 3]>,
    /// Offset per RGB channel.
    pub bias: [f32; 3],
}

/// Least squares fit of `targets` (n × 3) from `inputs` (n × c) with an intercept, by the normal
/// equations in f64. Returns `None` when the inputs do not determine the map.
pub fn fit(inputs: &[Vec<f64>], targets: &[[f64; 3]]) -> Option<LatentRgbMap> {
    let c = inputs.first()?.len();
    let k = c + 1;
    // Augmented normal equations [XᵀX | XᵀY] with X = [inputs, 1].
    let mut a = vec![vec![0.0f64; k + 3]; k];
    for (x, y) in inputs.iter().zip(targets) {
        let row: Vec<f64> = x.iter().copied().chain(std::iter::once(1.0)).collect();
        for i in 0..k {
            for j in 0..k {
                a[i][j] += row[i] * row[j];
            }
            for (t, &yt) in y.iter().enumerate() {
                a[i][k + t] += row[i] * yt;
            }
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (_, row) in a.iter_mut().enumerate().filter(|(r, _)| *r != col) {
            let f = row[col] / pivot_row[col];
            for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
        }
    }
    let solution = |i: usize, t: usize| (a[i][k + t] / a[i][i]) as f32;
    Some(LatentRgbMap {
        weights: (0..c).map(|i| [solution(i, 0), solution(i, 1), solution(i, 2)]).collect(),
        bias: [solution(c, 0), solution(c, 1), solution(c, 2)],
    })
}

impl LatentRgbMap {
    /// Fits the map for `pipeline`: decodes four random 8x8 latents and averages each decoded
    /// `f × f` patch to the latent pixel it came from.
    pub fn for_pipeline(pipeline: &Pipeline) -> Result<Self, PipelineError> {
        let (c, f) = (pipeline.latent_channels(), pipeline.vae_factor());
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for seed in 0..4 {
            let latent = SeededNoise::new(seed).tensor(&[1, c, 8, 8], DType::F32, &Device::Cpu)?;
            let rgb = pipeline.decode(&latent)?;
            let lat: Vec<f32> = latent.flatten_all()?.to_vec1()?;
            for y in 0..8 {
                for x in 0..8 {
                    inputs.push((0..c).map(|ch| f64::from(lat[ch * 64 + y * 8 + x])).collect());
                    let mut sum = [0.0f64; 3];
                    for py in y * f..(y + 1) * f {
                        for px in x * f..(x + 1) * f {
                            for (t, s) in sum.iter_mut().enumerate() {
                                *s += f64::from(rgb[(py * 8 * f + px) * 3 + t]) / 127.5 - 1.0;
                            }
                        }
                    }
                    targets.push(sum.map(|s| s / (f * f) as f64));
                }
            }
        }
        fit(&inputs, &targets).ok_or_else(|| PipelineError::Invalid {
            name: "preview map",
            value: "degenerate".into(),
            reason: "the decoded latents do not determine a linear map".into(),
        })
    }

    /// The preview of a latent `[1, C, h, w]`: 8-bit RGB at latent resolution, row-major.
    pub fn apply(&self, latent: &Tensor) -> Result<Vec<u8>, candle_core::Error> {
        let (_, c, h, w) = latent.dims4()?;
        let values: Vec<f32> = latent.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut out = Vec::with_capacity(h * w * 3);
        for p in 0..h * w {
            for t in 0..3 {
                let v = self.bias[t]
                    + (0..c.min(self.weights.len()))
                        .map(|ch| self.weights[ch][t] * values[ch * h * w + p])
                        .sum::<f32>();
                out.push(((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_decoder_is_recovered_exactly() {
        let weights = [[0.3, -0.2, 0.1], [0.05, 0.4, -0.3], [-0.1, 0.1, 0.2], [0.2, 0.0, -0.05]];
        let bias = [0.1, -0.05, 0.02];
        let mut noise = SeededNoise::new(3);
        let inputs: Vec<Vec<f64>> = (0..200).map(|_| (0..4).map(|_| noise.normal()).collect()).collect();
        let targets: Vec<[f64; 3]> = inputs
            .iter()
            .map(|x| std::array::from_fn(|t| bias[t] + (0..4).map(|c| weights[c][t] * x[c]).sum::<f64>()))
            .collect();
        let map = fit(&inputs, &targets).unwrap();
        for (got, want) in map.weights.iter().zip(&weights) {
            for (g, w) in got.iter().zip(want) {
                assert!((f64::from(*g) - w).abs() < 1e-5);
            }
        }
        assert!((f64::from(map.bias[0]) - 0.1).abs() < 1e-5);
    }

    #[test]
    fn constant_inputs_are_refused() {
        let inputs = vec![vec![1.0, 1.0]; 10];
        assert!(fit(&inputs, &[[0.0; 3]; 10]).is_none());
    }
}
