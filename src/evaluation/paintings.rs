//! Flat-colour paintings of the kind a user hands SDEdit — a sky, a sun or moon disc, mountain
//! triangles, a lake or sea band, a beach, a row of trees — each with the regions that say
//! whether an edit kept what was painted: the element itself and the background beside it. Their
//! captions are the scenes' own (same parameters, same grammar), so an edit has one right answer.

use super::sharpness::luminance;
use crate::dataset::scenes::{caption, SceneParams, TimeOfDay, Trees, Water};

/// Something painted, with where it is and what surrounds it.
#[derive(Debug, Clone)]
pub struct Element {
    /// `disc`, `peak`, `water`, `beach` or `trees`.
    pub kind: &'static str,
    /// Pixels of the element (row-major, `size`×`size`).
    pub inside: Vec<bool>,
    /// Pixels of the background beside it that its contrast is measured against.
    pub beside: Vec<bool>,
}

/// A painting, its caption, and its elements.
#[derive(Debug, Clone)]
pub struct Painting {
    /// RGB, channels last, values in [0, 1].
    pub image: Vec<f32>,
    /// The caption of the scene it paints.
    pub caption: String,
    /// What was painted, for [`contrast_kept`].
    pub elements: Vec<Element>,
}

type Rgb = [f32; 3];

/// Flat colours a person would pick: (sky, disc) per time of day.
fn sky_and_disc(time: TimeOfDay) -> (Rgb, Rgb) {
    match time {
        TimeOfDay::Dawn => ([0.93, 0.66, 0.7], [1.0, 0.93, 0.65]),
        TimeOfDay::Day => ([0.35, 0.6, 0.93], [1.0, 0.97, 0.8]),
        TimeOfDay::Sunset => ([0.95, 0.5, 0.25], [1.0, 0.85, 0.4]),
        TimeOfDay::Dusk => ([0.3, 0.2, 0.45], [0.95, 0.94, 0.85]),
        TimeOfDay::Night => ([0.03, 0.05, 0.15], [0.95, 0.94, 0.85]),
    }
}

/// How light the land is at each time of day (paint is darker at night).
fn light(time: TimeOfDay) -> f32 {
    match time {
        TimeOfDay::Day => 1.0,
        TimeOfDay::Dawn | TimeOfDay::Sunset => 0.8,
        TimeOfDay::Dusk => 0.55,
        TimeOfDay::Night => 0.35,
    }
}

const ROCK: Rgb = [0.45, 0.44, 0.52];
const SNOW: Rgb = [0.95, 0.95, 0.98];
const GRASS: Rgb = [0.3, 0.56, 0.2];
const SAND: Rgb = [0.87, 0.76, 0.5];
const WATER: Rgb = [0.16, 0.33, 0.62];
const PINE: Rgb = [0.08, 0.28, 0.12];

