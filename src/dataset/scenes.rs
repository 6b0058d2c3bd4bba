//! Captioned landscape scenes, deterministic per seed: the built-in model's training set. A seed
//! draws [`SceneParams`]; [`render`] paints them and [`caption`] describes them, so every word of
//! a caption is true of its picture. Colours are bold and flat enough that rough strokes (an
//! orange disc over blue and green) have an obvious "right answer".
//!
//! Everything is measured in fractions of the image side, so one scene looks the same at 32, 64
//! or 128 pixels; edges are anti-aliased over one pixel.

use std::f32::consts::TAU;

use serde::Serialize;

use super::vocabulary as vocab;

/// When the scene happens: sets the sky gradient, the light on the ground and which body is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TimeOfDay {
    /// Pink and peach sky, low yellow sun.
    Dawn,
    /// Blue sky, high white sun.
    Day,
    /// Orange and red sky, low orange sun.
    Sunset,
    /// Purple and dark blue sky; moon and first stars.
    Dusk,
    /// Near-black navy sky; moon and stars.
    Night,
}

impl TimeOfDay {
    /// Every time of day, in label order.
    pub const ALL: [Self; 5] = [Self::Dawn, Self::Day, Self::Sunset, Self::Dusk, Self::Night];
}

/// Which disc is in the sky.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BodyKind {
    /// At dawn, day and sunset.
    Sun,
    /// At dusk and night.
    Moon,
}

/// The sun or moon, placed so that no mountain or tree hides it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CelestialBody {
    /// Sun or moon.
    pub kind: BodyKind,
    /// Centre, as a fraction of the width from the left.
    pub x: f32,
    /// Centre, as a fraction of the height from the top.
    pub y: f32,
    /// Radius, as a fraction of the side.
    pub radius: f32,
}

/// Mountain ranges behind the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mountains {
    /// Open horizon.
    None,
    /// Bare rock.
    Mountains,
    /// Rock with white caps above a snow line.
    Snowy,
}

/// Water in front of the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Water {
    /// Dry land.
    None,
    /// Water between a far shore and a grassy near shore.
    Lake,
    /// Water from the horizon to the bottom (or to a beach).
    Sea,
}

/// Trees on the land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Trees {
    /// No trees.
    None,
    /// A few large pines in the foreground.
    Pines,
    /// Rows of small pines along the horizon.
    Forest,
}

/// Every attribute of a scene: the picture and the caption are both made from it alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SceneParams {
    /// Time of day.
    pub time: TimeOfDay,
    /// The sun or moon, if one is up.
    pub body: Option<CelestialBody>,
    /// Stars (dusk and night only).
    pub stars: bool,
    /// Number of clouds; 0 is a clear sky.
    pub clouds: usize,
    /// Mountains behind the horizon.
    pub mountains: Mountains,
    /// Mountain ranges layered one behind another, 1 to 3 (drawn only with mountains).
    pub mountain_ranges: usize,
    /// Green rolling hills (not with the sea or the desert).
    pub hills: bool,
    /// Lake, sea or dry land (no water in the desert).
    pub water: Water,
    /// Sand along the sea (only with the sea).
    pub beach: bool,
    /// Pines or a forest (neither in the desert or by the sea).
    pub trees: Trees,
    /// Striped farmland (only on dry, green land).
    pub fields: bool,
    /// Sand dunes instead of grass.
    pub desert: bool,
    /// Height of the horizon as a fraction of the image from the top.
    pub horizon: f32,
    /// Seeds the details (ridges, shorelines, star, cloud and tree positions), so that
    /// [`render`] is a function of the parameters alone.
    pub layout_seed: u64,
}

/// Highest mountain peak above the horizon, as a fraction of the side.
const MOUNTAIN_TOP: f32 = 0.25;
/// Highest hill or forest treetop above the horizon.
const LOW_TOP: f32 = 0.12;

impl SceneParams {
    /// The scene for `seed`. Each time of day has a fifth of the seeds, water and mountains about
    /// half each, and exclusions keep combinations plausible (no lake in the desert, no sun at
    /// night, no forest on a beach).
    pub fn random(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5CE7_E5EE_D000_0001);
        let time = *rng.pick(&TimeOfDay::ALL);
        let desert = rng.chance(0.15);
        let water = match (desert, rng.unit()) {
            (false, u) if u < 0.3 => Water::Lake,
            (false, u) if u < 0.6 => Water::Sea,
            _ => Water::None,
        };
        let mountains = match (rng.unit(), desert) {
            (u, _) if u < 0.5 => Mountains::None,
            (u, false) if u < 0.75 => Mountains::Snowy,
            _ => Mountains::Mountains,
        };
        let land = !desert && water != Water::Sea;
        let trees = match (land, rng.unit()) {
            (true, u) if u < 0.3 => Trees::Pines,
            (true, u) if u < 0.6 => Trees::Forest,
            _ => Trees::None,
        };
        let horizon = rng.range(0.5, 0.6);
        Self {
            time,
            body: CelestialBody::random(&mut rng, time, horizon, mountains != Mountains::None),
            stars: matches!(time, TimeOfDay::Night | TimeOfDay::Dusk) && rng.chance(0.7),
            clouds: if rng.chance(0.55) { 1 + rng.below(4) } else { 0 },
            mountains,
            mountain_ranges: 1 + rng.below(3),
            hills: land && rng.chance(0.5),
            water,
            beach: water == Water::Sea && rng.chance(0.65),
            trees,
            fields: land && water == Water::None && rng.chance(0.55),
            desert,
            horizon,
            layout_seed: rng.next_u64(),
        }
    }

    /// Categorical labels for an attribute classifier, as (attribute, class index); classes
    /// follow the enums' declaration order, flags are 0 or 1.
    pub fn labels(&self) -> Vec<(&'static str, usize)> {
        let body = match self.body {
            None => 0,
            Some(CelestialBody { kind: BodyKind::Sun, .. }) => 1,
            Some(CelestialBody { kind: BodyKind::Moon, .. }) => 2,
        };
        vec![
            ("time_of_day", self.time as usize),
            ("body", body),
            ("stars", usize::from(self.stars)),
            ("clouds", usize::from(self.clouds > 0)),
            ("mountains", self.mountains as usize),
            ("hills", usize::from(self.hills)),
            ("water", self.water as usize),
            ("beach", usize::from(self.beach)),
            ("trees", self.trees as usize),
            ("fields", usize::from(self.fields)),
            ("desert", usize::from(self.desert)),
        ]
    }
}

impl CelestialBody {
    /// The sun by day (high at noon, low at dawn and sunset), the moon at dusk and night, or
    /// nothing one time in five; always clear of the mountains or treetops below it.
    fn random(rng: &mut Rng, time: TimeOfDay, horizon: f32, mountains: bool) -> Option<Self> {
        let kind = match time {
            TimeOfDay::Dawn | TimeOfDay::Day | TimeOfDay::Sunset => BodyKind::Sun,
            TimeOfDay::Dusk | TimeOfDay::Night => BodyKind::Moon,
        };
        let radius = match time {
            TimeOfDay::Day => rng.range(0.055, 0.075),
            TimeOfDay::Dawn | TimeOfDay::Sunset => rng.range(0.07, 0.1),
            TimeOfDay::Dusk | TimeOfDay::Night => rng.range(0.045, 0.065),
        };
        let ground_top = if mountains { MOUNTAIN_TOP } else { LOW_TOP };
        let (highest, lowest) = (radius + 0.05, horizon - ground_top - radius * 1.2);
        let height = match time {
            TimeOfDay::Day => rng.range(0.0, 0.5),
            TimeOfDay::Dawn | TimeOfDay::Sunset => rng.range(0.6, 1.0),
            TimeOfDay::Dusk | TimeOfDay::Night => rng.unit(),
        };
        let x = rng.range(0.15, 0.85);
        let y = highest + (lowest - highest).max(0.0) * height;
        rng.chance(0.8).then_some(Self { kind, x, y, radius })
    }
}

