//! The SDEdit canvas (shared by the graph and the engine): strokes in resolution-independent coordinates, their undo history, and
//! their rasterisation into the picture and mask an SDEdit render starts from.

use serde::{Deserialize, Serialize};

/// Which layer a stroke paints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Layer {
    /// The colour picture.
    #[default]
    Paint,
    /// The edit mask: painted areas may change, the rest is kept (when any mask is painted).
    Mask,
    /// A word region's area (paint with words), by index into [`Canvas::regions`].
    Region(usize),
}

/// What a stroke does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Tool {
    /// Paints discs along the path.
    #[default]
    Brush,
    /// Restores the base along the path (paint layer) or unmasks (mask layer).
    Eraser,
    /// Flood-fills the region of similar colour around the first point.
    Fill,
}

/// One stroke. Points are `[x, y, pressure]` with x, y in [0, 1] of the canvas and pressure in
/// (0, 1] (1 where the device reports none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stroke {
    /// The layer it paints.
    #[serde(default)]
    pub layer: Layer,
    /// Brush, eraser or fill.
    #[serde(default)]
    pub tool: Tool,
    /// Its colour.
    pub color: [u8; 3],
    /// Brush radius as a fraction of the canvas width, at full pressure.
    pub radius: f32,
    /// The path.
    pub points: Vec<[f32; 3]>,
}

/// Colours of the built-in model's world, offered as swatches: sky, dusk, sun, snow, rock,
/// forest, grass, water, sand, night.
pub const SWATCHES: [[u8; 3]; 10] = [
    [110, 165, 225],
    [235, 130, 70],
    [250, 215, 90],
    [240, 240, 245],
    [110, 100, 105],
    [35, 80, 45],
    [90, 150, 60],
    [40, 90, 150],
    [220, 195, 140],
    [20, 25, 55],
];

/// The longest phrase a word region may hold, in characters.
pub const MAX_PHRASE_CHARS: usize = 200;

/// A word region of the canvas (paint with words): a phrase that appears where its strokes
/// are painted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WordRegion {
    /// The phrase; part of the prompt or new (then appended to it).
    pub phrase: String,
    /// How strongly the phrase is drawn to the region.
    pub weight: f64,
    /// Hidden regions are kept but not rendered.
    pub hidden: bool,
}

impl Default for WordRegion {
    fn default() -> Self {
        Self { phrase: String::new(), weight: crate::models::regions::DEFAULT_WEIGHT, hidden: false }
    }
}

/// The largest mask blur a canvas may hold, in pixels.
pub const MAX_MASK_BLUR: f64 = 64.0;

/// A canvas node's state: strokes (saved) and what undo removed (not saved).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Canvas {
    /// Strokes in painting order.
    pub strokes: Vec<Stroke>,
    /// Colour under the strokes when no base image is wired.
    pub background: [u8; 3],
    /// SDEdit strength in (0, 1].
    pub strength: f64,
    /// Blur of the mask layer in pixels of the render (0: hard cells): an ordinary model blends
    /// softly across the mask's edge.
    pub mask_blur: f32,
    /// Word regions, painted on their own layers (older files have none).
    pub regions: Vec<WordRegion>,
    /// The brush the next stroke uses.
    pub brush: Stroke,
    /// Strokes undone, newest last; cleared by a new stroke.
    #[serde(skip)]
    pub redo: Vec<Stroke>,
}

impl PartialEq for Canvas {
    /// Equal when they would render the same (the undo stack and the next brush don't count).
    fn eq(&self, other: &Self) -> bool {
        self.strokes == other.strokes
            && self.background == other.background
            && self.strength == other.strength
            && self.mask_blur == other.mask_blur
            && self.regions == other.regions
    }
}

impl Default for Canvas {
    fn default() -> Self {
        Self {
            strokes: default_sketch(),
            background: SWATCHES[0],
            strength: 0.75,
            mask_blur: 0.0,
            regions: vec![],
            brush: Stroke {
                layer: Layer::Paint,
                tool: Tool::Brush,
                color: SWATCHES[1],
                radius: 0.04,
                points: vec![],
            },
            redo: vec![],
        }
    }
}