/// The painting of the scene drawn from `seed`, `size`×`size`: its sky, disc, mountains, water,
/// beach and trees as flat shapes where the scene has them, and the scene's caption.
pub fn painting(seed: u64, size: usize) -> Painting {
    use crate::dataset::scenes::Mountains;
    let p = SceneParams::random(seed);
    let (sky, disc) = sky_and_disc(p.time);
    let lit = |c: Rgb| c.map(|v| v * light(p.time));
    let mut canvas = Canvas { size, image: sky.iter().copied().cycle().take(size * size * 3).collect() };
    // Each element with the colours it was painted in, to drop what later shapes covered.
    let mut painted: Vec<(Element, Vec<Rgb>)> = Vec::new();
    let horizon = p.horizon;
    let mut rng = Jitter(seed ^ 0x9A17_7E55);

    let mut mountain = vec![false; size * size];
    if p.mountains != Mountains::None {
        let (rock, snow) = (lit(ROCK), SNOW.map(|v| v * light(p.time).max(0.6)));
        let peaks = 1 + (rng.next() * 3.0) as usize;
        for k in 0..peaks {
            let x = (k as f32 + 0.2 + 0.6 * rng.next()) / peaks as f32;
            let height = 0.14 + 0.1 * rng.next();
            let half = height * (1.0 + 0.5 * rng.next());
            let top = horizon - height;
            let within = |u: f32, v: f32| v < horizon && horizon - v < height * (1.0 - (u - x).abs() / half);
            canvas.fill(&canvas.mask(within), rock);
            let colours = if p.mountains == Mountains::Snowy {
                canvas.fill(&canvas.mask(|u, v| within(u, v) && horizon - v > height * 0.65), snow);
                vec![rock, snow]
            } else {
                vec![rock]
            };
            let upper = |v: f32| (top..top + height / 2.0).contains(&v);
            let inside = canvas.mask(|u, v| within(u, v) && upper(v));
            let beside = canvas.mask(|u, v| upper(v) && (u - x).abs() < half && !within(u, v));
            for (m, i) in mountain.iter_mut().zip(canvas.mask(within)) {
                *m |= i;
            }
            painted.push((Element { kind: "peak", inside, beside }, colours));
        }
    }
    if let Some(body) = p.body {
        // Painted large enough to see, in the sky clear of the mountains.
        let r = body.radius.max(0.06);
        let d = |u: f32, v: f32| (u - body.x).hypot(v - body.y);
        let sky_at = |i: usize, v: f32| v < horizon && !mountain[i];
        let inside = canvas.mask_at(|i, u, v| d(u, v) < r && sky_at(i, v));
        let beside = canvas.mask_at(|i, u, v| (r * 1.4..r * 2.4).contains(&d(u, v)) && sky_at(i, v));
        canvas.fill(&inside, disc);
        painted.push((Element { kind: "disc", inside, beside }, vec![disc]));
    }
    let ground = lit(if p.desert { SAND } else { GRASS });
    canvas.fill(&canvas.mask(|_, v| v >= horizon), ground);
    match p.water {
        Water::None => {}
        Water::Lake => {
            let (top, bottom) = (horizon + 0.04 + 0.06 * rng.next(), horizon + 0.2 + 0.12 * rng.next());
            let inside = canvas.mask(|_, v| (top..bottom).contains(&v));
            canvas.fill(&inside, lit(WATER));
            let beside = canvas.mask(|_, v| (bottom + 0.03..bottom + 0.13).contains(&v));
            painted.push((Element { kind: "water", inside, beside }, vec![lit(WATER)]));
        }
        Water::Sea => {
            canvas.fill(&canvas.mask(|_, v| v >= horizon), lit(WATER));
            if p.beach {
                let top = 0.78 + 0.1 * rng.next();
                let inside = canvas.mask(|_, v| v >= top);
                canvas.fill(&inside, lit(SAND));
                let beside = canvas.mask(|_, v| (top - 0.12..top - 0.02).contains(&v));
                painted.push((Element { kind: "beach", inside, beside }, vec![lit(SAND)]));
            }
        }
    }
    if p.trees != Trees::None {
        // A row of pine triangles standing on the horizon (a forest) or in the foreground (pines).
        let (base, height, count) =
            if p.trees == Trees::Forest { (horizon + 0.03, 0.09, 9) } else { (0.9, 0.3, 3) };
        let half = 0.35 / count as f32;
        let offset = rng.next() / count as f32;
        let tree = |u: f32, v: f32| {
            let x = offset + ((u - offset) * count as f32).round() / count as f32;
            v < base && base - v < height * (1.0 - (u - x).abs() / half)
        };
        let inside = canvas.mask(tree);
        canvas.fill(&inside, lit(PINE));
        let beside = canvas.mask(|u, v| v < base && v > base - height * 0.5 && !tree(u, v));
        painted.push((Element { kind: "trees", inside, beside }, vec![lit(PINE)]));
    }
    // Later shapes cover earlier ones: an element keeps the pixels still in its own colours, its
    // background the pixels in none of them; it counts when both are there and differ in
    // luminance.
    let elements = painted
        .into_iter()
        .filter_map(|(mut e, colours)| {
            for (k, (i, b)) in e.inside.iter_mut().zip(e.beside.iter_mut()).enumerate() {
                let own = colours.contains(&canvas.pixel(k));
                *i &= own;
                *b &= !own;
            }
            let count = |m: &[bool]| m.iter().filter(|&&x| x).count();
            let contrast =
                mean_luminance(&canvas.image, &e.inside) - mean_luminance(&canvas.image, &e.beside);
            (count(&e.inside) >= 4 && count(&e.beside) >= 4 && contrast.abs() >= MIN_CONTRAST).then_some(e)
        })
        .collect();
    Painting { image: canvas.image, caption: caption(&p, seed), elements }
}

/// Elements closer in luminance to their background than this are not measured: the share of
/// a contrast that small is noise.
const MIN_CONTRAST: f64 = 0.08;

/// Mean luminance (Rec. 601 weights) of `image`'s pixels under `mask`.
fn mean_luminance(image: &[f32], mask: &[bool]) -> f64 {
    let (sum, count) = mask.iter().enumerate().filter(|(_, &m)| m).fold((0f64, 0usize), |(s, c), (i, _)| {
        let p = &image[i * 3..i * 3 + 3];
        (s + f64::from(luminance(p)), c + 1)
    });
    sum / count.max(1) as f64
}

/// The luminance contrast of `element` (inside minus beside) in `edited`, as a share of the same
/// contrast in the painting `painted`: 1 when kept, 0 when gone, negative when inverted.
pub fn contrast_kept(element: &Element, painted: &[f32], edited: &[f32]) -> f64 {
    let contrast =
        |image: &[f32]| mean_luminance(image, &element.inside) - mean_luminance(image, &element.beside);
    let before = contrast(painted);
    if before.abs() < 1e-6 {
        return 1.0;
    }
    contrast(edited) / before
}