/// SplitMix64: a few lines, seedable, and the same on every platform, which is all a data set
/// needs (the `rand` crate is not a dependency).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// One item of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// SplitMix64's output mix: turns a counter into well-spread bits.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [0, 1) fixed by `seed` and `i`.
fn hash_unit(seed: u64, i: i64) -> f32 {
    (finalize(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as f32 / (1u64 << 24) as f32
}

/// 1-D value noise in [-1, 1]: smooth random bumps one unit apart.
fn value_noise(seed: u64, x: f32) -> f32 {
    let cell = x.floor();
    let t = smoothstep(0.0, 1.0, x - cell);
    let (a, b) = (hash_unit(seed, cell as i64), hash_unit(seed, cell as i64 + 1));
    2.0 * (a + (b - a) * t) - 1.0
}

/// Value noise over three octaves, for ridges and snow lines that are rough at every scale.
fn fbm(seed: u64, x: f32) -> f32 {
    (0..3).map(|k| value_noise(seed.wrapping_add(k), x * (1 << k) as f32) / (1 << k) as f32).sum::<f32>()
        / 1.75
}

// ---------------------------------------------------------------------------------------------
// Captions

/// The caption's sentence shapes.
#[derive(Debug, Clone, Copy)]
enum Template {
    /// "snowy mountains with a lake at dusk"
    After,
    /// "sunset over snowy mountains with a lake"
    Over,
    /// "a forest under a night sky"
    Under,
    /// "a view of desert dunes at dawn"
    View,
}

/// A short English caption for `params`, lowercase words from [`vocab::WORDS`] separated by
/// single spaces, at most [`vocab::MAX_WORDS`] long. `seed` picks the template and synonyms, so
/// the same picture is described several ways. The time of day and the most prominent landscape
/// feature are always named; when a caption runs long, what matters least to the picture
/// (clouds and stars, then hills) is left out first.
pub fn caption(params: &SceneParams, seed: u64) -> String {
    describe(params, seed).0
}

/// The labels of `params` that the caption for `seed` pins down: every attribute except those
/// whose mention was left out to keep the caption short (an attribute the caption does not name
/// and the scene does not have counts as stated: "absent"). Prompt adherence is scored on these.
pub fn stated_labels(params: &SceneParams, seed: u64) -> Vec<(&'static str, usize)> {
    let dropped = describe(params, seed).1;
    params.labels().into_iter().filter(|(name, _)| !dropped.contains(name)).collect()
}

/// The caption and the attributes whose mentions it had to leave out.
fn describe(params: &SceneParams, seed: u64) -> (String, Vec<&'static str>) {
    let mut dropped = Vec::new();
    let mut rng = Rng::new(seed ^ 0xCA97_10A5_0000_0002);
    let template = *rng.pick(&[Template::After, Template::Over, Template::Under, Template::View]);
    let time = params.time as usize;
    let opening = match template {
        Template::After | Template::View => *rng.pick(vocab::TIME_PHRASES[time]),
        Template::Over => *rng.pick(vocab::TIME_NOUNS[time]),
        Template::Under => *rng.pick(vocab::SKY_ADJECTIVES[time]),
    };
    let mut land = landscape_mentions(params, &mut rng);
    let mut sky = sky_mentions(params, &mut rng);
    loop {
        let phrases = |m: &[Mention]| m.iter().map(|m| m.phrase).collect::<Vec<_>>();
        let text = compose(template, opening, &phrases(&land), &phrases(&sky));
        if vocab::words(&text).count() <= vocab::MAX_WORDS {
            return (text, dropped);
        }
        // The lightest mention, the later one on ties; never the main landscape feature.
        let lightest = |m: &[Mention], skip: usize| {
            m.iter()
                .enumerate()
                .skip(skip)
                .min_by_key(|&(i, m)| (m.weight, usize::MAX - i))
                .map(|(i, m)| (m.weight, i))
        };
        let (list, i) = match (lightest(&land, 1), lightest(&sky, 0)) {
            (Some((l, i)), Some((s, _))) if l < s => (&mut land, i),
            (_, Some((_, i))) => (&mut sky, i),
            (Some((_, i)), None) => (&mut land, i),
            (None, None) => return (text, dropped),
        };
        dropped.push(list.remove(i).attribute);
    }
}

/// A phrase a caption may contain, and how much its subject matters to the picture.
#[derive(Debug, Clone, Copy)]
struct Mention {
    phrase: &'static str,
    weight: u8,
    /// The label ([`SceneParams::labels`]) the phrase states.
    attribute: &'static str,
}

impl Mention {
    /// One phrase of `table`.
    fn pick(rng: &mut Rng, table: &[&'static str], weight: u8, attribute: &'static str) -> Self {
        Self { phrase: table[rng.below(table.len())], weight, attribute }
    }
}

/// The ground, most prominent first; a meadow when nothing else is there.
fn landscape_mentions(p: &SceneParams, rng: &mut Rng) -> Vec<Mention> {
    let tables = [
        (p.desert, vocab::DESERT, 9, "desert"),
        (p.mountains == Mountains::Snowy, vocab::SNOWY_MOUNTAINS, 8, "mountains"),
        (p.mountains == Mountains::Mountains, vocab::MOUNTAINS, 8, "mountains"),
        (p.water == Water::Lake, vocab::LAKE, 8, "water"),
        (p.water == Water::Sea, vocab::SEA, 8, "water"),
        (p.beach, vocab::BEACH, 5, "beach"),
        (p.trees == Trees::Forest, vocab::FOREST, 7, "trees"),
        (p.trees == Trees::Pines, vocab::PINES, 6, "trees"),
        (p.fields, vocab::FIELDS, 6, "fields"),
        (p.hills, vocab::HILLS, 4, "hills"),
    ];
    let mut out: Vec<Mention> = tables
        .iter()
        .filter(|(shown, ..)| *shown)
        .map(|&(_, table, weight, attribute)| Mention::pick(rng, table, weight, attribute))
        .collect();
    if out.is_empty() {
        // Not a label name: the meadow is the main feature, never left out.
        out.push(Mention::pick(rng, vocab::MEADOW, 9, "meadow"));
    }
    out
}

/// What is in the sky, in random order.
fn sky_mentions(p: &SceneParams, rng: &mut Rng) -> Vec<Mention> {
    let body = p.body.map(|b| if b.kind == BodyKind::Sun { vocab::SUN } else { vocab::MOON });
    let tables = [
        (body, 6, "body"),
        (p.stars.then_some(vocab::STARS), 3, "stars"),
        ((p.clouds > 0).then_some(vocab::CLOUDS), 3, "clouds"),
    ];
    let mut out: Vec<Mention> = tables
        .iter()
        .filter_map(|&(table, weight, attribute)| Some(Mention::pick(rng, table?, weight, attribute)))
        .collect();
    rng.shuffle(&mut out);
    out
}

/// Fills `template`; `land` must not be empty.
fn compose(template: Template, opening: &str, land: &[&str], sky: &[&str]) -> String {
    let land = match land {
        [] | [_] => land.join(""),
        [first, rest @ ..] => format!("{first} with {}", rest.join(" and ")),
    };
    let mut text = match template {
        Template::After => format!("{land} {opening}"),
        Template::Over => format!("{opening} over {land}"),
        Template::Under => format!("{land} under {} {opening} sky", article(opening)),
        Template::View => format!("a view of {land} {opening}"),
    };
    if !sky.is_empty() {
        text.push_str(" with ");
        text.push_str(&sky.join(" and "));
    }
    text
}

/// "an" before a vowel, "a" otherwise.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

type Rgb = [f32; 3];

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn scale(c: Rgb, k: f32) -> Rgb {
    c.map(|v| v * k)
}

fn times(a: Rgb, b: Rgb) -> Rgb {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Opacity of a shape at signed distance `d` from its edge (negative inside), anti-aliased over
/// `width`.
fn coverage(d: f32, width: f32) -> f32 {
    (0.5 - d / width).clamp(0.0, 1.0)
}

/// A rectangle of the image in fractions of the side: painting visits only its pixels.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: f32,
    right: f32,
    top: f32,
    bottom: f32,
}

impl Area {
    /// Full-width rows from `top` to `bottom`.
    fn rows(top: f32, bottom: f32) -> Self {
        Self { left: 0.0, right: 1.0, top, bottom }
    }

    /// The square of half-side `half` around (`x`, `y`).
    fn around(x: f32, y: f32, half: f32) -> Self {
        Self { left: x - half, right: x + half, top: y - half, bottom: y + half }
    }
}

/// The picture being painted, layer over layer, back to front.
struct Canvas {
    size: usize,
    pixels: Vec<Rgb>,
}

impl Canvas {
    fn new(size: usize) -> Self {
        Self { size, pixels: vec![[0.0; 3]; size * size] }
    }

    /// One pixel's width as a fraction of the side: the anti-aliasing width.
    fn pixel(&self) -> f32 {
        1.0 / self.size as f32
    }

    /// Centre of pixel row or column `i`, as a fraction of the side.
    fn centre(&self, i: usize) -> f32 {
        (i as f32 + 0.5) / self.size as f32
    }

    /// Pixel indices whose centres may fall in [`lo`, `hi`].
    fn span(&self, lo: f32, hi: f32) -> std::ops::Range<usize> {
        let n = self.size as f32;
        (lo * n).floor().clamp(0.0, n) as usize..(hi * n).ceil().clamp(0.0, n) as usize
    }

    fn get(&self, i: usize, j: usize) -> Rgb {
        self.pixels[j * self.size + i]
    }

    fn blend(&mut self, i: usize, j: usize, colour: Rgb, alpha: f32) {
        let p = &mut self.pixels[j * self.size + i];
        *p = mix(*p, colour, alpha.clamp(0.0, 1.0));
    }

    /// Blends `shade(u, v)` = (colour, opacity) into every pixel of `area` it returns one for.
    fn paint(&mut self, area: Area, mut shade: impl FnMut(f32, f32) -> Option<(Rgb, f32)>) {
        for j in self.span(area.top, area.bottom) {
            let v = self.centre(j);
            for i in self.span(area.left, area.right) {
                if let Some((colour, alpha)) = shade(self.centre(i), v) {
                    self.blend(i, j, colour, alpha);
                }
            }
        }
    }

    fn into_values(self) -> Vec<f32> {
        self.pixels.into_iter().flat_map(|p| p.map(|v| v.clamp(0.0, 1.0))).collect()
    }
}

/// The colours a time of day lends the scene.
struct Look {
    /// Sky at the zenith, midway and at the horizon.
    sky: [Rgb; 3],
    /// Multiplies every ground colour: full daylight is white, night a dark blue.
    light: Rgb,
    /// What distance fades the ground toward: the horizon's glow by day, darkness at night,
    /// so far ridges stand out as silhouettes.
    haze: Rgb,
    /// Sunlit top and shaded underside of clouds.
    cloud: (Rgb, Rgb),
    /// The sun's or moon's disc at its centre and at its rim.
    body: (Rgb, Rgb),
    /// Strength of the glow around the disc.
    glow: f32,
    /// Whether light falls from the left: from the side of the sun or moon, left if none.
    from_left: bool,
}

impl Look {
    fn of(p: &SceneParams) -> Self {
        let moon = [0.96, 0.95, 0.86];
        let from_left = p.body.is_none_or(|b| b.x < 0.5);
        match p.time {
            TimeOfDay::Dawn => Self {
                sky: [[0.42, 0.5, 0.82], [0.95, 0.62, 0.74], [1.0, 0.82, 0.6]],
                haze: [1.0, 0.82, 0.6],
                light: [1.0, 0.84, 0.8],
                cloud: ([1.0, 0.86, 0.88], [0.78, 0.6, 0.74]),
                body: ([1.0, 0.97, 0.8], [1.0, 0.78, 0.42]),
                glow: 0.5,
                from_left,
            },
            TimeOfDay::Day => Self {
                sky: [[0.12, 0.4, 0.88], [0.35, 0.62, 0.95], [0.7, 0.87, 1.0]],
                haze: [0.7, 0.87, 1.0],
                light: [1.0, 1.0, 1.0],
                cloud: ([1.0, 1.0, 1.0], [0.76, 0.8, 0.88]),
                body: ([1.0, 0.99, 0.88], [1.0, 0.93, 0.6]),
                glow: 0.4,
                from_left,
            },
            TimeOfDay::Sunset => Self {
                sky: [[0.3, 0.16, 0.45], [0.92, 0.35, 0.25], [1.0, 0.68, 0.22]],
                haze: [1.0, 0.68, 0.3],
                light: [1.0, 0.68, 0.5],
                cloud: ([1.0, 0.62, 0.42], [0.55, 0.28, 0.42]),
                body: ([1.0, 0.93, 0.6], [1.0, 0.5, 0.15]),
                glow: 0.6,
                from_left,
            },
            TimeOfDay::Dusk => Self {
                sky: [[0.06, 0.07, 0.25], [0.27, 0.17, 0.45], [0.62, 0.36, 0.55]],
                haze: [0.3, 0.2, 0.38],
                light: [0.5, 0.44, 0.64],
                cloud: ([0.55, 0.42, 0.62], [0.28, 0.22, 0.4]),
                body: (moon, moon),
                glow: 0.3,
                from_left,
            },
            TimeOfDay::Night => Self {
                sky: [[0.01, 0.02, 0.07], [0.03, 0.05, 0.15], [0.07, 0.1, 0.25]],
                haze: [0.03, 0.04, 0.1],
                light: [0.25, 0.28, 0.45],
                cloud: ([0.34, 0.36, 0.48], [0.15, 0.16, 0.26]),
                body: (moon, moon),
                glow: 0.25,
                from_left,
            },
        }
    }

    /// Sky colour at height `t`: 0 at the zenith, 1 at the horizon.
    fn sky_at(&self, t: f32) -> Rgb {
        let t = t.clamp(0.0, 1.0);
        if t < 0.5 {
            mix(self.sky[0], self.sky[1], smoothstep(0.0, 0.5, t))
        } else {
            mix(self.sky[1], self.sky[2], smoothstep(0.5, 1.0, t))
        }
    }

    /// A ground colour in this light, faded by distance: `haze` 0 near, 1 far.
    fn ground(&self, colour: Rgb, haze: f32) -> Rgb {
        mix(times(colour, self.light), self.haze, haze)
    }

    /// Like [`Look::ground`] for surfaces that catch more light than grass does: snow and water
    /// stay readable at dusk and night.
    fn shiny(&self, colour: Rgb, haze: f32) -> Rgb {
        mix(times(colour, mix(self.light, [1.0; 3], 0.4)), self.haze, haze)
    }
}

/// An independent random stream per layer, so that adding a layer leaves the others unchanged.
fn layer_rng(p: &SceneParams, layer: u64) -> Rng {
    Rng::new(finalize(p.layout_seed ^ layer.wrapping_mul(0xA076_1D64_78BD_642F)))
}

/// Renders `params` as a `size` × `size` RGB image: row-major, channels last, values in [0, 1].
pub fn render(params: &SceneParams, size: usize) -> Vec<f32> {
    let p = params;
    let look = Look::of(p);
    let mut c = Canvas::new(size);
    c.paint(Area::rows(0.0, 1.0), |_, v| Some((look.sky_at(v / p.horizon), 1.0)));
    if p.stars {
        paint_stars(&mut c, p);
    }
    if let Some(body) = &p.body {
        paint_body(&mut c, body, &look, p.horizon);
    }
    paint_clouds(&mut c, p, &look);
    if p.mountains != Mountains::None {
        paint_mountains(&mut c, p, &look);
    }
    paint_land(&mut c, p, &look);
    if p.trees == Trees::Pines {
        paint_foreground_pines(&mut c, p, &look);
    }
    c.into_values()
}

/// The rows water covers, as fractions of the height from the top: a lake from its far shore to
/// its near shore's mean line, the sea from the horizon to the bottom; `None` on dry land.
pub fn water_rows(p: &SceneParams) -> Option<(f32, f32)> {
    match (p.water, Lake::new(p)) {
        (Water::Sea, _) => Some((p.horizon, 1.0)),
        (Water::Lake, Some(lake)) => Some((lake.top, lake.bottom.min(1.0))),
        _ => None,
    }
}

/// Everything at and below the horizon, back to front.
fn paint_land(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let lake = Lake::new(p);
    if p.desert {
        paint_dunes(c, p, look);
    } else if p.water != Water::Sea {
        paint_grass(c, p, look);
    }
    if p.hills {
        paint_hills(c, p, look, lake.is_some());
    }
    if p.fields {
        paint_fields(c, p, look);
    }
    if p.trees == Trees::Forest {
        let front = lake.as_ref().map_or(p.horizon + 0.09, |l| l.top - 0.003);
        paint_forest(c, p, look, front);
    }
    match (p.water, lake) {
        (Water::Sea, _) => paint_water(c, p, look, &Shore::Sea { top: p.horizon }),
        (Water::Lake, Some(lake)) => paint_water(c, p, look, &Shore::Lake(lake)),
        _ => {}
    }
    if p.beach {
        paint_beach(c, p, look);
    }
}

fn paint_stars(c: &mut Canvas, p: &SceneParams) {
    let mut rng = layer_rng(p, 1);
    // Fewer stars on small images, where each dot covers more of the sky.
    let per_size = (c.size as f32 / 64.0).clamp(0.5, 2.0);
    let count = (if p.time == TimeOfDay::Night { 60.0 } else { 40.0 } * per_size) as usize;
    let dim = if p.time == TimeOfDay::Night { 1.0 } else { 0.8 };
    for _ in 0..count {
        let (u, v) = (rng.unit(), p.horizon * 0.92 * rng.unit().powf(1.4));
        let brightness = dim * rng.range(0.35, 1.0) * (1.0 - v / p.horizon).sqrt();
        let (Some(i), Some(j)) = (c.span(u, u).next(), c.span(v, v).next()) else { continue };
        let colour = if rng.chance(0.3) { [1.0, 0.92, 0.75] } else { [0.9, 0.94, 1.0] };
        c.blend(i, j, colour, brightness);
        if brightness > 0.8 {
            let n = c.size;
            for (di, dj) in [(1, 0), (0, 1), (-1, 0), (0, -1)] {
                let (x, y) = (i as i64 + di, j as i64 + dj);
                if (0..n as i64).contains(&x) && (0..n as i64).contains(&y) {
                    c.blend(x as usize, y as usize, colour, brightness * 0.3);
                }
            }
        }
    }
}

/// The disc with a soft glow; the moon gets faint grey seas.
fn paint_body(c: &mut Canvas, body: &CelestialBody, look: &Look, horizon: f32) {
    let (r, px) = (body.radius, c.pixel());
    c.paint(Area::rows(0.0, horizon), |u, v| {
        let d = (u - body.x).hypot(v - body.y);
        Some((look.body.1, look.glow * (-(d / (r * 2.2)).powi(2)).exp()))
    });
    let seas = [(-0.3, -0.2, 0.32), (0.28, 0.25, 0.25), (0.1, -0.4, 0.18)];
    c.paint(Area::around(body.x, body.y, r + px), |u, v| {
        let (du, dv) = (u - body.x, v - body.y);
        let d = du.hypot(dv);
        let mut colour = mix(look.body.0, look.body.1, smoothstep(0.4, 1.0, d / r));
        if body.kind == BodyKind::Moon && seas.iter().any(|(x, y, s)| (du - x * r).hypot(dv - y * r) < s * r)
        {
            colour = scale(colour, 0.88);
        }
        Some((colour, coverage(d - r, px)))
    });
}

/// A cloud: a row of overlapping puffs with a flat base.
struct Cloud {
    puffs: Vec<(f32, f32, f32)>,
    base: f32,
    area: Area,
}

impl Cloud {
    /// A cloud in the upper sky, kept clear of the sun or moon.
    fn random(rng: &mut Rng, p: &SceneParams) -> Self {
        let width = rng.range(0.2, 0.34);
        let y = rng.range(0.08, (p.horizon - 0.2).max(0.1));
        let mut x = rng.range(width * 0.3, 1.0 - width * 0.3);
        for _ in 0..8 {
            let clear = p.body.is_none_or(|b| {
                (x - b.x).abs() > width / 2.0 + b.radius + 0.04 || (y - b.y).abs() > b.radius + 0.08
            });
            if clear {
                break;
            }
            x = rng.range(width * 0.3, 1.0 - width * 0.3);
        }
        let n = 4 + rng.below(3);
        let puffs = (0..n)
            .map(|k| {
                let t = k as f32 / (n - 1) as f32;
                let r = width * 0.2 * (1.0 - 0.45 * (2.0 * t - 1.0).powi(2)) * rng.range(0.85, 1.2);
                (x + (t - 0.5) * width * 0.8, y - r * 0.35 + rng.range(-0.01, 0.01), r)
            })
            .collect();
        let base = y + width * 0.07;
        Self { puffs, base, area: Area::around(x, y, width * 0.75) }
    }

    /// Signed distance to the cloud's outline, negative inside.
    fn distance(&self, u: f32, v: f32) -> f32 {
        let puffs = self.puffs.iter().map(|&(x, y, r)| (u - x).hypot(v - y) - r).fold(f32::MAX, f32::min);
        puffs.max(v - self.base)
    }
}

fn paint_clouds(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 2);
    let soft = c.pixel() * 2.0;
    let opacity = if p.time == TimeOfDay::Night { 0.85 } else { 0.95 };
    for _ in 0..p.clouds {
        let cloud = Cloud::random(&mut rng, p);
        let top = cloud.area.top + cloud.area.bottom - cloud.base;
        c.paint(cloud.area, |u, v| {
            let colour = mix(look.cloud.0, look.cloud.1, smoothstep(top, cloud.base, v));
            Some((colour, opacity * coverage(cloud.distance(u, v), soft)))
        });
    }
}

/// One mountain range: triangular peaks with a rough ridge line.
struct Range {
    /// Peaks as (centre, height above the horizon, half width).
    peaks: Vec<(f32, f32, f32)>,
    height: f32,
    seed: u64,
}

impl Range {
    fn random(rng: &mut Rng, height: f32) -> Self {
        let n = 3 + rng.below(3);
        let peaks = (0..n)
            .map(|k| {
                let x = (k as f32 + rng.range(-0.35, 0.35)) / (n - 1) as f32 * 1.2 - 0.1;
                let h = height * rng.range(0.55, 0.93);
                (x, h, h / rng.range(0.55, 1.0))
            })
            .collect();
        Self { peaks, height, seed: rng.next_u64() }
    }

    /// Ridge height above the horizon at `u`, and the centre of the peak that makes it.
    fn ridge(&self, u: f32) -> (f32, f32) {
        let (h, x) = self
            .peaks
            .iter()
            .map(|&(x, h, half)| (h * (1.0 - (u - x).abs() / half), x))
            .fold((self.height * 0.2, u), |best, cur| if cur.0 > best.0 { cur } else { best });
        (h + self.height * 0.07 * fbm(self.seed, u * 22.0), x)
    }

    /// Height above the horizon where the snow starts, at `u`.
    fn snow_line(&self, u: f32) -> f32 {
        self.height * (0.5 + 0.08 * fbm(self.seed ^ 0x5A0, u * 30.0))
    }
}

/// Far ranges are tallest and haziest; the light falls from the side of the sun or moon.
fn paint_mountains(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 3);
    let n = p.mountain_ranges.clamp(1, 3);
    let rock = if p.desert { [0.66, 0.44, 0.34] } else { [0.44, 0.42, 0.52] };
    let (h, px) = (p.horizon, c.pixel());
    for k in 0..n {
        let far = (n - 1 - k) as f32 / 2.0;
        let range = Range::random(&mut rng, MOUNTAIN_TOP * (1.0 - 0.22 * k as f32));
        let haze = 0.1 + 0.45 * far;
        let darker = 1.0 - 0.12 * k as f32;
        c.paint(Area::rows(h - range.height * 1.1, h + px), |u, v| {
            let altitude = h - v;
            let (ridge, peak) = range.ridge(u);
            let lit = (u < peak) == look.from_left;
            let snow = p.mountains == Mountains::Snowy && altitude > range.snow_line(u);
            let mist = (haze + 0.2 * (1.0 - altitude / range.height).clamp(0.0, 1.0).powi(2)).min(1.0);
            // Snow shows through the haze that fades the rock, and catches the moonlight.
            let colour = match (snow, lit) {
                (true, true) => look.shiny([0.97, 0.97, 1.0], mist * 0.5),
                (true, false) => look.shiny([0.75, 0.8, 0.92], mist * 0.5),
                (false, _) => look.ground(scale(rock, darker * if lit { 1.0 } else { 0.72 }), mist),
            };
            Some((colour, coverage(altitude - ridge, px)))
        });
    }
}

/// Grass from the horizon down, brighter far away.
fn paint_grass(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let (h, px) = (p.horizon, c.pixel());
    c.paint(Area::rows(h - px, 1.0), |_, v| {
        let t = ((v - h) / (1.0 - h)).clamp(0.0, 1.0);
        let colour = mix([0.5, 0.72, 0.3], [0.26, 0.52, 0.17], t);
        Some((look.ground(colour, 0.12 * (1.0 - t)), coverage(h - v, px)))
    });
}

/// A smooth random curve: the sum of two sines with random frequencies and phases.
struct Wave {
    terms: [(f32, f32, f32); 2],
}

impl Wave {
    /// About `bumps` crests across the image, amplitude about `amplitude`.
    fn random(rng: &mut Rng, bumps: f32, amplitude: f32) -> Self {
        let mut term = |f: f32, a: f32| (TAU * f * rng.range(0.8, 1.25), rng.range(0.0, TAU), a);
        Self { terms: [term(bumps, amplitude * 0.75), term(bumps * 2.7, amplitude * 0.25)] }
    }

    fn at(&self, u: f32) -> f32 {
        self.terms.iter().map(|&(f, phase, a)| a * (f * u + phase).sin()).sum()
    }
}

/// Two rolling green layers rising above the horizon and a foreground swell below it.
fn paint_hills(c: &mut Canvas, p: &SceneParams, look: &Look, behind_lake: bool) {
    let mut rng = layer_rng(p, 4);
    let (h, px) = (p.horizon, c.pixel());
    let layers = [
        (h - 0.06, 0.035, [0.52, 0.74, 0.34], 0.3),
        (h - 0.02, 0.03, [0.4, 0.66, 0.27], 0.15),
        (h + 0.14, 0.04, [0.3, 0.58, 0.2], 0.0),
    ];
    let count = if behind_lake { 2 } else { 3 };
    for &(base, amplitude, green, haze) in &layers[..count] {
        let bumps = rng.range(0.8, 1.6);
        let wave = Wave::random(&mut rng, bumps, amplitude);
        c.paint(Area::rows(base - amplitude - px, 1.0), |u, v| {
            let crest = base + wave.at(u);
            let shade = 1.0 - 0.25 * smoothstep(0.0, 0.2, v - crest);
            Some((look.ground(scale(green, shade), haze), coverage(crest - v, px)))
        });
    }
}

/// Alternating yellow and green bands that narrow toward the horizon, with dark hedges between.
fn paint_fields(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 5);
    let (h, px) = (p.horizon, c.pixel());
    let colours = [[0.95, 0.8, 0.3], [0.45, 0.72, 0.25], [0.85, 0.68, 0.25], [0.6, 0.78, 0.3]];
    let (start, ratio) = (h + rng.range(0.04, 0.07), rng.range(1.3, 1.45));
    let (tilt, bend) = (rng.range(-0.06, 0.06), Wave::random(&mut rng, 0.7, 0.012));
    let offset = rng.below(colours.len());
    c.paint(Area::rows(start, 1.0), |u, v| {
        let depth = v - h + tilt * (u - 0.5) * (v - h) + bend.at(u);
        let band = ((depth / (start - h)).max(1.0).ln() / ratio.ln()).max(0.0);
        let edge = band.fract().min(1.0 - band.fract()) * (start - h) * ratio.powf(band) * ratio.ln();
        let colour = colours[(band as usize + offset) % colours.len()];
        let hedge = 1.0 - 0.45 * coverage(edge - px * 0.4, px);
        let t = ((v - h) / (1.0 - h)).clamp(0.0, 1.0);
        Some((look.ground(scale(colour, hedge), 0.15 * (1.0 - t)), coverage(start - v, px)))
    });
}