/// The first-start sketch: a sky, a dark mountain band, water, and an orange sun.
fn default_sketch() -> Vec<Stroke> {
    let band = |color: [u8; 3], y: f32, radius: f32| Stroke {
        layer: Layer::Paint,
        tool: Tool::Brush,
        color,
        radius,
        points: vec![[0.0, y, 1.0], [0.5, y - 0.03, 1.0], [1.0, y, 1.0]],
    };
    vec![
        band(SWATCHES[1], 0.35, 0.12),
        band(SWATCHES[4], 0.55, 0.1),
        band(SWATCHES[7], 0.85, 0.16),
        Stroke { radius: 0.09, points: vec![[0.62, 0.3, 1.0]], ..band(SWATCHES[2], 0.0, 0.0) },
    ]
}

impl Canvas {
    /// Adds a finished stroke; the redo stack is dropped.
    pub fn push(&mut self, stroke: Stroke) {
        self.strokes.push(stroke);
        self.redo.clear();
    }

    /// Removes the newest stroke. Returns whether there was one.
    pub fn undo(&mut self) -> bool {
        let Some(stroke) = self.strokes.pop() else { return false };
        self.redo.push(stroke);
        true
    }

    /// Puts back the newest undone stroke. Returns whether there was one.
    pub fn redo(&mut self) -> bool {
        let Some(stroke) = self.redo.pop() else { return false };
        self.strokes.push(stroke);
        true
    }

    /// Removes every stroke (undo brings them back one by one).
    pub fn clear(&mut self) {
        while self.undo() {}
    }

