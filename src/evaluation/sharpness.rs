//! Edge energy: how much detail a picture has, as the mean absolute luminance difference between
//! horizontally and vertically neighbouring pixels. Blur lowers it, noise raises it; generated
//! pictures are compared with the generator's own scenes drawn at the same size.

/// Luminance (Rec. 601 weights) of an RGB pixel.
pub fn luminance(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// The mean absolute luminance difference between neighbouring pixels of a `width`×`height`
/// RGB picture (channels last, values in [0, 1]), over every horizontal and vertical pair.
pub fn edge_energy(image: &[f32], width: usize, height: usize) -> f64 {
    let lum: Vec<f32> = image.chunks_exact(3).map(luminance).collect();
    if lum.len() != width * height {
        return 0.0;
    }
    let (mut sum, mut pairs) = (0f64, 0usize);
    for y in 0..height {
        for x in 0..width {
            let here = lum[y * width + x];
            if x + 1 < width {
                sum += f64::from((lum[y * width + x + 1] - here).abs());
                pairs += 1;
            }
            if y + 1 < height {
                sum += f64::from((lum[(y + 1) * width + x] - here).abs());
                pairs += 1;
            }
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sum / pairs as f64
    }
}

/// The mean edge energy of square `size`×`size` pictures.
pub fn mean_edge_energy(images: &[Vec<f32>], size: usize) -> f64 {
    images.iter().map(|i| edge_energy(i, size, size)).sum::<f64>() / images.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_pictures_have_none_and_stripes_the_closed_form() {
        assert_eq!(edge_energy(&[0.3; 4 * 4 * 3], 4, 4), 0.0);
        // Vertical stripes alternating black and white: every horizontal pair differs by 1, no
        // vertical pair differs: 12 of the 24 pairs of a 4x4 picture.
        let stripes: Vec<f32> = (0..16).flat_map(|i| [((i % 4) % 2) as f32; 3]).collect();
        assert!((edge_energy(&stripes, 4, 4) - 0.5).abs() < 1e-6);
        // One channel only counts by its luminance weight: a red step across a 2x1 picture.
        assert!((edge_energy(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0], 2, 1) - 0.299).abs() < 1e-6);
        assert!((mean_edge_energy(&[stripes, vec![0.0; 48]], 4) - 0.25).abs() < 1e-6);
    }
}