/// A pine: a trunk under three stacked triangles.
#[derive(Debug, Clone, Copy)]
struct Pine {
    x: f32,
    base: f32,
    height: f32,
}

impl Pine {
    /// Signed distance to the canopy and to the trunk, negative inside.
    fn distances(&self, u: f32, v: f32) -> (f32, f32) {
        let (h, half) = (self.height, self.height * 0.22);
        let canopy = (0..3)
            .map(|k| {
                let bottom = self.base - h * (0.12 + 0.24 * k as f32);
                let top = bottom - h * (0.46 - 0.04 * k as f32);
                let width = half * (1.0 - 0.22 * k as f32);
                let slope = width / (bottom - top);
                let side = ((u - self.x).abs() - slope * (v - top)) / (1.0 + slope * slope).sqrt();
                side.max(v - bottom).max(top - v)
            })
            .fold(f32::MAX, f32::min);
        let trunk = ((u - self.x).abs() - h * 0.035).max(v - self.base).max(self.base - h * 0.2 - v);
        (canopy, trunk)
    }

    fn paint(&self, c: &mut Canvas, look: &Look, green: Rgb, haze: f32) {
        let px = c.pixel();
        let area = Area {
            left: self.x - self.height * 0.25,
            right: self.x + self.height * 0.25,
            top: self.base - self.height,
            bottom: self.base + px,
        };
        let trunk_colour = look.ground([0.38, 0.24, 0.13], haze);
        c.paint(area, |u, v| {
            let (canopy, trunk) = self.distances(u, v);
            let shade = if (u < self.x) == look.from_left { 1.0 } else { 0.78 };
            let leaf = look.ground(scale(green, shade), haze);
            if canopy < trunk {
                Some((leaf, coverage(canopy, px)))
            } else {
                Some((trunk_colour, coverage(trunk, px)))
            }
        });
    }
}

