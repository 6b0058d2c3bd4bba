//! Stroke pictures: a scene simplified into a few flat colour blobs, the kind of rough painting a
//! user gives SDEdit (the SDEdit paper simulates strokes the same way: smooth, then quantize the
//! colours).

/// Simplifies a `size`×`size` RGB picture (channels last, values in [0, 1]): the mean colour of
/// every `cell`×`cell` block, then each block painted with the nearest of `colours` palette
/// colours found by k-means. `cell` must divide `size`.
pub fn strokes(image: &[f32], size: usize, cell: usize, colours: usize) -> Vec<f32> {
    let cells = size / cell;
    let mut means = vec![[0f32; 3]; cells * cells];
    for y in 0..size {
        for x in 0..size {
            let m = &mut means[(y / cell) * cells + x / cell];
            for c in 0..3 {
                m[c] += image[(y * size + x) * 3 + c] / (cell * cell) as f32;
            }
        }
    }
    let palette = kmeans(&means, colours);
    let nearest = |p: &[f32; 3]| {
        palette.iter().min_by(|a, b| distance(a, p).total_cmp(&distance(b, p))).copied().unwrap_or(*p)
    };
    let painted: Vec<[f32; 3]> = means.iter().map(nearest).collect();
    let mut out = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            out.extend_from_slice(&painted[(y / cell) * cells + x / cell]);
        }
    }
    out
}

fn distance(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum()
}

/// `k` cluster centres of `points`: deterministic farthest-point start, then Lloyd iterations.
fn kmeans(points: &[[f32; 3]], k: usize) -> Vec<[f32; 3]> {
    let Some(&first) = points.first() else { return Vec::new() };
    let mut centres = vec![first];
    while centres.len() < k.min(points.len()) {
        let far = points.iter().max_by(|a, b| {
            let d = |p: &[f32; 3]| centres.iter().map(|c| distance(c, p)).fold(f32::INFINITY, f32::min);
            d(a).total_cmp(&d(b))
        });
        centres.extend(far.copied());
    }
    for _ in 0..20 {
        let mut sums = vec![([0f32; 3], 0usize); centres.len()];
        for p in points {
            let (i, _) = centres
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| distance(a, p).total_cmp(&distance(b, p)))
                .unwrap_or((0, &first));
            for (sum, v) in sums[i].0.iter_mut().zip(p) {
                *sum += v;
            }
            sums[i].1 += 1;
        }
        for (centre, (sum, n)) in centres.iter_mut().zip(sums) {
            if n > 0 {
                *centre = sum.map(|v| v / n as f32);
            }
        }
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strokes_are_flat_blocks_of_few_colours() {
        let size = 16;
        let image: Vec<f32> = (0..size * size * 3).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let out = strokes(&image, size, 4, 3);
        assert_eq!(out.len(), image.len());
        let pixel = |x: usize, y: usize| &out[(y * size + x) * 3..][..3];
        for y in 0..size {
            for x in 0..size {
                assert_eq!(pixel(x, y), pixel(x / 4 * 4, y / 4 * 4), "block at ({x}, {y}) is not flat");
            }
        }
        let mut colours: Vec<Vec<u32>> =
            out.chunks(3).map(|p| p.iter().map(|v| v.to_bits()).collect()).collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() <= 3, "{} colours", colours.len());
    }

    #[test]
    fn a_two_colour_picture_keeps_its_colours() {
        // Left half red, right half blue: blocks that do not straddle the edge keep their colour.
        let size = 8;
        let image: Vec<f32> = (0..size * size)
            .flat_map(|i| if i % size < size / 2 { [1.0, 0.0, 0.0] } else { [0.0, 0.0, 1.0] })
            .collect();
        assert_eq!(strokes(&image, size, 2, 2), image);
    }
}