/// Pearson correlation between the mean luminances of two `size`×`size` pictures on a
/// `cells`×`cells` grid: whether an edit kept the painting's layout. 0 when either is flat.
pub fn layout_correlation(a: &[f32], b: &[f32], size: usize, cells: usize) -> f64 {
    let grid = |image: &[f32]| {
        let mut g = vec![0f64; cells * cells];
        for y in 0..size {
            for x in 0..size {
                let p = &image[(y * size + x) * 3..][..3];
                let cell = (y * cells / size) * cells + x * cells / size;
                g[cell] += f64::from(luminance(p));
            }
        }
        g
    };
    let (ga, gb) = (grid(a), grid(b));
    let mean = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
    let (ma, mb) = (mean(&ga), mean(&gb));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in ga.iter().zip(&gb) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    if aa < 1e-12 || bb < 1e-12 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// A picture being painted, addressed in fractions of the side (pixel centres).
struct Canvas {
    size: usize,
    image: Vec<f32>,
}

impl Canvas {
    /// Pixels where `f(u, v)` holds, `u` and `v` the pixel centre's fractions of the side.
    fn mask(&self, f: impl Fn(f32, f32) -> bool) -> Vec<bool> {
        self.mask_at(|_, u, v| f(u, v))
    }

    /// As [`Canvas::mask`], `f` also given the pixel's index.
    fn mask_at(&self, f: impl Fn(usize, f32, f32) -> bool) -> Vec<bool> {
        let s = self.size as f32;
        (0..self.size * self.size)
            .map(|i| f(i, ((i % self.size) as f32 + 0.5) / s, ((i / self.size) as f32 + 0.5) / s))
            .collect()
    }

    fn fill(&mut self, mask: &[bool], colour: Rgb) {
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            self.image[i * 3..i * 3 + 3].copy_from_slice(&colour);
        }
    }

    fn pixel(&self, i: usize) -> Rgb {
        [self.image[i * 3], self.image[i * 3 + 1], self.image[i * 3 + 2]]
    }
}

/// Deterministic jitter of the shapes, from the painting's seed (SplitMix64).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paintings_have_measurable_elements_of_every_kind() {
        let paintings: Vec<_> = (0..60).map(|s| painting(s, 128)).collect();
        for kind in ["disc", "peak", "water", "beach", "trees"] {
            let n = paintings.iter().flat_map(|p| &p.elements).filter(|e| e.kind == kind).count();
            assert!(n >= 3, "{kind}: {n} in 60 paintings");
        }
        for p in &paintings {
            assert_eq!(p.image.len(), 128 * 128 * 3);
            assert!(!p.caption.is_empty());
            for e in &p.elements {
                assert!(!e.inside.iter().zip(&e.beside).any(|(i, b)| *i && *b), "{}: overlap", e.kind);
                assert!(contrast_kept(e, &p.image, &p.image) == 1.0);
                let flat = vec![0.5; p.image.len()];
                assert!(contrast_kept(e, &p.image, &flat).abs() < 1e-9, "{}: kept on a flat picture", e.kind);
            }
        }
    }

    #[test]
    fn contrast_is_kept_fully_halved_or_inverted() {
        // Left column of a 2x1 picture inside, right column beside.
        let element = Element { kind: "disc", inside: vec![true, false], beside: vec![false, true] };
        let painted = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let halved = [0.75, 0.75, 0.75, 0.25, 0.25, 0.25];
        let inverted = [0.2, 0.2, 0.2, 0.6, 0.6, 0.6];
        assert!((contrast_kept(&element, &painted, &halved) - 0.5).abs() < 1e-6);
        assert!((contrast_kept(&element, &painted, &inverted) + 0.4).abs() < 1e-6);
    }

    #[test]
    fn layout_correlation_is_one_for_a_brightened_copy_and_negative_for_a_flipped_one() {
        let size = 16;
        let image: Vec<f32> = (0..size * size).flat_map(|i| [(i % size) as f32 / 15.0; 3]).collect();
        let brighter: Vec<f32> = image.iter().map(|v| v * 0.5 + 0.3).collect();
        let flipped: Vec<f32> = image.iter().map(|v| 1.0 - v).collect();
        assert!((layout_correlation(&image, &brighter, size, 8) - 1.0).abs() < 1e-9);
        assert!((layout_correlation(&image, &flipped, size, 8) + 1.0).abs() < 1e-9);
        assert_eq!(layout_correlation(&image, &[0.5; 16 * 16 * 3], size, 8), 0.0);
    }
}