/// A dark green varied a little per tree.
fn pine_green(rng: &mut Rng) -> Rgb {
    scale([0.1, 0.4, 0.18], rng.range(0.8, 1.15))
}

/// Three rows of small pines standing between the horizon and `front`, hazier further back.
fn paint_forest(c: &mut Canvas, p: &SceneParams, look: &Look, front: f32) {
    let mut rng = layer_rng(p, 6);
    let h = p.horizon;
    for row in 0..3 {
        let t = row as f32 / 2.0;
        let base = h + 0.004 + (front - h - 0.004) * t;
        let height = 0.075 + 0.045 * t;
        let mut x = rng.range(-0.05, 0.0);
        while x < 1.05 {
            let pine =
                Pine { x, base: base + rng.range(-0.004, 0.004), height: height * rng.range(0.8, 1.2) };
            pine.paint(c, look, pine_green(&mut rng), 0.3 * (1.0 - t));
            x += height * rng.range(0.3, 0.5);
        }
    }
}

/// 2 to 5 large pines in the foreground, smaller further back, clear of the sun's column.
fn paint_foreground_pines(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 7);
    let h = p.horizon;
    let near = Lake::new(p).map_or(h + 0.12, |l| l.bottom + 0.06);
    let mut pines: Vec<Pine> = (0..2 + rng.below(4))
        .map(|_| {
            let base = rng.range(near, 0.98);
            let height = (base - h) * rng.range(0.75, 1.0);
            let mut x = rng.range(0.05, 0.95);
            for _ in 0..8 {
                if p.body.is_none_or(|b| (x - b.x).abs() > b.radius + height * 0.3) {
                    break;
                }
                x = rng.range(0.05, 0.95);
            }
            Pine { x, base, height }
        })
        .collect();
    pines.sort_by(|a, b| a.base.total_cmp(&b.base));
    for pine in pines {
        pine.paint(c, look, pine_green(&mut rng), 0.0);
    }
}

