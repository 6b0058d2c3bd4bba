//! The SDEdit canvas widget: paint strokes with the mouse or a pen (pressure when the device
//! reports it), erase, fill, pick colours from swatches of the model's world, undo/redo, clear,
//! and choose the layer: the picture, the mask, or a word region (paint with words: a phrase
//! painted onto part of the picture, each region its own colour, named, weighted, hidden or
//! removed in the region list).

use std::sync::Arc;

use egui::{Color32, Pos2, Rect, Sense, Stroke as Line, Ui};

use crate::background::{Pending, Worker};
use crate::models::regions::MAX_WEIGHT;
use crate::sketch::{Canvas, Layer, Raster, Stroke, Tool, WordRegion, MAX_PHRASE_CHARS, SWATCHES};

/// What happened on the canvas this frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CanvasChange {
    /// A stroke was finished, undone, redone or cleared, or a setting changed.
    pub edited: bool,
    /// The strength slider is being dragged.
    pub dragging: bool,
    /// The user asked to load a picture as the base.
    pub load_base: bool,
}

/// Runtime state of a canvas widget: the stroke being drawn and the raster of the finished ones,
/// made on the background worker (a canvas from a file may hold any number of strokes).
pub struct CanvasView {
    current: Option<Stroke>,
    worker: Worker,
    drawn: Option<Drawn>,
    drawing: Option<(RasterKey, Pending<Raster>)>,
}

/// What a raster was made from.
#[derive(Clone, PartialEq)]
struct RasterKey {
    strokes: Vec<Stroke>,
    background: [u8; 3],
    base: Option<Arc<Vec<u8>>>,
}

impl RasterKey {
    fn of(canvas: &Canvas, base: Option<&Arc<Vec<u8>>>) -> Self {
        Self { strokes: canvas.strokes.clone(), background: canvas.background, base: base.cloned() }
    }

