//! The mask of an edit (where it may change the picture) at the two resolutions it is used at:
//! per pixel for an inpainting model (which sees the masked picture and the mask as input,
//! binarised at 0.5 as diffusers' mask processor does) and per latent cell for an ordinary
//! model's masked SDEdit (which blends the known picture back in at every step). A mask blur, as
//! AUTOMATIC1111's "Mask blur", softens the edge first: the cells then blend by their mean.

use candle_core::{Device, Result, Tensor};

/// How a latent cell of an unblurred mask is decided from its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellRule {
    /// Edited when at least half its pixels are (a mask picture).
    Majority,
    /// Edited when any of its pixels is (painted mask strokes: a thin stroke still counts).
    Any,
}

/// An edit's mask.
#[derive(Debug, Clone)]
pub struct EditMask {
    /// `[1, 1, H, W]`, 1 = repaint, binary.
    pub pixels: Tensor,
    /// `[1, 1, H/f, W/f]` in [0, 1], 1 = edit.
    pub latent: Tensor,
}

impl EditMask {
    /// From per-pixel coverage in [0, 1] (`width × height`, row-major), for a latent `factor`
    /// times smaller, blurred first by a Gaussian of standard deviation `blur` pixels (0: none).
    pub fn new(
        coverage: &[f32],
        width: usize,
        height: usize,
        factor: usize,
        blur: f32,
        rule: CellRule,
    ) -> Result<Self> {
        if coverage.len() != width * height || factor == 0 {
            return Err(candle_core::Error::Msg(format!(
                "mask: {} values for {width}x{height} pixels (latent factor {factor})",
                coverage.len()
            )));
        }
        let blurred =
            if blur > 0.0 { gaussian_blur(coverage, width, height, blur) } else { coverage.to_vec() };
        let pixels: Vec<f32> = blurred.iter().map(|&v| if v >= 0.5 { 1.0 } else { 0.0 }).collect();
        let (lw, lh) = (width / factor, height / factor);
        let mut latent = vec![0f32; lw * lh];
        for (i, cell) in latent.iter_mut().enumerate() {
            let (cx, cy) = (i % lw, i / lw);
            let values = (cy * factor..(cy + 1) * factor)
                .flat_map(|y| (cx * factor..(cx + 1) * factor).map(move |x| y * width + x))
                .map(|at| blurred[at]);
            *cell = if blur > 0.0 {
                values.sum::<f32>() / (factor * factor) as f32
            } else {
                match rule {
                    CellRule::Majority => {
                        let mean = values.sum::<f32>() / (factor * factor) as f32;
                        if mean >= 0.5 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    CellRule::Any => {
                        if values.into_iter().any(|v| v > 0.0) {
                            1.0
                        } else {
                            0.0
                        }
                    }
                }
            };
        }
        Ok(Self {
            pixels: Tensor::from_vec(pixels, (1, 1, height, width), &Device::Cpu)?,
            latent: Tensor::from_vec(latent, (1, 1, lh, lw), &Device::Cpu)?,
        })
    }
}

/// A separable Gaussian blur of standard deviation `sigma` (kernel radius 3σ), edges clamped.
pub fn gaussian_blur(values: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> =
        (-radius..=radius).map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for y in 0..height {
            for x in 0..width {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let d = k as isize - radius;
                    let (sx, sy) = if horizontal {
                        ((x as isize + d).clamp(0, width as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + d).clamp(0, height as isize - 1) as usize)
                    };
                    acc += weight * src[sy * width + sx];
                }
                out[y * width + x] = acc;
            }
        }
        out
    };
    pass(&pass(values, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(m: &EditMask) -> Vec<f32> {
        m.latent.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn cells_follow_their_rule_and_a_blur_makes_them_soft() {
        // 4x2 pixels, factor 2: the left cell has one pixel of four, the right cell three.
        let coverage = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let majority = EditMask::new(&coverage, 4, 2, 2, 0.0, CellRule::Majority).unwrap();
        assert_eq!(cells(&majority), [0.0, 1.0]);
        assert_eq!(cells(&EditMask::new(&coverage, 4, 2, 2, 0.0, CellRule::Any).unwrap()), [1.0, 1.0]);
        let pixels: Vec<f32> = majority.pixels.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(pixels, coverage);
        let soft = cells(&EditMask::new(&coverage, 4, 2, 2, 1.0, CellRule::Majority).unwrap());
        assert!(soft[0] > 0.0 && soft[0] < soft[1] && soft[1] < 1.0, "{soft:?}");
    }

    #[test]
    fn the_blur_keeps_the_total_away_from_edges_and_spreads_a_point_symmetrically() {
        let mut point = vec![0f32; 15 * 15];
        point[7 * 15 + 7] = 1.0;
        let b = gaussian_blur(&point, 15, 15, 1.5);
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((b[7 * 15 + 6] - b[7 * 15 + 8]).abs() < 1e-7 && (b[6 * 15 + 7] - b[7 * 15 + 6]).abs() < 1e-7);
        // Gaussian: a pixel to the side weighs e^(-1/(2σ²)) of the centre.
        assert!((b[7 * 15 + 6] / b[7 * 15 + 7] - (-1.0f32 / (2.0 * 2.25)).exp()).abs() < 1e-5);
    }
}