/// One row of dunes: sharp crests between broad hollows, with a lit and a shaded face.
struct Dune {
    base: f32,
    amplitude: f32,
    frequency: f32,
    phase: f32,
    wobble: Wave,
}

impl Dune {
    fn random(rng: &mut Rng, base: f32, amplitude: f32) -> Self {
        let frequency = std::f32::consts::PI * rng.range(1.0, 2.0);
        let (phase, wobble) = (rng.range(0.0, TAU), Wave::random(rng, 1.0, amplitude * 0.25));
        Self { base, amplitude, frequency, phase, wobble }
    }

    /// Height of the crest line at `u`, as a `v` coordinate.
    fn crest(&self, u: f32) -> f32 {
        let s = (self.frequency * u + self.phase).sin().abs();
        self.base - self.amplitude * (1.0 - s).powf(1.5) + self.wobble.at(u)
    }

    /// How much the sand at `u`, `below` under the crest, faces away from light coming from the
    /// left (0 lit, 1 in shade). The faces' boundary slants down from each crest, as on a dune.
    fn shade(&self, u: f32, below: f32, light_from_left: bool) -> f32 {
        let t = self.frequency * (u + below * 1.2) + self.phase;
        let rises_to_the_right = -t.sin().signum() * t.cos();
        let facing_away = if light_from_left { -rises_to_the_right } else { rises_to_the_right };
        smoothstep(-0.15, 0.15, facing_away) * (1.0 - smoothstep(0.05, 0.2, below))
    }
}

