//! Noise sources: the project's own seeded generator (candle's CPU generator cannot be seeded),
//! and recorded noise for tests that replay another program's draws.

use std::collections::VecDeque;

use candle_core::{DType, Device, Tensor};

use super::error::{CoreError, Result};

/// Where stochastic samplers get their standard-normal noise.
pub trait NoiseSource {
    /// A standard-normal tensor of `like`'s shape, dtype and device.
    fn draw(&mut self, like: &Tensor) -> Result<Tensor>;
}

/// A seeded standard-normal generator: xoshiro256** seeded through SplitMix64, Box–Muller in
/// f64. Integer arithmetic and correctly rounded `sqrt` make it the same on every run and
/// machine; `ln`/`cos`/`sin` may differ in the last bit of an f64 between C libraries, which
/// rounding to f32 hides.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    state: [u64; 4],
    spare: Option<f64>,
}

impl SeededNoise {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self { state: [next(), next(), next(), next()], spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// One standard-normal value.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1], so ln(u1) is finite; u2 in [0, 1).
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A standard-normal tensor of `shape`, filled in row-major order.
    pub fn tensor(&mut self, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|_| self.normal()).collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
    }
}

impl NoiseSource for SeededNoise {
    fn draw(&mut self, like: &Tensor) -> Result<Tensor> {
        self.tensor(like.dims(), like.dtype(), like.device())
    }
}

/// Replays recorded tensors in order; running out is an error, not fresh noise.
#[derive(Debug, Clone, Default)]
pub struct RecordedNoise {
    queue: VecDeque<Tensor>,
    drawn: usize,
}

impl RecordedNoise {
    /// A source that hands out `tensors` in order.
    pub fn new(tensors: impl IntoIterator<Item = Tensor>) -> Self {
        Self { queue: tensors.into_iter().collect(), drawn: 0 }
    }

    /// How many tensors were drawn so far.
    pub fn drawn(&self) -> usize {
        self.drawn
    }
}

impl NoiseSource for RecordedNoise {
    fn draw(&mut self, like: &Tensor) -> Result<Tensor> {
        let next = self.queue.pop_front().ok_or(CoreError::NoiseExhausted(self.drawn))?;
        super::tensor_ops::check_same_shape("recorded noise", like, &next)?;
        self.drawn += 1;
        Ok(next.to_dtype(like.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tensor_other_seed_other_tensor() {
        let a = SeededNoise::new(42).tensor(&[1, 4, 8, 8], DType::F32, &Device::Cpu).unwrap();
        let b = SeededNoise::new(42).tensor(&[1, 4, 8, 8], DType::F32, &Device::Cpu).unwrap();
        let c = SeededNoise::new(43).tensor(&[1, 4, 8, 8], DType::F32, &Device::Cpu).unwrap();
        let (a, b, c) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn moments_are_those_of_a_standard_normal() {
        let n = 1_000_000;
        let mut g = SeededNoise::new(7);
        let xs: Vec<f64> = (0..n).map(|_| g.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        // Standard errors: mean 1/sqrt(n) = 0.001, variance sqrt(2/n) = 0.0014, kurtosis
        // sqrt(24/n) = 0.005; five of each.
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((var - 1.0).abs() < 0.007, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.025, "kurtosis {kurt}");
    }

    #[test]
    fn recorded_noise_runs_out_with_an_error() {
        let t = Tensor::zeros((2,), DType::F32, &Device::Cpu).unwrap();
        let mut r = RecordedNoise::new([t.clone()]);
        assert!(r.draw(&t).is_ok());
        assert!(matches!(r.draw(&t), Err(CoreError::NoiseExhausted(1))));
    }
}
