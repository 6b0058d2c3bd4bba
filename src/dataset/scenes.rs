//! Captioned landscape scenes, deterministic per seed: sky by time of day, sun or moon with glow,
//! stars, clouds, layered mountain ranges with noisy ridges and snow caps, rolling hills, lakes
//! or sea with reflections, beaches, pine trees and forests, fields and desert dunes. Colours are
//! bold and flat enough that rough strokes have an obvious "right answer" (the SDEdit showcase).

use serde::{Deserialize, Serialize};

/// Time of day: sets the sky gradient and the light on the ground.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeOfDay {
    /// Pink and peach sky.
    Dawn,
    /// Blue sky.
    Day,
    /// Orange and red sky.
    Sunset,
    /// Purple sky.
    Dusk,
    /// Dark navy sky.
    Night,
}

impl TimeOfDay {
    const ALL: [Self; 5] = [Self::Dawn, Self::Day, Self::Sunset, Self::Dusk, Self::Night];

    fn word(self) -> &'static str {
        match self {
            Self::Dawn => "dawn",
            Self::Day => "day",
            Self::Sunset => "sunset",
            Self::Dusk => "dusk",
            Self::Night => "night",
        }
    }

    /// Sky colour at the top and at the horizon.
    fn sky(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::Dawn => ([0.42, 0.48, 0.78], [1.0, 0.72, 0.62]),
            Self::Day => ([0.2, 0.45, 0.92], [0.62, 0.8, 1.0]),
            Self::Sunset => ([0.32, 0.18, 0.42], [1.0, 0.5, 0.12]),
            Self::Dusk => ([0.1, 0.08, 0.28], [0.58, 0.3, 0.52]),
            Self::Night => ([0.01, 0.02, 0.08], [0.06, 0.09, 0.24]),
        }
    }

    /// Light on the ground, per channel.
    fn light(self) -> [f32; 3] {
        match self {
            Self::Dawn => [0.95, 0.82, 0.82],
            Self::Day => [1.0, 1.0, 1.0],
            Self::Sunset => [1.0, 0.7, 0.5],
            Self::Dusk => [0.5, 0.42, 0.6],
            Self::Night => [0.22, 0.25, 0.4],
        }
    }
}

/// Three-way choices share one shape: nothing, a plain kind, a special kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// No sun or moon.
    None,
    /// A sun (dawn, day, sunset).
    Sun,
    /// A moon (dusk, night).
    Moon,
}

/// Mountain ranges on the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mountains {
    /// None.
    None,
    /// Bare rock.
    Plain,
    /// With snow caps.
    Snowy,
}

/// Water below the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Water {
    /// None.
    None,
    /// A lake in the middle of the land.
    Lake,
    /// Sea up to the horizon.
    Sea,
}

/// Trees on the land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trees {
    /// None.
    None,
    /// A few pine trees.
    Pine,
    /// A forest band along the horizon.
    Forest,
}

/// Everything a scene shows; the caption and the picture are both made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneParams {
    /// Time of day.
    pub time: TimeOfDay,
    /// Sun, moon or neither.
    pub body: Body,
    /// Centre of the sun or moon, in [0, 1] image coordinates.
    pub body_pos: (f32, f32),
    /// Radius of the disc, in image widths.
    pub body_radius: f32,
    /// Stars in the sky.
    pub stars: bool,
    /// Number of clouds (0 = clear).
    pub clouds: u8,
    /// Mountains.
    pub mountains: Mountains,
    /// Number of mountain ranges, 1 to 3.
    pub ranges: u8,
    /// Rolling hills.
    pub hills: bool,
    /// Lake or sea.
    pub water: Water,
    /// A beach in front of the sea.
    pub beach: bool,
    /// Trees.
    pub trees: Trees,
    /// Striped fields.
    pub fields: bool,
    /// Desert dunes instead of grass.
    pub desert: bool,
    /// Horizon height in [0, 1] from the top.
    pub horizon: f32,
    /// Seed of the shapes (ridges, cloud and tree positions).
    pub detail: u64,
}

/// SplitMix64: tiny, fast and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