/// Sand dunes in four rows, paler toward the horizon.
fn paint_dunes(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 8);
    let (h, px) = (p.horizon, c.pixel());
    let rows = [(h - 0.005, 0.03), (h + 0.08, 0.05), (h + 0.2, 0.07), (h + 0.36, 0.09)];
    for (k, &(base, amplitude)) in rows.iter().enumerate() {
        let dune = Dune::random(&mut rng, base, amplitude);
        let sand = if k % 2 == 0 { [0.98, 0.78, 0.45] } else { [0.94, 0.66, 0.36] };
        let haze = 0.3 * (1.0 - k as f32 / 3.0);
        c.paint(Area::rows(base - amplitude * 1.3 - px, 1.0), |u, v| {
            let below = v - dune.crest(u);
            let shade =
                1.0 - 0.25 * dune.shade(u, below, look.from_left) - 0.12 * smoothstep(0.0, 0.2, below);
            Some((look.ground(scale(sand, shade), haze), coverage(-below, px)))
        });
    }
}

/// A lake's outline: from just below the horizon (a strip of far shore) to a wavy near shore.
struct Lake {
    top: f32,
    bottom: f32,
    shore: Wave,
}

impl Lake {
    fn new(p: &SceneParams) -> Option<Self> {
        let mut rng = layer_rng(p, 9);
        let shore = Wave::random(&mut rng, 1.0, 0.025);
        let top = p.horizon + 0.02;
        (p.water == Water::Lake).then(|| Self { top, bottom: top + rng.range(0.2, 0.27), shore })
    }

    fn near_shore(&self, u: f32) -> f32 {
        self.bottom + self.shore.at(u)
    }
}

/// Where water is: the sea reaches the bottom, a lake ends at its near shore.
enum Shore {
    Sea { top: f32 },
    Lake(Lake),
}

impl Shore {
    fn top(&self) -> f32 {
        match self {
            Self::Sea { top } => *top,
            Self::Lake(lake) => lake.top,
        }
    }

    /// How much of the pixel at (`u`, `v`) below the top is water.
    fn inside(&self, u: f32, v: f32, px: f32) -> f32 {
        match self {
            Self::Sea { .. } => 1.0,
            Self::Lake(lake) => coverage(v - lake.near_shore(u), px),
        }
    }
}