    fn matches(&self, canvas: &Canvas, base: Option<&Arc<Vec<u8>>>) -> bool {
        // The base is compared by identity: the app hands the same decoded picture every frame.
        let same_base = match (&self.base, base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        same_base && self.background == canvas.background && self.strokes == canvas.strokes
    }
}

/// A finished raster on the GPU: the picture, the mask overlay and each word region's overlay
/// with the centre of what it covers, or why rasterising failed.
struct Drawn {
    key: RasterKey,
    textures: Result<Textures, String>,
}

struct Textures {
    picture: egui::TextureHandle,
    mask: egui::TextureHandle,
    regions: Vec<(egui::TextureHandle, Option<Pos2>)>,
}

/// Overlay colours of word regions, by index (repeating).
const REGION_COLOURS: [[u8; 3]; 6] =
    [[255, 220, 40], [40, 200, 255], [255, 90, 200], [120, 255, 90], [255, 140, 40], [170, 120, 255]];

fn region_colour(index: usize) -> [u8; 3] {
    REGION_COLOURS[index % REGION_COLOURS.len()]
}

/// Pixels of the canvas texture (the picture is shown at this resolution).
const TEXTURE_SIZE: usize = 256;

fn rgb(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

impl CanvasView {
    /// A view whose rasterising runs on `worker`.
    pub fn new(worker: Worker) -> Self {
        Self { current: None, worker, drawn: None, drawing: None }
    }

    /// The stroke being painted (pointer still down), for Live mode's renders.
    pub fn stroke_in_progress(&self) -> Option<&Stroke> {
        self.current.as_ref().filter(|s| !s.points.is_empty())
    }

    /// Whether the picture shown is the current strokes' (nothing is being rasterised).
    pub fn is_drawn(&self) -> bool {
        self.drawing.is_none() && self.drawn.is_some()
    }

    /// Shows the tools and the canvas of `canvas` over `base` (RGB at the texture size),
    /// `size` points wide.
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        canvas: &mut Canvas,
        base: Option<&Arc<Vec<u8>>>,
        size: f32,
    ) -> CanvasChange {
        let mut change = CanvasChange::default();
        self.tools_ui(ui, canvas, &mut change);
        let (response, painter) = ui.allocate_painter(egui::vec2(size, size), Sense::drag());
        let rect = response.rect;
        self.draw(ui.ctx(), canvas, base);
        let whole = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        match self.drawn.as_ref().map(|d| &d.textures) {
            Some(Ok(t)) => {
                painter.image(t.picture.id(), rect, whole, Color32::WHITE);
                if canvas.brush.layer == Layer::Mask {
                    painter.image(t.mask.id(), rect, whole, Color32::WHITE);
                }
                // Word regions show while their layer is chosen, each labelled with its phrase.
                if let Layer::Region(_) = canvas.brush.layer {
                    for (i, (texture, centre)) in t.regions.iter().enumerate() {
                        let Some(region) = canvas.regions.get(i).filter(|r| !r.hidden) else { continue };
                        painter.image(texture.id(), rect, whole, Color32::WHITE);
                        if let Some(c) = centre {
                            let at = rect.min + c.to_vec2() * size;
                            let text = if region.phrase.is_empty() { "(no phrase)" } else { &region.phrase };
                            let font = egui::FontId::proportional(13.0);
                            painter.text(
                                at + egui::vec2(1.0, 1.0),
                                egui::Align2::CENTER_CENTER,
                                text,
                                font.clone(),
                                Color32::BLACK,
                            );
                            painter.text(at, egui::Align2::CENTER_CENTER, text, font, rgb(region_colour(i)));
                        }
                    }
                }
            }
            Some(Err(e)) => {
                painter.rect_filled(rect, 0.0, rgb(canvas.background));
                painter.text(
                    rect.center(),
                    egui::Align2::CENTER_CENTER,
                    format!("the strokes could not be drawn: {e}"),
                    egui::FontId::proportional(12.0),
                    Color32::RED,
                );
            }
            None => {
                painter.rect_filled(rect, 0.0, rgb(canvas.background));
            }
        }
        if self.drawing.is_some() {
            // The previous strokes' picture stays up meanwhile; say that it is catching up.
            let corner =
                Rect::from_min_size(rect.right_top() + egui::vec2(-22.0, 6.0), egui::vec2(16.0, 16.0));
            egui::Spinner::new().paint_at(ui, corner);
        }
        let pressure = ui.input(|i| {
            i.events.iter().rev().find_map(|e| match e {
                egui::Event::Touch { force: Some(f), .. } => Some(*f),
                _ => None,
            })
        });
        if let Some(pos) = response.interact_pointer_pos() {
            let p = (pos - rect.min) / size;
            let point = [p.x.clamp(0.0, 1.0), p.y.clamp(0.0, 1.0), pressure.unwrap_or(1.0).clamp(0.05, 1.0)];
            let stroke =
                self.current.get_or_insert_with(|| Stroke { points: vec![], ..canvas.brush.clone() });
            if stroke.points.last() != Some(&point) {
                stroke.points.push(point);
            }
        }
        if response.drag_stopped() || (response.clicked() && self.current.is_some()) {
            if let Some(stroke) = self.current.take() {
                canvas.push(stroke);
                change.edited = true;
            }
        }
        if let Some(stroke) = &self.current {
            let color = match (stroke.tool, stroke.layer) {
                (Tool::Eraser, _) => Color32::GRAY,
                (_, Layer::Region(i)) => {
                    let [r, g, b] = region_colour(i);
                    Color32::from_rgba_unmultiplied(r, g, b, 140)
                }
                _ => rgb(stroke.color),
            };
            let width = stroke.radius * size * 2.0;
            let points: Vec<Pos2> =
                stroke.points.iter().map(|p| rect.min + egui::vec2(p[0], p[1]) * size).collect();
            painter.add(egui::Shape::line(points, Line::new(width, color)));
        }
        let response = response.on_hover_text(
            "Paint with the mouse or a pen; release to render (in Live mode it renders as you paint)",
        );
        response.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::Other, true, "SDEdit canvas"));
        change
    }

    fn tools_ui(&mut self, ui: &mut Ui, canvas: &mut Canvas, change: &mut CanvasChange) {
        ui.horizontal_wrapped(|ui| {
            let brush = &mut canvas.brush;
            ui.selectable_value(&mut brush.tool, Tool::Brush, "Brush").on_hover_text("Paint (B)");
            ui.selectable_value(&mut brush.tool, Tool::Eraser, "Eraser")
                .on_hover_text("Erase back to the base (E)");
            ui.selectable_value(&mut brush.tool, Tool::Fill, "Fill").on_hover_text("Flood-fill a region (F)");
            ui.separator();
            let mask = ui
                .selectable_label(brush.layer == Layer::Mask, "Mask layer")
                .on_hover_text("Paint where the edit may change the picture; unpainted areas are kept");
            if mask.clicked() {
                brush.layer = if brush.layer == Layer::Mask { Layer::Paint } else { Layer::Mask };
            }
            let words = ui
                .selectable_label(matches!(brush.layer, Layer::Region(_)), "Words")
                .on_hover_text("Paint with words: paint where a phrase should appear (wire the canvas's regions output into the sampler)");
            if words.clicked() {
                brush.layer = match brush.layer {
                    Layer::Region(_) => Layer::Paint,
                    _ => {
                        if canvas.regions.is_empty() {
                            canvas.regions.push(WordRegion::default());
                        }
                        Layer::Region(0)
                    }
                };
            }
        });
        if let Layer::Region(_) = canvas.brush.layer {
            regions_ui(ui, canvas, change);
        }
        ui.horizontal_wrapped(|ui| {
            ui.label("Size");
            ui.add(egui::Slider::new(&mut canvas.brush.radius, 0.005..=0.25).show_value(false))
                .on_hover_text("Brush radius");
            ui.color_edit_button_srgb(&mut canvas.brush.color).on_hover_text("Brush colour");
            for swatch in SWATCHES {
                let response = colour_button(ui, swatch, canvas.brush.color == swatch)
                    .on_hover_text("A colour of the built-in model's world");
                response.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::Button, true, "swatch"));
                if response.clicked() {
                    canvas.brush.color = swatch;
                }
            }
        });
        ui.horizontal_wrapped(|ui| {
            if ui
                .add_enabled(!canvas.strokes.is_empty(), egui::Button::new("Undo"))
                .on_hover_text("Ctrl+Z")
                .clicked()
            {
                change.edited |= canvas.undo();
            }
            if ui
                .add_enabled(!canvas.redo.is_empty(), egui::Button::new("Redo"))
                .on_hover_text("Ctrl+Shift+Z")
                .clicked()
            {
                change.edited |= canvas.redo();
            }
            if ui.button("Clear").on_hover_text("Remove every stroke (undo brings them back)").clicked() {
                canvas.clear();
                change.edited = true;
            }
            if ui.button("Load base…").on_hover_text("Paint over a picture").clicked() {
                change.load_base = true;
            }
            ui.label("Background");
            change.edited |= ui
                .color_edit_button_srgb(&mut canvas.background)
                .on_hover_text("Canvas background")
                .changed();
        });
        ui.horizontal(|ui| {
            let slider = ui
                .add(egui::Slider::new(&mut canvas.strength, 0.05..=1.0).text("Strength"))
                .on_hover_text("SDEdit t0: low keeps the strokes, high trades them for realism");
            change.dragging |= slider.dragged();
            change.edited |= slider.changed();
            if canvas.has_mask() {
                let blur = ui
                    .add(egui::Slider::new(&mut canvas.mask_blur, 0.0..=16.0).text("Mask blur"))
                    .on_hover_text(
                        "Soften the mask's edge by this many pixels (an inpainting model sees it at 0.5)",
                    );
                change.dragging |= blur.dragged();
                change.edited |= blur.changed();
            }
        });
    }

    /// Collects a finished raster, and asks for a new one when the strokes changed since the
    /// shown one was made (a stale request is dropped, so its work is skipped).
    fn draw(&mut self, ctx: &egui::Context, canvas: &Canvas, base: Option<&Arc<Vec<u8>>>) {
        if let Some((key, pending)) = &self.drawing {
            if let Some(result) = pending.poll() {
                let textures = result.map(|raster| textures(ctx, &raster)).map_err(|e| e.to_string());
                self.drawn = Some(Drawn { key: key.clone(), textures });
                self.drawing = None;
            }
        }
        let shown = self.drawn.as_ref().is_some_and(|d| d.key.matches(canvas, base));
        let asked = self.drawing.as_ref().is_some_and(|(key, _)| key.matches(canvas, base));
        if shown {
            self.drawing = None;
            return;
        }
        if asked {
            return;
        }
        let key = RasterKey::of(canvas, base);
        let (canvas, base) = (canvas.clone(), base.cloned());
        let repaint = ctx.clone();
        let pending = self.worker.submit(
            move || repaint.request_repaint(),
            move || canvas.rasterize(TEXTURE_SIZE, TEXTURE_SIZE, base.as_deref().map(Vec::as_slice)),
        );
        self.drawing = Some((key, pending));
    }
}