impl SceneParams {
    /// The scene for `seed`: every attribute value occurs often, combinations stay plausible.
    pub fn random(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x5CE4_E5B9_1234_5678);
        let time = r.pick(&TimeOfDay::ALL);
        let desert = r.chance(0.15);
        let body = match (r.chance(0.75), time) {
            (false, _) => Body::None,
            (true, TimeOfDay::Dusk | TimeOfDay::Night) => Body::Moon,
            (true, _) => Body::Sun,
        };
        let horizon = r.range(0.5, 0.66);
        let body_y = match time {
            TimeOfDay::Sunset | TimeOfDay::Dawn => r.range(horizon - 0.22, horizon - 0.08),
            _ => r.range(0.1, horizon - 0.2),
        };
        let body_pos = (r.range(0.15, 0.85), body_y);
        let body_radius = r.range(0.05, 0.09);
        let stars = match time {
            TimeOfDay::Night => r.chance(0.8),
            TimeOfDay::Dusk => r.chance(0.4),
            _ => false,
        };
        let clouds = if r.chance(0.4) { 1 + (r.next() % 3) as u8 } else { 0 };
        let mountains = match (r.chance(0.55), r.chance(0.5) && !desert) {
            (false, _) => Mountains::None,
            (true, true) => Mountains::Snowy,
            (true, false) => Mountains::Plain,
        };
        let ranges = 1 + (r.next() % 3) as u8;
        let water = match (desert, r.unit()) {
            (true, _) => Water::None,
            (false, u) if u < 0.25 => Water::Lake,
            (false, u) if u < 0.5 => Water::Sea,
            _ => Water::None,
        };
        let beach = water == Water::Sea && r.chance(0.5);
        let trees = match (desert, r.unit()) {
            (true, _) => Trees::None,
            (false, u) if u < 0.2 => Trees::Pine,
            (false, u) if u < 0.4 && water != Water::Sea => Trees::Forest,
            _ => Trees::None,
        };
        let hills = !desert && water != Water::Sea && r.chance(0.35);
        let fields = !desert && water == Water::None && r.chance(0.35);
        let mut params = Self {
            time,
            body,
            body_pos,
            body_radius,
            stars,
            clouds,
            mountains,
            ranges,
            hills,
            water,
            beach,
            trees,
            fields,
            desert,
            horizon,
            detail: r.next(),
        };
        if params.landmarks().is_empty() {
            params.hills = true;
        }
        params
    }

    /// Categorical labels for an attribute classifier: (name, class index).
    pub fn labels(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("time_of_day", self.time as usize),
            ("body", self.body as usize),
            ("water", self.water as usize),
            ("mountains", self.mountains as usize),
            ("trees", self.trees as usize),
            ("desert", usize::from(self.desert)),
            ("hills", usize::from(self.hills)),
            ("fields", usize::from(self.fields)),
            ("stars", usize::from(self.stars)),
            ("clouds", usize::from(self.clouds > 0)),
            ("beach", usize::from(self.beach)),
        ]
    }

    /// The caption's noun phrases for what stands on the land and water, most prominent first.
    fn landmarks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        match self.mountains {
            Mountains::Snowy => out.push("snowy mountains"),
            Mountains::Plain => out.push("mountains"),
            Mountains::None => {}
        }
        if self.desert {
            out.push("desert dunes");
        }
        match self.water {
            Water::Lake => out.push("a lake"),
            Water::Sea => out.push("the sea"),
            Water::None => {}
        }
        if self.beach {
            out.push("a beach");
        }
        match self.trees {
            Trees::Forest => out.push("a forest"),
            Trees::Pine => out.push("pine trees"),
            Trees::None => {}
        }
        if self.hills {
            out.push("rolling hills");
        }
        if self.fields {
            out.push("fields");
        }
        out
    }
}