    /// Checks what a file gave: strength in [0, 1]; per stroke (and the brush) a radius in
    /// (0, 0.5] of the width and points inside [-1, 2]² with pressures in [0, 1], all finite. The
    /// reason names the stroke, the point and the value.
    pub fn check(&self) -> Result<(), String> {
        within("strength", self.strength, 0.0, 1.0)?;
        within("mask blur", f64::from(self.mask_blur), 0.0, MAX_MASK_BLUR)?;
        let strokes = self.strokes.iter().enumerate().map(|(i, s)| (format!("stroke {}", i + 1), s));
        for (name, stroke) in strokes.chain(std::iter::once(("the brush".to_string(), &self.brush))) {
            let radius = f64::from(stroke.radius);
            if !(radius.is_finite() && radius > 0.0 && radius <= 0.5) {
                return Err(format!("{name}: radius = {radius} is outside (0, 0.5]"));
            }
            for (k, &[x, y, pressure]) in stroke.points.iter().enumerate() {
                let point = |field: &str| format!("{name}, point {}: {field}", k + 1);
                within(&point("x"), f64::from(x), -1.0, 2.0)?;
                within(&point("y"), f64::from(y), -1.0, 2.0)?;
                within(&point("pressure"), f64::from(pressure), 0.0, 1.0)?;
            }
            if let Layer::Region(r) = stroke.layer {
                if r >= self.regions.len() {
                    return Err(format!("{name}: paints word region {} of {}", r + 1, self.regions.len()));
                }
            }
        }
        for (i, region) in self.regions.iter().enumerate() {
            within(
                &format!("word region {}: weight", i + 1),
                region.weight,
                0.0,
                crate::models::regions::MAX_WEIGHT,
            )?;
            if region.phrase.chars().count() > MAX_PHRASE_CHARS {
                return Err(format!(
                    "word region {}: the phrase is longer than {MAX_PHRASE_CHARS} characters",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// Removes word region `index` and its strokes; later regions move down one.
    pub fn remove_region(&mut self, index: usize) {
        if index >= self.regions.len() {
            return;
        }
        self.regions.remove(index);
        let renumber = |strokes: &mut Vec<Stroke>| {
            strokes.retain(|s| s.layer != Layer::Region(index));
            for s in strokes.iter_mut() {
                if let Layer::Region(r) = s.layer {
                    if r > index {
                        s.layer = Layer::Region(r - 1);
                    }
                }
            }
        };
        renumber(&mut self.strokes);
        renumber(&mut self.redo);
        if let Layer::Region(r) = self.brush.layer {
            self.brush.layer = match r.cmp(&index) {
                std::cmp::Ordering::Less => Layer::Region(r),
                std::cmp::Ordering::Equal => Layer::Paint,
                std::cmp::Ordering::Greater => Layer::Region(r - 1),
            };
        }
    }

    /// Whether any stroke paints the mask.
    pub fn has_mask(&self) -> bool {
        self.strokes.iter().any(|s| s.layer == Layer::Mask)
    }

    /// Rasterises the strokes at `width × height` over `base` (RGB, that size) or the
    /// background colour.
    pub fn rasterize(&self, width: usize, height: usize, base: Option<&[u8]>) -> Raster {
        let under: Vec<u8> = match base {
            Some(base) if base.len() == width * height * 3 => base.to_vec(),
            _ => self.background.iter().copied().cycle().take(width * height * 3).collect(),
        };
        let mut raster = Raster {
            width,
            height,
            rgb: under.clone(),
            mask: vec![0; width * height],
            regions: vec![vec![0; width * height]; self.regions.len()],
        };
        for stroke in &self.strokes {
            raster.apply(stroke, &under);
        }
        raster
    }
}

/// The part of the segment from `a` to `b` inside the square `[lo, hi]²` (Liang–Barsky
/// clipping, in f64 so that far points keep their precision): its ends and their parameters
/// `t0 <= t1` along the whole segment; `None` when it misses the square or a coordinate is not
/// finite.
fn clip_segment(a: [f32; 2], b: [f32; 2], lo: f32, hi: f32) -> Option<([f32; 2], [f32; 2], f32, f32)> {
    if !a.iter().chain(&b).all(|v| v.is_finite()) {
        return None;
    }
    let (a, b) = (a.map(f64::from), b.map(f64::from));
    // Each end: its parameter, and the boundary (axis, value) that clipped it, if one did. A
    // clipped end is placed on that boundary exactly: from a far point, a + (b - a)·t would
    // lose every digit that matters.
    let (mut t0, mut t1) = ((0f64, None), (1f64, None));
    for k in 0..2 {
        let d = b[k] - a[k];
        for (p, q, bound) in [(-d, a[k] - f64::from(lo), lo), (d, f64::from(hi) - a[k], hi)] {
            if p == 0.0 {
                if q < 0.0 {
                    return None;
                }
            } else if p < 0.0 && q / p > t0.0 {
                t0 = (q / p, Some((k, f64::from(bound))));
            } else if p > 0.0 && q / p < t1.0 {
                t1 = (q / p, Some((k, f64::from(bound))));
            }
        }
    }
    let at = |(t, clip): (f64, Option<(usize, f64)>)| match clip {
        None if t == 0.0 => a.map(|v| v as f32),
        None => b.map(|v| v as f32),
        Some((k, bound)) => {
            let other = 1 - k;
            let mut point = [0f32; 2];
            point[k] = bound as f32;
            point[other] = (a[other] + (b[other] - a[other]) * (bound - a[k]) / (b[k] - a[k])) as f32;
            point
        }
    };
    (t0.0 <= t1.0).then(|| (at(t0), at(t1), t0.0 as f32, t1.0 as f32))
}

/// `Ok` when `value` is finite and in `[lo, hi]`; else the field, the value and the range (the
/// checks of values read from graph files).
pub fn within(name: &str, value: f64, lo: f64, hi: f64) -> Result<(), String> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} = {value} is outside [{lo}, {hi}]"))
    }
}

/// A rasterised canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct Raster {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB, row-major.
    pub rgb: Vec<u8>,
    /// 255 where the mask is painted, row-major.
    pub mask: Vec<u8>,
    /// Per word region, 255 where it is painted, row-major.
    pub regions: Vec<Vec<u8>>,
}

impl Raster {
    fn apply(&mut self, stroke: &Stroke, under: &[u8]) {
        if stroke.tool == Tool::Fill {
            if let Some(&[x, y, _]) = stroke.points.first() {
                self.fill(stroke, x, y);
            }
            return;
        }
        let (width, height) = (self.width as f32, self.height as f32);
        let mut stamp = |x: f32, y: f32, pressure: f32| self.disc(stroke, x, y, pressure, under);
        let points = &stroke.points;
        if let [[x, y, p]] = points[..] {
            stamp(x, y, p);
        }
        // The farthest a disc's centre can be and still touch the canvas, in canvas units.
        let reach = stroke.radius.clamp(0.0, 2.0) + 2.0 / width.max(1.0);
        for pair in points.windows(2) {
            let ([x0, y0, p0], [x1, y1, p1]) = (pair[0], pair[1]);
            // Only the part of the segment whose discs can touch the canvas is stamped, so a
            // point far outside (or a non-finite one) costs nothing, whatever a file says.
            let Some((a, b, t0, t1)) = clip_segment([x0, y0], [x1, y1], -reach, 1.0 + reach) else {
                continue;
            };
            // At `s` in [0, 1] along the clipped part (the pressure follows the whole segment).
            let at = |s: f32| {
                let t = t0 + (t1 - t0) * s;
                (a[0] + (b[0] - a[0]) * s, a[1] + (b[1] - a[1]) * s, p0 + (p1 - p0) * t)
            };
            // Stamps at most a quarter radius apart in pixels, so the line has no gaps.
            let length_px = ((b[0] - a[0]) * width).hypot((b[1] - a[1]) * height);
            let spacing_px = (stroke.radius * width * p0.min(p1) / 4.0).max(0.5);
            let n = (length_px / spacing_px).ceil().max(1.0) as usize;
            for i in 0..=n {
                let (x, y, p) = at(i as f32 / n as f32);
                stamp(x, y, p);
            }
        }
    }