/// Water mirrors what is painted above it (sky, sun or moon, mountains, trees) with rippled,
/// darkening rows, a shimmering column under the sun or moon, and wave glints on the sea.
fn paint_water(c: &mut Canvas, p: &SceneParams, look: &Look, shore: &Shore) {
    let mut rng = layer_rng(p, 10);
    let (size, px) = (c.size, c.pixel());
    let sea = matches!(shore, Shore::Sea { .. });
    let deep = look.shiny(if sea { [0.08, 0.33, 0.66] } else { [0.12, 0.38, 0.52] }, 0.0);
    let Some(first) = c.span(shore.top(), 1.0).find(|&j| c.centre(j) >= shore.top()) else { return };
    let ripple = (size as f32 * if sea { 0.02 } else { 0.012 }).max(1.0);
    let phase = rng.range(0.0, TAU);
    for j in first..size {
        let (v, depth) = (c.centre(j), (j - first) as f32 / (size - first).max(1) as f32);
        let mirror = (2 * first).saturating_sub(j + 1).min(size - 1);
        let shift = (ripple * (j as f32 * 1.9 + phase).sin() * depth.sqrt()).round() as i64;
        let tint = if sea { 0.55 + 0.3 * depth } else { 0.3 + 0.3 * depth };
        for i in 0..size {
            let alpha = shore.inside(c.centre(i), v, px);
            if alpha > 0.0 {
                let source = (i as i64 + shift).clamp(0, size as i64 - 1) as usize;
                let reflected = scale(c.get(source, mirror), 0.9);
                c.blend(i, j, mix(reflected, deep, tint), alpha);
            }
        }
    }
    if let Some(body) = &p.body {
        paint_glitter(c, body, look, shore, &mut rng);
    }
    if sea {
        paint_wave_glints(c, look, shore.top(), &mut rng);
    }
}

/// Broken horizontal dashes under the sun or moon, widening toward the viewer.
fn paint_glitter(c: &mut Canvas, body: &CelestialBody, look: &Look, shore: &Shore, rng: &mut Rng) {
    let (top, px) = (shore.top(), c.pixel());
    let strength = if body.kind == BodyKind::Sun { 0.85 } else { 0.6 };
    let rows: Vec<(f32, f32)> = (0..c.size).map(|_| (rng.unit(), rng.range(0.3, 1.0))).collect();
    c.paint(Area::rows(top, 1.0), |u, v| {
        let (gap, width) = rows[((v / px) as usize).min(rows.len() - 1)];
        let depth = ((v - top) / (1.0 - top)).clamp(0.0, 1.0);
        let half = body.radius * (0.5 + 1.3 * depth) * width;
        let alpha = strength * (1.0 - 0.5 * depth) * coverage((u - body.x).abs() - half, px);
        (gap > 0.3).then_some((mix(look.body.0, look.body.1, 0.5), alpha * shore.inside(u, v, px)))
    });
}

/// Short light streaks on the sea, longer near the viewer.
fn paint_wave_glints(c: &mut Canvas, look: &Look, top: f32, rng: &mut Rng) {
    let px = c.pixel();
    let light = mix(look.sky[2], [1.0, 1.0, 1.0], 0.3);
    for _ in 0..24 {
        let depth = rng.unit().powf(0.8);
        let (x, y) = (rng.unit(), top + 0.02 + (1.0 - top - 0.02) * depth);
        let half = 0.015 + 0.05 * depth;
        c.paint(Area { left: x - half, right: x + half, top: y - px, bottom: y + px }, |u, v| {
            let d = ((u - x) / half).abs().max(((v - y) / px).abs() * 2.0);
            Some((light, 0.35 * (1.0 - d).clamp(0.0, 1.0)))
        });
    }
}

/// A strip of sand along the bottom, with a line of white foam and dark wet sand at the water.
fn paint_beach(c: &mut Canvas, p: &SceneParams, look: &Look) {
    let mut rng = layer_rng(p, 11);
    let px = c.pixel();
    let top = rng.range(0.83, 0.88);
    let edge = Wave::random(&mut rng, 1.2, 0.02);
    let foam = 0.008 + px;
    c.paint(Area::rows(top - 0.03 - foam, 1.0), |u, v| {
        let below = v - (top + edge.at(u));
        let (colour, alpha) = if below < 0.0 {
            ([1.0, 1.0, 1.0], 0.85 * coverage(-below - foam, px))
        } else {
            let dry = mix([0.82, 0.68, 0.48], [0.96, 0.86, 0.62], smoothstep(0.0, 0.03, below));
            (dry, 1.0)
        };
        Some((look.ground(colour, 0.0), alpha))
    });
}

// ---------------------------------------------------------------------------------------------
// Scenes

/// A generated training example: what it shows, how it is described and what it looks like.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The drawn attributes.
    pub params: SceneParams,
    /// Its caption.
    pub caption: String,
    /// `size` × `size` RGB, row-major, channels last, values in [0, 1].
    pub image: Vec<f32>,
    /// Side in pixels.
    pub size: usize,
}