/// A caption for `params`; `seed` picks among equivalent templates.
pub fn caption(params: &SceneParams, seed: u64) -> String {
    let mut r = Rng(seed ^ 0xCA97_1011);
    let marks = params.landmarks();
    let mut sky = Vec::new();
    match params.body {
        Body::Sun => sky.push("the sun"),
        Body::Moon => sky.push("the moon"),
        Body::None => {}
    }
    if params.stars {
        sky.push("stars");
    }
    if params.clouds > 0 {
        sky.push("clouds");
    }
    let time = params.time.word();
    let (main, rest) = marks.split_first().map_or(("hills", &[][..]), |(m, rest)| (*m, rest));
    let mut extras: Vec<&str> = rest.to_vec();
    extras.extend(sky);
    let before = r.chance(0.5);
    loop {
        let with = if extras.is_empty() { String::new() } else { format!(" with {}", extras.join(" and ")) };
        let text =
            if before { format!("{time} over {main}{with}") } else { format!("{main}{with} at {time}") };
        // Keep within the tokenizer's 16 words: drop the least prominent extras first.
        if text.split_whitespace().count() <= 16 || extras.is_empty() {
            return text;
        }
        extras.pop();
    }
}

/// A generated scene: its parameters, caption and RGB picture.
#[derive(Debug, Clone)]
pub struct Scene {
    /// What it shows.
    pub params: SceneParams,
    /// Its caption.
    pub caption: String,
    /// `size × size × 3`, row-major, channels last, values in [0, 1].
    pub image: Vec<f32>,
    /// Side length in pixels.
    pub size: usize,
}