/// A small square of `colour`, outlined when `chosen`, that can be clicked.
fn colour_button(ui: &mut Ui, colour: [u8; 3], chosen: bool) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(egui::vec2(16.0, 16.0), Sense::click());
    ui.painter().rect_filled(rect, 2.0, rgb(colour));
    if chosen {
        ui.painter().rect_stroke(rect, 2.0, Line::new(2.0, Color32::WHITE), egui::StrokeKind::Outside);
    }
    response
}

/// The word regions' list: choose the one the brush paints, edit its phrase and weight, hide or
/// remove it, add one.
fn regions_ui(ui: &mut Ui, canvas: &mut Canvas, change: &mut CanvasChange) {
    let mut remove = None;
    for i in 0..canvas.regions.len() {
        ui.horizontal(|ui| {
            let chosen = canvas.brush.layer == Layer::Region(i);
            let response = colour_button(ui, region_colour(i), chosen).on_hover_text("Paint this region");
            response.widget_info(|| {
                egui::WidgetInfo::labeled(egui::WidgetType::Button, true, format!("word region {}", i + 1))
            });
            if response.clicked() {
                canvas.brush.layer = Layer::Region(i);
            }
            let region = &mut canvas.regions[i];
            let phrase = ui
                .add(
                    egui::TextEdit::singleline(&mut region.phrase)
                        .char_limit(MAX_PHRASE_CHARS)
                        .hint_text("a phrase, e.g. a bright sun")
                        .desired_width(150.0),
                )
                .on_hover_text("What appears where this region is painted: part of the prompt, or new words");
            if phrase.gained_focus() {
                canvas.brush.layer = Layer::Region(i);
            }
            change.edited |= phrase.changed();
            let weight = ui
                .add(
                    egui::DragValue::new(&mut region.weight).range(0.0..=MAX_WEIGHT).speed(0.05).prefix("w "),
                )
                .on_hover_text("How strongly the phrase is drawn to the region");
            change.dragging |= weight.dragged();
            change.edited |= weight.changed();
            let hidden = region.hidden;
            if ui.selectable_label(!hidden, "Show").on_hover_text("Render with this region").clicked() {
                region.hidden = !hidden;
                change.edited = true;
            }
            if ui.small_button("Remove").on_hover_text("Remove this region and its strokes").clicked() {
                remove = Some(i);
            }
        });
    }
    if let Some(i) = remove {
        canvas.remove_region(i);
        change.edited = true;
        if canvas.regions.is_empty() {
            canvas.brush.layer = Layer::Paint;
        }
    }
    if ui.button("+ Region").on_hover_text("A new word region to paint").clicked() {
        canvas.regions.push(WordRegion::default());
        canvas.brush.layer = Layer::Region(canvas.regions.len() - 1);
    }
}