/// The scene for `seed` at `size` × `size` pixels: the same seed always gives the same picture
/// and caption.
pub fn scene(seed: u64, size: usize) -> Scene {
    let params = SceneParams::random(seed);
    Scene { caption: caption(&params, seed), image: render(&params, size), params, size }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::dataset::vocabulary::{words, MAX_WORDS, WORDS};

    /// Mean of `f(pixel)` over the rows `rows` of an image.
    fn mean_over(image: &[f32], size: usize, rows: std::ops::Range<usize>, f: impl Fn(&[f32]) -> f32) -> f32 {
        let n = rows.len() * size;
        image[rows.start * size * 3..rows.end * size * 3].chunks(3).map(f).sum::<f32>() / n as f32
    }

    /// The first `n` scenes at `time`.
    fn scenes_at(time: TimeOfDay, n: usize, size: usize) -> Vec<Scene> {
        (0..).filter(|&s| SceneParams::random(s).time == time).take(n).map(|s| scene(s, size)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_scene() {
        for seed in [0, 7, 123_456] {
            let (a, b) = (scene(seed, 64), scene(seed, 64));
            assert_eq!(a.params, b.params);
            assert_eq!(a.image, b.image);
            assert_eq!(a.caption, b.caption);
        }
        assert_ne!(scene(1, 32).image, scene(2, 32).image);
    }

    #[test]
    fn images_have_the_right_length_and_range_at_every_size() {
        for size in [0, 1, 32, 64, 128] {
            for seed in 0..12 {
                let image = render(&SceneParams::random(seed), size);
                assert_eq!(image.len(), size * size * 3);
                assert!(image.iter().all(|v| (0.0..=1.0).contains(v)), "seed {seed} size {size}");
            }
        }
    }

    #[test]
    fn every_time_of_day_appears_in_200_seeds() {
        let seen: Vec<TimeOfDay> = (0..200).map(|s| SceneParams::random(s).time).collect();
        for time in TimeOfDay::ALL {
            let n = seen.iter().filter(|&&t| t == time).count();
            assert!((25..=60).contains(&n), "{time:?}: {n}");
        }
    }

    #[test]
    fn every_attribute_value_is_common() {
        let params: Vec<SceneParams> = (0..2000).map(SceneParams::random).collect();
        let share = |name: &str, class: usize| {
            params.iter().filter(|p| p.labels().contains(&(name, class))).count() as f32 / params.len() as f32
        };
        assert!((0.42..0.58).contains(&(1.0 - share("water", 0))), "water");
        assert!((0.42..0.58).contains(&(1.0 - share("mountains", 0))), "mountains");
        for (name, classes) in [("body", 3), ("water", 3), ("mountains", 3), ("trees", 3), ("hills", 2)] {
            for class in 0..classes {
                assert!(share(name, class) > 0.1, "{name} = {class}: {}", share(name, class));
            }
        }
        for name in ["stars", "clouds", "beach", "fields", "desert"] {
            assert!(share(name, 1) > 0.1, "{name}: {}", share(name, 1));
        }
    }

    #[test]
    fn combinations_stay_plausible() {
        for p in (0..2000).map(SceneParams::random) {
            if p.desert {
                assert!(p.water == Water::None && !p.fields && p.trees == Trees::None && !p.hills, "{p:?}");
            }
            assert!(!p.beach || p.water == Water::Sea, "{p:?}");
            assert!(!p.stars || matches!(p.time, TimeOfDay::Dusk | TimeOfDay::Night), "{p:?}");
            assert!((1..=3).contains(&p.mountain_ranges));
            if let Some(b) = p.body {
                let sun = b.kind == BodyKind::Sun;
                assert_eq!(sun, matches!(p.time, TimeOfDay::Dawn | TimeOfDay::Day | TimeOfDay::Sunset));
                assert!(b.y - b.radius > 0.0 && b.y + b.radius < p.horizon, "{p:?}");
            }
        }
    }

    #[test]
    fn captions_use_only_the_vocabulary_and_fit_the_text_encoder() {
        let vocabulary: BTreeSet<&str> = WORDS.iter().copied().collect();
        let mut used = BTreeSet::new();
        for seed in 0..3000 {
            let text = caption(&SceneParams::random(seed), seed);
            assert_eq!(words(&text).collect::<Vec<_>>().join(" "), text, "spacing of {text:?}");
            assert!(words(&text).count() <= MAX_WORDS, "{text:?}");
            for w in words(&text) {
                let Some(&known) = vocabulary.get(w) else { panic!("{w:?} in {text:?}") };
                used.insert(known);
            }
        }
        let unused: Vec<_> = vocabulary.difference(&used).collect();
        assert!(unused.is_empty(), "words no caption uses: {unused:?}");
    }

    #[test]
    fn captions_name_the_time_of_day_and_the_water() {
        for seed in 0..500 {
            let p = SceneParams::random(seed);
            let text = caption(&p, seed);
            let t = p.time as usize;
            let tables = [vocab::TIME_PHRASES[t], vocab::TIME_NOUNS[t], vocab::SKY_ADJECTIVES[t]];
            assert!(tables.iter().flat_map(|t| t.iter()).any(|phrase| text.contains(phrase)), "{text:?}");
            let sea = ["sea", "ocean"].iter().any(|w| words(&text).any(|x| x == *w));
            assert_eq!(sea, p.water == Water::Sea, "{text:?}");
        }
    }

    #[test]
    fn stated_labels_leave_out_exactly_what_the_caption_dropped() {
        let mut dropped_stars = 0;
        for seed in 0..2000 {
            let p = SceneParams::random(seed);
            let (text, stated) = (caption(&p, seed), stated_labels(&p, seed));
            let all = p.labels();
            assert!(stated.iter().all(|l| all.contains(l)), "{text:?}");
            assert!(stated.iter().any(|(name, _)| *name == "time_of_day"), "{text:?}");
            assert!(stated.iter().any(|(name, _)| *name == "water"), "{text:?}");
            let says_stars = words(&text).any(|w| w == "stars");
            let stars_stated = stated.iter().any(|(name, _)| *name == "stars");
            // Stars are said exactly when the scene has them, unless the caption ran long.
            assert_eq!(says_stars, p.stars && stars_stated, "{text:?}");
            if p.stars && !stars_stated {
                dropped_stars += 1;
            }
        }
        assert!(dropped_stars > 0, "no long caption dropped its stars");
    }

    #[test]
    fn night_is_darker_than_day() {
        let brightness = |s: &Scene| s.image.iter().sum::<f32>() / s.image.len() as f32;
        let average = |v: Vec<Scene>| v.iter().map(brightness).sum::<f32>() / v.len() as f32;
        let (night, day) =
            (average(scenes_at(TimeOfDay::Night, 12, 32)), average(scenes_at(TimeOfDay::Day, 12, 32)));
        assert!(night + 0.25 < day, "night {night}, day {day}");
    }

    #[test]
    fn sunset_skies_are_redder_than_day_skies() {
        let size = 32;
        let redness = |v: Vec<Scene>| {
            v.iter().map(|s| mean_over(&s.image, size, 0..size / 2, |p| p[0] - p[2])).sum::<f32>()
                / v.len() as f32
        };
        let (sunset, day) =
            (redness(scenes_at(TimeOfDay::Sunset, 12, size)), redness(scenes_at(TimeOfDay::Day, 12, size)));
        assert!(sunset > day + 0.4, "sunset {sunset}, day {day}");
    }

    #[test]
    fn a_sun_is_a_bright_disc_where_the_parameters_put_it() {
        let size = 64;
        let mut checked = 0;
        for s in (0..200).map(|seed| scene(seed, size)) {
            let Some(body) = s.params.body.filter(|b| b.kind == BodyKind::Sun) else { continue };
            // Mean brightness of the pixels between `r0` and `r1` radii from the sun's centre.
            let annulus = |r0: f32, r1: f32| {
                let (mut sum, mut n) = (0.0, 0);
                for (k, p) in s.image.chunks(3).enumerate() {
                    let (u, v) =
                        (((k % size) as f32 + 0.5) / size as f32, ((k / size) as f32 + 0.5) / size as f32);
                    let d = (u - body.x).hypot(v - body.y) / body.radius;
                    if (r0..r1).contains(&d) {
                        sum += (p[0] + p[1] + p[2]) / 3.0;
                        n += 1;
                    }
                }
                sum / n as f32
            };
            let (disc, around) = (annulus(0.0, 0.7), annulus(2.0, 3.0));
            assert!(disc > 0.75 && disc > around + 0.05, "{:?}: disc {disc}, around {around}", s.caption);
            checked += 1;
        }
        assert!(checked > 50);
    }

    /// Writes 16 scenes at 64×64 as a 4×4 contact sheet to `scenes.ppm` in the temporary folder,
    /// with their captions on stdout: `cargo test --lib contact_sheet -- --ignored --nocapture`.
    #[test]
    #[ignore = "writes a file to look at by eye"]
    fn contact_sheet() {
        let env = |name: &str, default: usize| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let (first, size, cols, gap) = (env("SCENES_FIRST_SEED", 0), env("SCENES_SIZE", 64), 4, 2);
        let side = cols * size + (cols + 1) * gap;
        let mut pixels = vec![255u8; side * side * 3];
        for k in 0..cols * cols {
            let seed = (first + k) as u64;
            let s = scene(seed, size);
            println!("{seed:3}: {}", s.caption);
            let (x0, y0) = (gap + (k % cols) * (size + gap), gap + (k / cols) * (size + gap));
            for (n, rgb) in s.image.chunks(3).enumerate() {
                let at = ((y0 + n / size) * side + x0 + n % size) * 3;
                for (c, v) in rgb.iter().enumerate() {
                    pixels[at + c] = (v * 255.0).round() as u8;
                }
            }
        }
        let mut file = format!("P6\n{side} {side}\n255\n").into_bytes();
        file.extend(pixels);
        let path = std::env::temp_dir().join("scenes.ppm");
        std::fs::write(&path, file).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