/// The scene for `seed` at `size × size` pixels.
pub fn scene(seed: u64, size: usize) -> Scene {
    let params = SceneParams::random(seed);
    let caption = caption(&params, seed);
    let image = render(&params, size);
    Scene { params, caption, image, size }
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn lit(c: [f32; 3], light: [f32; 3]) -> [f32; 3] {
    [c[0] * light[0], c[1] * light[1], c[2] * light[2]]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Smooth 1-D noise in about [-1, 1]: a few sines with seed-dependent frequencies and phases.
fn ridge_noise(x: f32, seed: u64) -> f32 {
    let mut r = Rng(seed);
    (0..4)
        .map(|k| {
            let freq = (k as f32 + 1.0).powf(1.7) * r.range(2.0, 4.0);
            let amp = 0.6f32.powi(k);
            amp * (freq * x * std::f32::consts::TAU / 4.0 + r.range(0.0, 6.3)).sin()
        })
        .sum::<f32>()
        / 1.9
}

/// An image being painted: coordinates in [0, 1], one colour per pixel centre.
struct Canvas {
    size: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    /// Blends `colour` with weight `alpha(x, y)` into every pixel.
    fn paint(&mut self, mut f: impl FnMut(f32, f32) -> Option<([f32; 3], f32)>) {
        let s = self.size as f32;
        for (i, p) in self.px.iter_mut().enumerate() {
            let (x, y) = (((i % self.size) as f32 + 0.5) / s, ((i / self.size) as f32 + 0.5) / s);
            if let Some((c, a)) = f(x, y) {
                *p = mix(*p, c, a.clamp(0.0, 1.0));
            }
        }
    }
}

/// Renders `params` as `size × size × 3` floats in [0, 1].
pub fn render(params: &SceneParams, size: usize) -> Vec<f32> {
    let p = params;
    let (top, horizon_col) = p.time.sky();
    let light = p.time.light();
    let h = p.horizon;
    let mut c = Canvas { size, px: vec![[0.0; 3]; size * size] };
    // Sky gradient, continued below the horizon so water can reflect it.
    c.paint(|_, y| Some((mix(top, horizon_col, (y / h).min(1.0).powf(1.3)), 1.0)));
    if p.stars {
        let mut r = Rng(p.detail ^ 0x57A2);
        let stars: Vec<(f32, f32, f32)> =
            (0..40).map(|_| (r.unit(), r.range(0.0, h * 0.9), r.range(0.5, 1.0))).collect();
        let px = 1.0 / size as f32;
        c.paint(|x, y| {
            stars
                .iter()
                .find(|(sx, sy, _)| (x - sx).abs() < px * 0.6 && (y - sy).abs() < px * 0.6)
                .map(|&(_, _, b)| ([0.95, 0.95, 0.85], b))
        });
    }
    let (bx, by) = p.body_pos;
    let body_col = match (p.body, p.time) {
        (Body::Moon, _) => [0.95, 0.94, 0.82],
        (_, TimeOfDay::Sunset) => [1.0, 0.55, 0.15],
        (_, TimeOfDay::Dawn) => [1.0, 0.82, 0.55],
        _ => [1.0, 0.97, 0.78],
    };
    if p.body != Body::None {
        let rad = p.body_radius;
        let glow = if p.body == Body::Sun { 0.55 } else { 0.3 };
        c.paint(|x, y| {
            let d = ((x - bx).powi(2) + (y - by).powi(2)).sqrt();
            (y < h).then(|| {
                let disc = 1.0 - smoothstep(rad * 0.85, rad, d);
                let halo = glow * (-(d - rad).max(0.0) / (rad * 1.2)).exp();
                (body_col, disc.max(halo))
            })
        });
    }
    if p.clouds > 0 {
        let mut r = Rng(p.detail ^ 0xC10D);
        let clouds: Vec<(f32, f32, f32)> =
            (0..p.clouds).map(|_| (r.range(0.1, 0.9), r.range(0.08, h * 0.6), r.range(0.12, 0.2))).collect();
        let cloud_col = mix([0.97, 0.97, 0.97], horizon_col, 0.35);
        let cloud_col = if p.time == TimeOfDay::Night { [0.2, 0.22, 0.3] } else { cloud_col };
        c.paint(|x, y| {
            let a = clouds
                .iter()
                .map(|&(cx, cy, w)| {
                    let lobes = [(0.0, 0.0, 1.0), (-0.45, 0.25, 0.7), (0.45, 0.2, 0.75), (0.15, -0.3, 0.6)];
                    lobes
                        .iter()
                        .map(|(ox, oy, s)| {
                            let (dx, dy) =
                                ((x - cx - ox * w) / (w * s), (y - cy - oy * w * 0.5) / (w * s * 0.45));
                            1.0 - smoothstep(0.7, 1.0, (dx * dx + dy * dy).sqrt())
                        })
                        .fold(0.0f32, f32::max)
                })
                .fold(0.0f32, f32::max);
            (a > 0.0).then_some((cloud_col, a * 0.9))
        });
    }
    if p.mountains != Mountains::None {
        for k in 0..p.ranges {
            let far = (p.ranges - 1 - k) as f32 / 3.0; // 0 = nearest
            let base = h + 0.01;
            let amp = 0.28 - 0.07 * k as f32;
            let seed = p.detail.wrapping_add(k as u64 * 7919);
            let rock = lit(mix([0.38, 0.36, 0.42], horizon_col, 0.25 + 0.45 * far), light);
            let snow = lit(mix([0.96, 0.97, 1.0], horizon_col, 0.15 + 0.3 * far), light);
            let snowy = p.mountains == Mountains::Snowy;
            c.paint(|x, y| {
                let ridge = base - amp * (0.55 + 0.45 * ridge_noise(x, seed));
                (y >= ridge && y < base + 0.02).then(|| {
                    let shade = 1.0 - 0.25 * ((y - ridge) / amp).min(1.0);
                    let colour = if snowy && y < ridge + amp * 0.22 && ridge < base - amp * 0.45 {
                        snow
                    } else {
                        [rock[0] * shade, rock[1] * shade, rock[2] * shade]
                    };
                    (colour, 1.0)
                })
            });
        }
    }
    // The land below the horizon.
    let grass = lit(if p.desert { [0.93, 0.68, 0.36] } else { [0.3, 0.6, 0.22] }, light);
    c.paint(|_, y| {
        (y >= h)
            .then(|| (mix(grass, [grass[0] * 0.8, grass[1] * 0.8, grass[2] * 0.8], (y - h) / (1.0 - h)), 1.0))
    });
    if p.hills {
        let seed = p.detail ^ 0x4177;
        c.paint(|x, y| {
            let crest = h - 0.05 + 0.035 * ridge_noise(x * 0.6, seed);
            (y >= crest).then(|| {
                let band = ((y - crest) * 14.0 + ridge_noise(x, seed ^ 1) * 1.5).floor() as i32 % 2;
                let g = if band == 0 { [0.36, 0.68, 0.26] } else { [0.27, 0.56, 0.2] };
                (lit(g, light), 1.0)
            })
        });
    }
    if p.desert {
        let seed = p.detail ^ 0xD00E;
        c.paint(|x, y| {
            (y >= h).then(|| {
                let wave = ((y - h) * 18.0 + 1.4 * ridge_noise(x, seed)).floor() as i32 % 2;
                let sand = if wave == 0 { [0.95, 0.72, 0.4] } else { [0.82, 0.55, 0.28] };
                (lit(sand, light), 1.0)
            })
        });
    }
    if p.fields {
        c.paint(|x, y| {
            let start = h + 0.12;
            (y >= start).then(|| {
                let stripe = (((y - start) * 22.0) + (x - 0.5) * 3.0).floor() as i32 % 2;
                let col = if stripe == 0 { [0.92, 0.8, 0.28] } else { [0.5, 0.7, 0.22] };
                (lit(col, light), 1.0)
            })
        });
    }
    if p.water != Water::None {
        let sky_at = |y: f32| mix(top, horizon_col, (y / h).clamp(0.0, 1.0).powf(1.3));
        let (x0, x1, y1) = match p.water {
            Water::Lake => (0.12, 0.88, h + (1.0 - h) * 0.7),
            _ => (-1.0, 2.0, if p.beach { 0.86 } else { 1.1 }),
        };
        let lake = p.water == Water::Lake;
        c.paint(|x, y| {
            if y < h || y > y1 {
                return None;
            }
            if lake {
                let (cx, rx, ry) = ((x0 + x1) / 2.0, (x1 - x0) / 2.0, (y1 - h));
                let (dx, dy) = ((x - cx) / rx, (y - h) / ry);
                if dx * dx + dy * dy > 1.0 {
                    return None;
                }
            }
            let mirrored = (2.0 * h - y).max(0.0);
            let mut col = mix(sky_at(mirrored), [0.1, 0.25, 0.45], 0.35);
            if p.body != Body::None && (x - bx).abs() < p.body_radius * (1.0 + (y - h) * 2.0) {
                let ripple = ((y * 90.0).sin() * 0.5 + 0.5) * 0.8;
                col = mix(col, body_col, ripple);
            }
            Some((col, 1.0))
        });
        if p.beach {
            c.paint(|_, y| (y > y1).then_some((lit([0.94, 0.84, 0.6], light), 1.0)));
        }
    }
    if p.trees != Trees::None {
        let mut r = Rng(p.detail ^ 0x7EE5);
        let trees: Vec<(f32, f32, f32)> = match p.trees {
            Trees::Forest => (0..30).map(|_| (r.unit(), h + r.range(0.0, 0.1), r.range(0.13, 0.2))).collect(),
            _ => {
                (0..5).map(|_| (r.range(0.05, 0.95), r.range(h + 0.08, 0.97), r.range(0.18, 0.28))).collect()
            }
        };
        let mut trees = trees;
        trees.sort_by(|a, b| a.1.total_cmp(&b.1));
        let leaf = lit([0.08, 0.32, 0.14], light);
        let trunk = lit([0.35, 0.22, 0.12], light);
        for (tx, base, height) in trees {
            let scale = height * (0.7 + (base - h).max(0.0) * 1.2);
            c.paint(|x, y| {
                let top_y = base - scale;
                if y < top_y || y > base {
                    return None;
                }
                let half = 0.3 * (y - top_y);
                if (x - tx).abs() < half && y < base - scale * 0.12 {
                    Some((leaf, 1.0))
                } else if (x - tx).abs() < scale * 0.035 {
                    Some((trunk, 1.0))
                } else {
                    None
                }
            });
        }
    }
    c.px.into_iter().flat_map(|p| p.map(|v| v.clamp(0.0, 1.0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::vocabulary::{words, WORDS};

    fn mean(img: &[f32], size: usize, rows: std::ops::Range<usize>, channel: usize) -> f32 {
        let vals: Vec<f32> =
            rows.flat_map(|y| (0..size).map(move |x| img[(y * size + x) * 3 + channel])).collect();
        vals.iter().sum::<f32>() / vals.len() as f32
    }

    #[test]
    fn same_seed_same_scene() {
        let (a, b) = (scene(11, 32), scene(11, 32));
        assert_eq!(a.image, b.image);
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.image.len(), 32 * 32 * 3);
        assert!(a.image.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn captions_use_only_the_vocabulary_and_fit_the_tokenizer() {
        for seed in 0..500 {
            let p = SceneParams::random(seed);
            let text = caption(&p, seed);
            for w in words(&text) {
                assert!(WORDS.contains(&w), "{w:?} in {text:?}");
            }
            assert!(words(&text).count() <= 16, "{text:?}");
        }
    }

    #[test]
    fn every_value_of_every_attribute_occurs() {
        let params: Vec<SceneParams> = (0..400).map(SceneParams::random).collect();
        for t in TimeOfDay::ALL {
            let n = params.iter().filter(|p| p.time == t).count();
            assert!(n > 50, "{t:?}: {n}");
        }
        for name in ["water", "mountains", "trees", "body"] {
            for class in 0..3 {
                let n = params.iter().filter(|p| p.labels().contains(&(name, class))).count();
                assert!(n > 20, "{name} = {class}: {n}");
            }
        }
    }

    #[test]
    fn night_is_darker_than_day_and_sunset_skies_are_red() {
        let size = 32;
        let pick = |t: TimeOfDay| -> Vec<Scene> {
            (0..300).map(|s| scene(s, size)).filter(|s| s.params.time == t).take(10).collect()
        };
        let brightness = |s: &Scene| s.image.iter().sum::<f32>() / s.image.len() as f32;
        let avg = |v: &[Scene], f: &dyn Fn(&Scene) -> f32| v.iter().map(f).sum::<f32>() / v.len() as f32;
        let (night, day, sunset) = (pick(TimeOfDay::Night), pick(TimeOfDay::Day), pick(TimeOfDay::Sunset));
        assert!(avg(&night, &brightness) + 0.2 < avg(&day, &brightness));
        let redness = |s: &Scene| mean(&s.image, size, 0..8, 0) - mean(&s.image, size, 0..8, 2);
        assert!(avg(&sunset, &redness) > avg(&day, &redness) + 0.2);
    }

    #[test]
    fn the_sun_is_a_bright_disc_where_the_parameters_put_it() {
        let size = 64;
        let s = (0..200)
            .map(|seed| scene(seed, size))
            .find(|s| s.params.body == Body::Sun && s.params.clouds == 0)
            .unwrap();
        let (bx, by) = s.params.body_pos;
        let (x, y) = ((bx * size as f32) as usize, (by * size as f32) as usize);
        let px = &s.image[(y * size + x) * 3..(y * size + x) * 3 + 3];
        assert!(px[0] > 0.9 && px[1] > 0.5, "{px:?}");
    }
}

#[cfg(test)]
mod contact_sheet {
    /// Writes 24 scenes as a PPM contact sheet to /tmp/scenes.ppm, to look at by eye.
    #[test]
    #[ignore]
    fn write_contact_sheet() {
        let (size, cols, rows) = (64usize, 6usize, 4usize);
        let mut out = vec![0u8; size * size * cols * rows * 3];
        for i in 0..cols * rows {
            let s = super::scene(i as u64, size);
            println!("{i}: {}", s.caption);
            for y in 0..size {
                for x in 0..size {
                    let dst = ((i / cols * size + y) * size * cols + i % cols * size + x) * 3;
                    for c in 0..3 {
                        out[dst + c] = (s.image[(y * size + x) * 3 + c] * 255.0) as u8;
                    }
                }
            }
        }
        let mut file = format!("P6 {} {} 255\n", size * cols, size * rows).into_bytes();
        file.extend(out);
        std::fs::write("/tmp/scenes.ppm", file).unwrap();
    }
}
