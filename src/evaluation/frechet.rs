//! The Fréchet distance between two Gaussians fitted to feature vectors (as in FID):
//! |μ₁ − μ₂|² + Tr(C₁ + C₂ − 2 (C₁ C₂)^½), in f64 with a Jacobi eigen-solver, no linear-algebra
//! dependency.

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone)]
pub struct Gaussian {
    /// Per-dimension mean.
    pub mean: Vec<f64>,
    /// `d × d` covariance, row-major (unbiased, divided by n − 1).
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits `samples` (each of the same length; at least two).
    pub fn fit(samples: &[Vec<f32>]) -> Self {
        let d = samples.first().map_or(0, Vec::len);
        let n = samples.len() as f64;
        let mut mean = vec![0.0; d];
        for s in samples {
            for (m, &v) in mean.iter_mut().zip(s) {
                *m += f64::from(v) / n;
            }
        }
        let mut cov = vec![0.0; d * d];
        for s in samples {
            let centred: Vec<f64> = s.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m).collect();
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += centred[i] * centred[j] / (n - 1.0).max(1.0);
                }
            }
        }
        Self { mean, cov }
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The Fréchet distance between `a` and `b` (same dimension).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let d = a.dim();
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    // Tr (C₁C₂)^½ = Tr (S C₂ S)^½ with S = C₁^½, and S C₂ S is symmetric positive semi-definite.
    let s = sqrt_psd(&a.cov, d);
    let inner = matmul(&matmul(&s, &b.cov, d), &s, d);
    let (values, _) = symmetric_eigen(&inner, d);
    let cross: f64 = values.iter().map(|v| v.max(0.0).sqrt()).sum();
    mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * cross
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// The square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues
/// count as zero).
fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(m, d);
    let mut out = vec![0.0; d * d];
    for (k, value) in values.iter().enumerate() {
        let root = value.max(0.0).sqrt();
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] += root * vectors[i * d + k] * vectors[j * d + k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric matrix by cyclic Jacobi rotations.
fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-14 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(mean: Vec<f64>, cov: Vec<f64>) -> Gaussian {
        Gaussian { mean, cov }
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // For commuting (diagonal) covariances the distance is Σ (μ₁−μ₂)² + Σ (√a − √b)².
        let a = gaussian(vec![1.0, 0.0, 2.0], vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0]);
        let b = gaussian(vec![0.0, 0.0, 0.0], vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25]);
        let expected = (1.0 + 0.0 + 4.0) + ((2.0f64 - 1.0).powi(2) + 0.0 + (3.0f64 - 0.5).powi(2));
        assert!((frechet_distance(&a, &b) - expected).abs() < 1e-9, "{}", frechet_distance(&a, &b));
    }

    #[test]
    fn rotated_covariances_match_the_closed_form() {
        // Rotating both Gaussians by the same rotation leaves the distance unchanged.
        let (c, s) = (0.6f64, 0.8f64);
        let rotate = |d0: f64, d1: f64| {
            vec![c * c * d0 + s * s * d1, c * s * (d0 - d1), c * s * (d0 - d1), s * s * d0 + c * c * d1]
        };
        let a = gaussian(vec![0.0, 0.0], rotate(4.0, 1.0));
        let b = gaussian(vec![0.0, 0.0], rotate(1.0, 9.0));
        let expected = (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((frechet_distance(&a, &b) - expected).abs() < 1e-9, "{}", frechet_distance(&a, &b));
    }

    #[test]
    fn a_set_is_at_distance_zero_from_itself_and_fit_recovers_moments() {
        let samples: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![3.0, 2.0], vec![2.0, 5.0]];
        let g = Gaussian::fit(&samples);
        assert_eq!(g.mean, vec![2.0, 3.0]);
        // Centred x = (−1, 1, 0), y = (−1, −1, 2): var x = 2/2, var y = 6/2, cov = 0/2.
        assert!((g.cov[0] - 1.0).abs() < 1e-12 && (g.cov[3] - 3.0).abs() < 1e-12);
        assert!((g.cov[1] - 0.0).abs() < 1e-12, "{:?}", g.cov);
        assert!(frechet_distance(&g, &g).abs() < 1e-9);
    }
}
