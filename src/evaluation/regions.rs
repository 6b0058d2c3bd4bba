//! Whether paint with words put a phrase where it was painted: a bright disc (sun or moon) on
//! the painted side of the sky, and water's colour in a painted band. Pictures are RGB, channels
//! last, values in [0, 1], `size` × `size`.

/// Luminance (Rec. 601) of each pixel.
fn luminance(picture: &[f32]) -> Vec<f32> {
    picture.chunks_exact(3).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).collect()
}

/// Mean of `values` (a `size`-wide map) over the pixels whose distance from (cx, cy) is in
/// `[r0, r1)`, clipped to the picture.
fn ring_mean(values: &[f32], size: usize, (cx, cy): (f32, f32), r0: f32, r1: f32) -> f32 {
    let (lo_y, hi_y) = (((cy - r1).floor().max(0.0)) as usize, ((cy + r1).ceil() as usize).min(size));
    let (lo_x, hi_x) = (((cx - r1).floor().max(0.0)) as usize, ((cx + r1).ceil() as usize).min(size));
    let (mut sum, mut n) = (0f32, 0usize);
    for y in lo_y..hi_y {
        for x in lo_x..hi_x {
            let d = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
            if d >= r0 && d < r1 {
                sum += values[y * size + x];
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

/// How disc-like the brightest spot of each half of the sky is: the largest luminance step from
/// a small disc (radius 4% of the side) to the ring around it (7% to 12%), over centres in the
/// top half of the picture, for the left and the right half. A sun or moon scores 0.15 and more,
/// a plain or graded sky about 0.
pub fn disc_scores(picture: &[f32], size: usize) -> (f32, f32) {
    let y = luminance(picture);
    let s = size as f32;
    let (inner, ring) = (0.04 * s, (0.07 * s, 0.12 * s));
    let mut best = (f32::MIN, f32::MIN);
    let step = (size / 64).max(1);
    for cy in (size / 20..size / 2).step_by(step) {
        for cx in (0..size).step_by(step) {
            let c = (cx as f32 + 0.5, cy as f32 + 0.5);
            let score = ring_mean(&y, size, c, 0.0, inner) - ring_mean(&y, size, c, ring.0, ring.1);
            let side = if cx < size / 2 { &mut best.0 } else { &mut best.1 };
            *side = side.max(score);
        }
    }
    best
}

/// The smallest disc score that counts as a sun or moon (see [`disc_scores`]).
pub const DISC_SCORE: f32 = 0.08;

/// Whether a disc stands on the `left` (else right) half of the sky: that half scores at least
/// [`DISC_SCORE`] and more than the other.
pub fn disc_on_side(picture: &[f32], size: usize, left: bool) -> bool {
    let (l, r) = disc_scores(picture, size);
    let (painted, other) = if left { (l, r) } else { (r, l) };
    painted >= DISC_SCORE && painted > other
}

/// Blueness of the rows `rows` (fractions of the height): the mean of B − (R + G)/2. Water in
/// the built-in model's world is about 0.15 to 0.3; sand about −0.25.
pub fn blueness(picture: &[f32], size: usize, rows: std::ops::Range<f32>) -> f32 {
    let (lo, hi) = ((rows.start * size as f32) as usize, ((rows.end * size as f32) as usize).min(size));
    let pixels = &picture[lo * size * 3..hi * size * 3];
    let n = (pixels.len() / 3).max(1) as f32;
    pixels.chunks_exact(3).map(|p| p[2] - 0.5 * (p[0] + p[1])).sum::<f32>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sky graded top to bottom with an optional bright disc.
    fn sky(size: usize, disc: Option<(f32, f32, f32)>) -> Vec<f32> {
        let mut p = Vec::with_capacity(size * size * 3);
        for y in 0..size {
            for x in 0..size {
                let base = 0.3 + 0.4 * y as f32 / size as f32;
                let inside = disc.is_some_and(|(cx, cy, r)| {
                    (x as f32 + 0.5 - cx * size as f32).hypot(y as f32 + 0.5 - cy * size as f32)
                        < r * size as f32
                });
                let v = if inside { 1.0 } else { base };
                p.extend([v * 0.6, v * 0.8, v]);
            }
        }
        p
    }

    #[test]
    fn a_disc_is_found_on_its_side_and_a_plain_sky_has_none() {
        let size = 64;
        let left = sky(size, Some((0.25, 0.25, 0.06)));
        assert!(disc_on_side(&left, size, true));
        assert!(!disc_on_side(&left, size, false));
        let right = sky(size, Some((0.8, 0.3, 0.06)));
        assert!(disc_on_side(&right, size, false));
        let plain = sky(size, None);
        let (l, r) = disc_scores(&plain, size);
        assert!(l < DISC_SCORE && r < DISC_SCORE, "{l} {r}");
    }

    #[test]
    fn blueness_tells_water_from_sand() {
        let size = 8;
        let mut p = vec![0f32; size * size * 3];
        for (i, px) in p.chunks_exact_mut(3).enumerate() {
            let water = i / size >= size / 2;
            px.copy_from_slice(if water { &[0.15, 0.35, 0.6] } else { &[0.85, 0.75, 0.5] });
        }
        assert!((blueness(&p, size, 0.5..1.0) - 0.35).abs() < 1e-6);
        assert!((blueness(&p, size, 0.0..0.5) + 0.3).abs() < 1e-6);
    }
}