    /// Paints one disc centred at (x, y) in canvas units.
    fn disc(&mut self, stroke: &Stroke, x: f32, y: f32, pressure: f32, under: &[u8]) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let (w, h) = (self.width as f32, self.height as f32);
        let r = (stroke.radius * w * pressure.clamp(0.05, 1.0)).max(0.5);
        let (cx, cy) = (x * w, y * h);
        let y_range = ((cy - r).floor().max(0.0) as usize)..((cy + r).ceil().min(h) as usize);
        let x_range = ((cx - r).floor().max(0.0) as usize)..((cx + r).ceil().min(w) as usize);
        for py in y_range {
            for px in x_range.clone() {
                let (dx, dy) = (px as f32 + 0.5 - cx, py as f32 + 0.5 - cy);
                if dx * dx + dy * dy > r * r {
                    continue;
                }
                let i = py * self.width + px;
                match (stroke.layer, stroke.tool) {
                    (Layer::Paint, Tool::Eraser) => {
                        self.rgb[3 * i..3 * i + 3].copy_from_slice(&under[3 * i..3 * i + 3])
                    }
                    (Layer::Paint, _) => self.rgb[3 * i..3 * i + 3].copy_from_slice(&stroke.color),
                    (Layer::Mask, Tool::Eraser) => self.mask[i] = 0,
                    (Layer::Mask, _) => self.mask[i] = 255,
                    (Layer::Region(r), tool) => {
                        if let Some(cells) = self.regions.get_mut(r) {
                            cells[i] = if tool == Tool::Eraser { 0 } else { 255 };
                        }
                    }
                }
            }
        }
    }

