//! Interpolation between starting noises and between conditionings, for scrubbing along a path
//! of DDIM images.

use candle_core::{DType, Tensor};

use super::error::Result;
use super::tensor_ops::{check_same_shape, lincomb};

/// Above this |cos θ| the two noises are treated as parallel and interpolated linearly.
const PARALLEL_COS: f64 = 0.9995;

/// Spherical linear interpolation (Shoemake 1985) from `a` (t = 0) to `b` (t = 1).
///
/// Two independent Gaussian noises of dimension d are nearly orthogonal with norms near sqrt(d);
/// slerp keeps the norm along the path, where a straight line would shrink it by up to 1/sqrt(2)
/// at the middle and give the sampler out-of-distribution noise. Computed in f64.
pub fn slerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    check_same_shape("slerp endpoint", a, b)?;
    let (a64, b64) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
    let dot = (&a64 * &b64)?.sum_all()?.to_scalar::<f64>()?;
    let na = a64.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let nb = b64.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let cos = if na > 0.0 && nb > 0.0 { dot / (na * nb) } else { 1.0 };
    let out = if cos.abs() > PARALLEL_COS {
        lincomb(&[(1.0 - t, &a64), (t, &b64)])?
    } else {
        let theta = cos.clamp(-1.0, 1.0).acos();
        let s = theta.sin();
        lincomb(&[(((1.0 - t) * theta).sin() / s, &a64), ((t * theta).sin() / s, &b64)])?
    };
    Ok(out.to_dtype(a.dtype())?)
}

/// Linear interpolation, for text conditionings: (1 - t) · a + t · b.
pub fn lerp(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor> {
    check_same_shape("interpolation endpoint", a, b)?;
    lincomb(&[(1.0 - t, a), (t, b)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::noise::SeededNoise;
    use candle_core::Device;

    fn noise(seed: u64) -> Tensor {
        SeededNoise::new(seed).tensor(&[1, 4, 16, 16], DType::F32, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn norm(t: &Tensor) -> f64 {
        values(t).iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn endpoints_are_exact() {
        let (a, b) = (noise(1), noise(2));
        let at0 = values(&slerp(&a, &b, 0.0).unwrap());
        let at1 = values(&slerp(&a, &b, 1.0).unwrap());
        for (x, y) in at0.iter().zip(values(&a)) {
            assert!((x - y).abs() < 1e-6);
        }
        for (x, y) in at1.iter().zip(values(&b)) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn norm_is_kept_for_gaussian_noise_where_lerp_loses_it() {
        let (a, b) = (noise(3), noise(4));
        let d = 4.0 * 16.0 * 16.0f64;
        // Norms of d-dimensional standard normals: sqrt(d) ± about 1/sqrt(2).
        for t in [0.25, 0.5, 0.75] {
            let n = norm(&slerp(&a, &b, t).unwrap());
            assert!((n / d.sqrt() - 1.0).abs() < 0.06, "t = {t}: norm {n}");
        }
        let mid_lerp = norm(&lerp(&a, &b, 0.5).unwrap());
        assert!(mid_lerp / d.sqrt() < 0.8, "lerp should shrink the norm: {mid_lerp}");
    }

    #[test]
    fn symmetric_in_its_endpoints() {
        let (a, b) = (noise(5), noise(6));
        for t in [0.1, 0.5, 0.9] {
            let ab = values(&slerp(&a, &b, t).unwrap());
            let ba = values(&slerp(&b, &a, 1.0 - t).unwrap());
            for (x, y) in ab.iter().zip(ba) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn nearly_parallel_noises_fall_back_to_lerp() {
        let a = noise(7);
        let b = a.affine(1.0001, 0.0).unwrap();
        let mid = values(&slerp(&a, &b, 0.5).unwrap());
        for (x, y) in mid.iter().zip(values(&a)) {
            assert!((x - y * 1.00005).abs() < 1e-5);
        }
    }
}