/// The picture's texture, the mask layer's translucent overlay and the word regions'.
fn textures(ctx: &egui::Context, raster: &Raster) -> Textures {
    let size = [raster.width, raster.height];
    let picture = ctx.load_texture(
        "sdedit-canvas",
        egui::ColorImage::from_rgb(size, &raster.rgb),
        egui::TextureOptions::LINEAR,
    );
    let overlay: Vec<u8> =
        raster.mask.iter().flat_map(|&m| if m > 0 { [255, 40, 40, 90] } else { [0; 4] }).collect();
    let mask = ctx.load_texture(
        "sdedit-canvas-mask",
        egui::ColorImage::from_rgba_unmultiplied(size, &overlay),
        egui::TextureOptions::NEAREST,
    );
    let regions = raster
        .regions
        .iter()
        .enumerate()
        .map(|(i, cells)| {
            let [r, g, b] = region_colour(i);
            let overlay: Vec<u8> =
                cells.iter().flat_map(|&m| if m > 0 { [r, g, b, 80] } else { [0; 4] }).collect();
            let texture = ctx.load_texture(
                format!("sdedit-canvas-region-{i}"),
                egui::ColorImage::from_rgba_unmultiplied(size, &overlay),
                egui::TextureOptions::NEAREST,
            );
            (texture, centre(cells, raster.width, raster.height))
        })
        .collect();
    Textures { picture, mask, regions }
}

/// The centre of the painted cells of a `width × height` map, in [0, 1]²; `None` when none is.
fn centre(cells: &[u8], width: usize, height: usize) -> Option<Pos2> {
    let (mut sx, mut sy, mut n) = (0f64, 0f64, 0f64);
    for (i, _) in cells.iter().enumerate().filter(|(_, &c)| c > 0) {
        sx += (i % width) as f64 + 0.5;
        sy += (i / width) as f64 + 0.5;
        n += 1.0;
    }
    (n > 0.0).then(|| Pos2::new((sx / n / width as f64) as f32, (sy / n / height as f64) as f32))
}