    /// Flood-fills the 4-connected region around (x, y) whose colour is within a small
    /// tolerance of the seed pixel's (the mask layer: whose mask value equals the seed's).
    fn fill(&mut self, stroke: &Stroke, x: f32, y: f32) {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return;
        }
        let sx = ((x * w as f32) as usize).min(w - 1);
        let sy = ((y * h as f32) as usize).min(h - 1);
        let seed_index = sy * w + sx;
        let seed_rgb = [self.rgb[3 * seed_index], self.rgb[3 * seed_index + 1], self.rgb[3 * seed_index + 2]];
        let cells = |r: &Raster, i: usize| match stroke.layer {
            Layer::Mask => r.mask[i],
            Layer::Region(k) => r.regions.get(k).map_or(0, |c| c[i]),
            Layer::Paint => 0,
        };
        let seed_mask = cells(self, seed_index);
        let similar = |r: &Raster, i: usize| match stroke.layer {
            Layer::Paint => (0..3).all(|c| r.rgb[3 * i + c].abs_diff(seed_rgb[c]) <= 24),
            Layer::Mask | Layer::Region(_) => cells(r, i) == seed_mask,
        };
        let mut seen = vec![false; w * h];
        let mut stack = vec![seed_index];
        seen[seed_index] = true;
        while let Some(i) = stack.pop() {
            let (px, py) = (i % w, i / w);
            let neighbours = [
                (px > 0).then(|| i - 1),
                (px + 1 < w).then(|| i + 1),
                (py > 0).then(|| i - w),
                (py + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if !seen[j] && similar(self, j) {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        let value = if stroke.tool == Tool::Eraser { 0 } else { 255 };
        for (i, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
            match stroke.layer {
                Layer::Paint => self.rgb[3 * i..3 * i + 3].copy_from_slice(&stroke.color),
                Layer::Mask => self.mask[i] = value,
                Layer::Region(k) => {
                    if let Some(cells) = self.regions.get_mut(k) {
                        cells[i] = value;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Canvas {
        Canvas { strokes: vec![], background: [0, 0, 0], ..Canvas::default() }
    }

    fn line(layer: Layer, tool: Tool, color: [u8; 3]) -> Stroke {
        Stroke { layer, tool, color, radius: 0.1, points: vec![[0.1, 0.5, 1.0], [0.9, 0.5, 1.0]] }
    }

    #[test]
    fn a_horizontal_stroke_paints_a_band_of_its_width_and_nothing_else() {
        let mut canvas = blank();
        canvas.push(Stroke {
            points: vec![[0.2, 0.5, 1.0], [0.8, 0.5, 1.0]],
            ..line(Layer::Paint, Tool::Brush, [255, 0, 0])
        });
        let r = canvas.rasterize(100, 100, None);
        let px = |x: usize, y: usize| &r.rgb[3 * (y * 100 + x)..3 * (y * 100 + x) + 3];
        assert_eq!(px(50, 50), [255, 0, 0]);
        assert_eq!(px(50, 41), [255, 0, 0], "radius 10 px covers 9 px away");
        assert_eq!(px(50, 38), [0, 0, 0], "but not 12 px away");
        assert_eq!(px(50, 10), [0, 0, 0]);
        assert_eq!(px(11, 50), [255, 0, 0], "the round cap reaches 10 px before x = 20");
        assert_eq!(px(5, 50), [0, 0, 0], "but no further");
        assert!(r.mask.iter().all(|&m| m == 0));
    }

    #[test]
    fn low_pressure_paints_thinner() {
        let mut canvas = blank();
        let mut stroke = line(Layer::Paint, Tool::Brush, [255, 255, 255]);
        stroke.points.iter_mut().for_each(|p| p[2] = 0.3);
        canvas.push(stroke);
        let r = canvas.rasterize(100, 100, None);
        let painted = r.rgb.chunks(3).filter(|p| p[0] == 255).count();
        // A band 6 px wide (radius 3) and 80 px long, plus round caps: about 500 px.
        assert!((450..560).contains(&painted), "{painted}");
    }

    #[test]
    fn eraser_restores_the_base_and_fill_floods_one_region() {
        let base: Vec<u8> = (0..20 * 20).flat_map(|_| [9u8, 9, 9]).collect();
        let mut canvas = blank();
        canvas.push(Stroke {
            points: vec![[0.5, 0.0, 1.0], [0.5, 1.0, 1.0]],
            ..line(Layer::Paint, Tool::Brush, [200, 0, 0])
        });
        canvas.push(Stroke { points: vec![[0.1, 0.1, 1.0]], ..line(Layer::Paint, Tool::Fill, [0, 0, 200]) });
        let r = canvas.rasterize(20, 20, Some(&base));
        assert_eq!(&r.rgb[0..3], [0, 0, 200], "left region filled");
        assert_eq!(&r.rgb[3 * 19..3 * 20], [9, 9, 9], "right region, beyond the wall, kept");
        canvas.push(Stroke {
            points: vec![[0.5, 0.0, 1.0], [0.5, 1.0, 1.0]],
            ..line(Layer::Paint, Tool::Eraser, [0, 0, 0])
        });
        let r = canvas.rasterize(20, 20, Some(&base));
        assert_eq!(&r.rgb[3 * 10..3 * 11], [9, 9, 9], "the wall is erased back to the base");
    }

    #[test]
    fn mask_strokes_paint_only_the_mask_and_undo_redo_walk_the_history() {
        let mut canvas = blank();
        canvas.push(line(Layer::Mask, Tool::Brush, [1, 2, 3]));
        assert!(canvas.has_mask());
        let r = canvas.rasterize(50, 50, None);
        assert_eq!(r.mask[25 * 50 + 25], 255);
        assert!(r.rgb.iter().all(|&c| c == 0));
        assert!(canvas.undo());
        assert!(!canvas.has_mask());
        assert!(!canvas.undo());
        assert!(canvas.redo());
        assert!(canvas.has_mask());
        canvas.undo();
        canvas.push(line(Layer::Paint, Tool::Brush, [1, 1, 1]));
        assert!(!canvas.redo(), "a new stroke drops the redo stack");
    }

    #[test]
    fn a_saved_canvas_loads_without_its_undo_stack_and_old_files_fill_defaults() {
        let mut canvas = blank();
        canvas.push(line(Layer::Paint, Tool::Brush, [1, 1, 1]));
        canvas.undo();
        let json = serde_json::to_string(&canvas).unwrap_or_default();
        let back: Canvas = serde_json::from_str(&json).unwrap_or_default();
        assert!(back.strokes.is_empty() && back.redo.is_empty());
        let old: Canvas = serde_json::from_str(r#"{"strokes": []}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.strength, Canvas::default().strength);
    }

    #[test]
    fn far_out_and_non_finite_points_paint_only_what_lies_on_the_canvas() {
        // A stroke from the canvas to x = 2^32 and one through ±1e30 used to stamp billions of
        // discs; now only their parts on the canvas count, and non-finite points nothing.
        let mut canvas = blank();
        let far = Stroke {
            points: vec![[0.5, 0.5, 1.0], [4_294_967_296.0, 0.5, 1.0]],
            ..line(Layer::Paint, Tool::Brush, [255, 0, 0])
        };
        let across = Stroke {
            points: vec![[-1e30, 0.25, 1.0], [1e30, 0.25, 1.0]],
            ..line(Layer::Paint, Tool::Brush, [0, 255, 0])
        };
        let broken = Stroke {
            points: vec![[f32::NAN, 0.8, 1.0], [f32::INFINITY, 0.8, 1.0], [f32::NAN, f32::NAN, f32::NAN]],
            ..line(Layer::Paint, Tool::Brush, [0, 0, 255])
        };
        canvas.strokes = vec![far, across, broken];
        let r = canvas.rasterize(64, 64, None);
        let at = |x: usize, y: usize| &r.rgb[(y * 64 + x) * 3..][..3];
        // Right half of row 32 red, left half still black; row 16 green across; row 51 untouched.
        assert_eq!(at(63, 32), [255, 0, 0]);
        assert_eq!(at(40, 32), [255, 0, 0]);
        assert_eq!(at(20, 32), [0, 0, 0]);
        assert_eq!(at(0, 16), [0, 255, 0]);
        assert_eq!(at(63, 16), [0, 255, 0]);
        assert!((0..64).all(|x| at(x, 51) == [0, 0, 0]));
    }

    #[test]
    fn word_regions_paint_their_own_layers_and_removing_one_renumbers_the_rest() {
        let mut canvas = blank();
        canvas.regions = vec![
            WordRegion { phrase: "a bright sun".into(), ..WordRegion::default() },
            WordRegion { phrase: "a calm lake".into(), ..WordRegion::default() },
        ];
        // Region 1 across the top, region 2 across the bottom, one eraser dab in region 2.
        let band = |layer: Layer, y: f32| Stroke {
            points: vec![[0.0, y, 1.0], [1.0, y, 1.0]],
            ..line(layer, Tool::Brush, [0, 0, 0])
        };
        canvas.push(band(Layer::Region(0), 0.1));
        canvas.push(band(Layer::Region(1), 0.9));
        canvas.push(Stroke {
            points: vec![[0.5, 0.9, 1.0]],
            ..line(Layer::Region(1), Tool::Eraser, [0, 0, 0])
        });
        let r = canvas.rasterize(40, 40, None);
        assert_eq!(r.regions.len(), 2);
        assert_eq!(r.regions[0][4 * 40 + 20], 255);
        assert_eq!(r.regions[0][36 * 40 + 5], 0);
        assert_eq!(r.regions[1][36 * 40 + 5], 255);
        assert_eq!(r.regions[1][36 * 40 + 20], 0, "erased");
        assert!(
            r.rgb.iter().all(|&v| v == 0) && r.mask.iter().all(|&m| m == 0),
            "regions paint nothing else"
        );
        // Removing region 1 drops its stroke and moves region 2's strokes to index 0.
        canvas.remove_region(0);
        assert_eq!(canvas.regions.len(), 1);
        assert_eq!(canvas.strokes.len(), 2);
        assert!(canvas.strokes.iter().all(|s| s.layer == Layer::Region(0)));
        assert!(canvas.check().is_ok());
    }

    #[test]
    fn files_with_strokes_on_missing_regions_or_wild_weights_are_refused() {
        let mut canvas = blank();
        canvas.push(line(Layer::Region(0), Tool::Brush, [0, 0, 0]));
        let e = canvas.check().unwrap_err();
        assert!(e.contains("stroke 1") && e.contains("word region 1 of 0"), "{e}");
        canvas.regions.push(WordRegion { weight: 1e9, ..WordRegion::default() });
        let e = canvas.check().unwrap_err();
        assert!(e.contains("word region 1: weight"), "{e}");
        canvas.regions[0].weight = 2.0;
        canvas.regions[0].phrase = "x".repeat(MAX_PHRASE_CHARS + 1);
        assert!(canvas.check().unwrap_err().contains("longer than"));
        // Old files (no regions field) still load.
        let old: Canvas = serde_json::from_str(r#"{"strokes": [], "strength": 0.5}"#).unwrap();
        assert!(old.regions.is_empty());
    }
}
