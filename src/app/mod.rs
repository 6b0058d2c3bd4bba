//! The studio window: the eframe app tying the graph, the engine and the panels together.
//! Saved state (the graph, settings) is separate from runtime resources (engine, textures,
//! caches); see `jobs.rs` for the engine side and `files.rs` for saving and opening.

pub mod bench;
mod files;
mod jobs;
pub mod settings;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::Ui;
use egui_snarl::Snarl;

use crate::background::{Pending, Worker};
use crate::cache::{LruCache, Weighed};
use crate::engine::studio::StudioJob;
use crate::engine::{Engine, JobId};
use crate::graph::eval::Plan;
use crate::graph::history::History;
use crate::graph::node::ModelSource;
use crate::graph::{Graph, Node, NodeId};
use crate::models::preview::LatentRgbMap;
use crate::ui::canvas_view::CanvasView;
use crate::ui::graph_view::{self, Shown};
pub use settings::{PreviewMode, Settings};

/// How the studio starts (the command line's options).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Use this model in the Model node instead of the built-in one.
    pub model: Option<PathBuf>,
    /// Open this graph instead of the autosaved one.
    pub graph: Option<PathBuf>,
    /// Settings, autosave and log live here.
    pub data_dir: PathBuf,
}

/// A finished picture with its texture.
#[derive(Clone)]
pub struct Picture {
    /// RGB, row-major.
    pub rgb: Arc<Vec<u8>>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// On the GPU.
    pub texture: egui::TextureHandle,
    /// A1111 `parameters` text ("" for pictures that are not renders).
    pub parameters: String,
    /// The spec key it was rendered from.
    pub key: String,
}

impl Weighed for Picture {
    fn bytes(&self) -> usize {
        // The texture holds an RGBA copy.
        self.rgb.len() * 7 / 3
    }
}

/// A picture being decoded or rasterised for an Output on the background worker.
pub type Drawing = Pending<Result<crate::imageio::Rgb, String>>;

/// A canvas's base picture: being decoded, or decoded (`None` when the file could not be read;
/// the render reports why).
enum BaseImage {
    Loading(Pending<Result<crate::imageio::Rgb, crate::engine::spec::SpecError>>),
    Ready(Option<Arc<Vec<u8>>>),
}

/// A finished render in the history strip, with the graph that made it.
#[derive(Clone)]
pub struct HistoryEntry {
    /// The picture.
    pub picture: Picture,
    /// The graph at the time it was asked for.
    pub graph: Graph,
}

/// What an Output node shows now.
#[derive(Default)]
pub struct OutputState {
    /// The newest finished picture (or the nearest strip frame while the exact one renders).
    pub picture: Option<Picture>,
    /// The step preview of the running render (CPU path).
    pub preview: Option<egui::TextureHandle>,
    /// The step preview's latent, channel-major, with (channels, height, width) (GPU path).
    pub preview_latent: Option<(Vec<f32>, (usize, usize, usize))>,
    /// (step, total, when the job started) of the running render.
    pub progress: Option<(usize, usize, Instant)>,
    /// Why it cannot render, or why the last render failed.
    pub error: Option<String>,
    /// The spec key it should show.
    pub wanted: Option<String>,
    /// The picture it shows without a render (a file, a canvas), and its decoding or
    /// rasterising on the background worker while that runs.
    pub drawn: Option<(crate::engine::spec::ImageSpec, Option<Drawing>)>,
    /// The job rendering `wanted`, and whether it has started.
    pub job: Option<(JobId, bool)>,
    /// The job whose picture is shown: Live frames older than it are not shown.
    pub shown_job: Option<JobId>,
}

/// The filmstrip of an interpolation feeding an Output node.
pub struct StripState {
    /// The Interpolate node.
    pub node: NodeId,
    /// Spec keys of the frames, in order.
    pub keys: Vec<String>,
    /// The frames' specs.
    pub specs: Vec<crate::engine::spec::RenderSpec>,
    /// The frame job in flight.
    pub job: Option<(JobId, usize)>,
}

/// A transient message (a refused wire, a saved file, an error).
struct Message {
    text: String,
    at: Instant,
    error: bool,
}

/// The studio.
pub struct StudioApp {
    /// The graph (the truth; `snarl` is its on-screen copy).
    pub graph: Graph,
    history: History,
    snarl: Snarl<Shown>,
    /// Frame the graph's nodes in the graph panel on the next frame (at start, New, Open).
    fit_graph: bool,
    /// The node shown in the properties panel.
    pub selected: Option<NodeId>,
    /// Settings.
    pub settings: Settings,
    data_dir: PathBuf,
    engine: Option<Engine<StudioJob>>,
    /// Per Output node.
    pub outputs: HashMap<NodeId, OutputState>,
    /// Per Output node fed by an interpolation.
    pub strips: HashMap<NodeId, StripState>,
    jobs: HashMap<JobId, jobs::JobMeta>,
    /// Finished pictures by spec key (frames and renders).
    pub pictures: LruCache<String, Picture>,
    preview_map: Option<LatentRgbMap>,
    model_requested: Option<ModelSource>,
    unknown_words: HashMap<String, Vec<String>>,
    /// Per LoRA file, what the last render that merged it found (layers not in the model).
    lora_notes: HashMap<std::path::PathBuf, Vec<String>>,
    /// What the last render said about its word regions (ignored, cut), for the canvas panel.
    region_notes: Vec<String>,
    /// Renders made since the studio opened, newest last.
    pub made: Vec<HistoryEntry>,
    canvas_views: HashMap<NodeId, CanvasView>,
    base_images: HashMap<PathBuf, BaseImage>,
    /// Decoding and rasterising, off the UI thread.
    worker: Worker,
    /// Files being read (graphs to open, dropped files, pictures for new Image nodes).
    reading: Vec<(PathBuf, Pending<Result<files::Reading, String>>)>,
    dirty: bool,
    last_autosave: Instant,
    message: Option<Message>,
    show_help: bool,
    show_settings: bool,
    dropped_graph: Option<PathBuf>,
    /// Undo acts on strokes (true) or graph edits (false).
    pub canvas_focus: bool,
    /// Jobs dropped or cancelled since the studio opened.
    pub cancelled_jobs: usize,
    playing: Option<Instant>,
    was_dragging: bool,
    gesture_recorded: bool,
    last_plans: Vec<(NodeId, Result<Plan, crate::graph::eval::EvalError>)>,
    ctx: egui::Context,
    /// Step previews are drawn by the WGSL shader (a wgpu adapter exists).
    pub gpu_preview: bool,
    /// The last refused wire's reason, shown as a tooltip for a few seconds.
    refused: Option<(String, Instant)>,
    /// The graph changed since it was last planned (planning is skipped on quiet frames).
    replan: bool,
    /// Live mode: the spec key last submitted per Output while a stroke is painted.
    live_submitted: HashMap<NodeId, String>,
    /// When Live frames arrived over the last second (the fps readout).
    live_frames: std::collections::VecDeque<Instant>,
    /// How long the last picture took: what Live can expect of the model before frames arrive.
    last_render_secs: Option<f64>,
}

impl StudioApp {
    /// Opens the studio: the graph from `--graph`, else the autosave, else the first-start graph.
    pub fn new(options: Options) -> Self {
        let _ = std::fs::create_dir_all(&options.data_dir);
        let (settings, settings_problem) = Settings::load(&options.data_dir);
        let mut problems: Vec<String> = settings_problem.into_iter().collect();
        let autosave = settings::autosave_path(&options.data_dir);
        let mut graph = match (&options.graph, autosave.is_file()) {
            (Some(path), _) => Graph::load(path).unwrap_or_else(|e| {
                problems.push(e.to_string());
                Graph::first_start()
            }),
            (None, true) => Graph::load(&autosave).unwrap_or_else(|e| {
                problems.push(format!("the autosave could not be restored: {e}"));
                Graph::first_start()
            }),
            (None, false) => Graph::first_start(),
        };
        if let Some(model) = &options.model {
            for n in graph.nodes.iter_mut() {
                if let Node::Model(m) = &mut n.node {
                    m.source = ModelSource::Path(model.clone());
                }
            }
        }
        graph.wires.sort_by_key(|w| (w.to, w.from));
        let selected = graph.nodes.iter().find(|n| matches!(n.node, Node::Canvas(_))).map(|n| n.id);
        let cache_bytes = settings.cache_mib << 20;
        let mut app = Self {
            snarl: graph_view::to_snarl(&graph),
            fit_graph: true,
            graph,
            history: History::default(),
            selected,
            settings,
            data_dir: options.data_dir,
            engine: None,
            outputs: HashMap::new(),
            strips: HashMap::new(),
            jobs: HashMap::new(),
            pictures: LruCache::new(cache_bytes / 2),
            preview_map: None,
            model_requested: None,
            unknown_words: HashMap::new(),
            lora_notes: HashMap::new(),
            region_notes: Vec::new(),
            made: Vec::new(),
            canvas_views: HashMap::new(),
            base_images: HashMap::new(),
            worker: Worker::new(),
            reading: Vec::new(),
            dirty: false,
            last_autosave: Instant::now(),
            message: None,
            show_help: false,
            show_settings: false,
            dropped_graph: None,
            canvas_focus: selected.is_some(),
            cancelled_jobs: 0,
            playing: None,
            was_dragging: false,
            gesture_recorded: false,
            last_plans: Vec::new(),
            ctx: egui::Context::default(),
            gpu_preview: false,
            refused: None,
            replan: true,
            live_submitted: HashMap::new(),
            live_frames: std::collections::VecDeque::new(),
            last_render_secs: None,
        };
        for p in problems {
            app.error(p);
        }
        app
    }

    /// Shows a transient message and logs it.
    fn notify(&mut self, text: impl Into<String>) {
        let text = text.into();
        settings::log(&self.data_dir, &text);
        self.message = Some(Message { text, at: Instant::now(), error: false });
    }

    /// Shows an error and logs it.
    fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        settings::log(&self.data_dir, &format!("error: {text}"));
        self.message = Some(Message { text, at: Instant::now(), error: true });
    }

    /// Replaces the graph (undo, redo, open, restore): records the old one for undo unless
    /// `record` is false.
    pub fn set_graph(&mut self, mut graph: Graph, record: bool) {
        graph.wires.sort_by_key(|w| (w.to, w.from));
        if record {
            self.history.record(self.graph.clone());
        }
        self.snarl = graph_view::to_snarl(&graph);
        self.graph = graph;
        self.dirty = true;
        self.replan = true;
        if self.selected.is_some_and(|id| self.graph.node(id).is_none()) {
            self.selected = None;
        }
    }

    /// Undoes the newest stroke (canvas focus) or graph edit.
    pub fn undo(&mut self) {
        if self.canvas_focus && self.edit_selected_canvas(|c| c.undo()) {
            return;
        }
        if let Some(previous) = self.history.undo(&self.graph) {
            self.set_graph(previous, false);
        }
    }

    /// Redoes what undo took back.
    pub fn redo(&mut self) {
        if self.canvas_focus && self.edit_selected_canvas(|c| c.redo()) {
            return;
        }
        if let Some(next) = self.history.redo(&self.graph) {
            self.set_graph(next, false);
        }
    }

    /// Applies `edit` to the selected canvas node; returns what it returned.
    fn edit_selected_canvas(&mut self, edit: impl FnOnce(&mut crate::sketch::Canvas) -> bool) -> bool {
        let Some(id) = self.selected else { return false };
        let Some(sid) = graph_view::snarl_id(&self.snarl, id) else { return false };
        match self.snarl.get_node_mut(sid) {
            Some((_, Node::Canvas(canvas))) => edit(canvas),
            _ => false,
        }
    }

    /// Edits a node on screen (as the properties panel does).
    pub fn edit_node(&mut self, id: NodeId, edit: impl FnOnce(&mut Node)) {
        if let Some(sid) = graph_view::snarl_id(&self.snarl, id) {
            if let Some((_, node)) = self.snarl.get_node_mut(sid) {
                edit(node);
            }
        }
    }

    /// Edits the first node matching `pred`.
    pub fn edit_node_where(&mut self, pred: impl Fn(&Node) -> bool, edit: impl FnOnce(&mut Node)) {
        if let Some(id) = self.find(pred) {
            self.edit_node(id, edit);
        }
    }

    /// Deletes a node (as its context menu does).
    pub fn delete_node(&mut self, id: NodeId) {
        if let Some(sid) = graph_view::snarl_id(&self.snarl, id) {
            self.snarl.remove_node(sid);
        }
    }

    /// The first node matching `pred`.
    pub fn find(&self, pred: impl Fn(&Node) -> bool) -> Option<NodeId> {
        self.graph.nodes.iter().find(|n| pred(&n.node)).map(|n| n.id)
    }

    /// Whether any render or strip frame is queued or running, a file is being read, or a
    /// picture is being decoded or rasterised for an Output.
    pub fn busy(&self) -> bool {
        !self.jobs.is_empty()
            || !self.reading.is_empty()
            || self.outputs.values().any(|o| o.drawn.as_ref().is_some_and(|(_, pending)| pending.is_some()))
    }

    /// One frame of the studio.
    pub fn ui(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        self.ctx = ctx.clone();
        self.ensure_engine(&ctx);
        self.poll_events(&ctx);
        self.poll_drawn();
        self.poll_read_files();
        self.handle_dropped_files(&ctx);
        self.shortcuts(&ctx);
        let mut dragging = false;
        egui::Panel::top("menu").show(ui, |ui| self.menu_ui(ui));
        egui::Panel::bottom("history").resizable(false).show(ui, |ui| self.bottom_ui(ui));
        egui::Panel::right("properties").default_size(380.0).min_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| dragging |= self.properties_panel_ui(ui));
        });
        egui::CentralPanel::default().show(ui, |ui| {
            let width = ui.available_width();
            egui::Panel::right("output").default_size(width * 0.45).show(ui, |ui| {
                dragging |= self.output_ui(ui);
            });
            egui::CentralPanel::default().show(ui, |ui| self.graph_ui(ui));
        });
        self.windows(&ctx);
        let dragging = dragging || ctx.dragged_id().is_some();
        self.sync_graph(&ctx, dragging);
        self.autosave(&ctx);
        self.advance_playback(&ctx);
    }

    /// Reads the on-screen graph back; records undo once per gesture and re-plans on change.
    fn sync_graph(&mut self, ctx: &egui::Context, dragging: bool) {
        let now = graph_view::from_snarl(&self.snarl);
        let pointer_down = ctx.input(|i| i.pointer.any_down());
        if now != self.graph {
            if !(pointer_down && self.gesture_recorded) {
                self.history.record(self.graph.clone());
            }
            self.gesture_recorded = pointer_down;
            self.graph = now;
            self.dirty = true;
            self.replan = true;
        }
        if !pointer_down {
            self.gesture_recorded = false;
        }
        if std::mem::take(&mut self.replan) {
            self.plan_and_submit(dragging);
        }
        self.plan_live();
        if self.was_dragging && !dragging {
            self.drag_released();
        }
        self.was_dragging = dragging;
        self.pump_strips();
    }

    fn autosave(&mut self, ctx: &egui::Context) {
        if !self.dirty {
            return;
        }
        if self.last_autosave.elapsed() >= Duration::from_millis(500) {
            self.save_autosave();
        } else {
            ctx.request_repaint_after(Duration::from_millis(500));
        }
    }

    /// Writes the autosave now.
    pub fn save_autosave(&mut self) {
        let path = settings::autosave_path(&self.data_dir);
        if let Err(e) = self.graph.save(&path) {
            self.error(format!("autosave failed: {e}"));
        }
        self.dirty = false;
        self.last_autosave = Instant::now();
    }

    fn graph_ui(&mut self, ui: &mut Ui) {
        let thumbnails: HashMap<NodeId, egui::TextureHandle> = self
            .outputs
            .iter()
            .filter_map(|(id, o)| o.picture.as_ref().map(|p| (*id, p.texture.clone())))
            .collect();
        let notes = self.notes();
        let mut viewer = graph_view::Viewer {
            notes: &notes,
            thumbnails: &thumbnails,
            selected: self.selected,
            fit_into: self.fit_graph.then(|| ui.available_rect_before_wrap()),
            out: Default::default(),
        };
        let response = graph_view::graph_ui(ui, &mut self.snarl, &mut viewer);
        let out = viewer.out;
        if out.fitted {
            self.fit_graph = false;
        }
        if let Some(reason) = &out.refused {
            self.refused = Some((reason.clone(), Instant::now()));
        }
        if let Some((reason, at)) = &self.refused {
            if at.elapsed() < Duration::from_secs(4) {
                response.show_tooltip_text(reason.as_str());
                ui.ctx().request_repaint_after(Duration::from_millis(250));
            }
        }
        if let Some(id) = out.clicked {
            self.selected = Some(id);
        }
        if ui.ui_contains_pointer() && ui.input(|i| i.pointer.any_pressed()) {
            self.canvas_focus = false;
        }
        if let Some(reason) = out.refused {
            self.error(reason);
        }
    }

    /// Per node: unknown prompt words and errors, for the node bodies.
    fn notes(&self) -> HashMap<NodeId, String> {
        let mut notes = HashMap::new();
        for n in &self.graph.nodes {
            if let Node::Prompt(p) = &n.node {
                if let Some(words) = self.unknown_words.get(&p.prompt).filter(|w| !w.is_empty()) {
                    notes.insert(n.id, format!("unknown: {}", words.join(", ")));
                }
            }
            if let Some(lines) = self.lora_node_notes(&n.node).filter(|l| !l.is_empty()) {
                notes.insert(n.id, format!("{} notes: see its panel", lines.len()));
            }
        }
        for (id, plan) in &self.last_plans {
            if let Err(e) = plan {
                notes.insert(e.node, e.message.clone());
            }
            if let Some(error) = self.outputs.get(id).and_then(|o| o.error.as_ref()) {
                notes.entry(*id).or_insert_with(|| error.clone());
            }
        }
        notes
    }

    /// Sets the Sampler node `sampler` and the Schedule node wired into it (one is added when
    /// none is) to a few-step model's preset, as one undoable edit.
    pub fn apply_preset(&mut self, sampler: NodeId, preset: crate::core::presets::Preset) {
        use crate::graph::node::{ScheduleNode, Spacing};
        use crate::graph::PinRef;
        let p = preset.settings();
        let mut graph = self.graph.clone();
        let schedule_pin = PinRef { node: sampler, pin: 1 };
        let schedule = match graph.source(schedule_pin) {
            Some(source) if matches!(graph.node(source.node), Some(Node::Schedule(_))) => source.node,
            _ => {
                let pos = graph
                    .nodes
                    .iter()
                    .find(|n| n.id == sampler)
                    .map_or([0.0; 2], |n| [n.pos[0] - 220.0, n.pos[1] + 140.0]);
                let id = graph.add(Node::Schedule(ScheduleNode::default()), pos);
                if let Err(e) = graph.connect(PinRef { node: id, pin: 0 }, schedule_pin) {
                    self.error(e.to_string());
                    return;
                }
                id
            }
        };
        for n in &mut graph.nodes {
            match &mut n.node {
                Node::Sampler(s) if n.id == sampler => {
                    s.algorithm = p.sampler;
                    s.guidance = p.guidance;
                }
                Node::Schedule(s) if n.id == schedule => {
                    s.steps = p.steps;
                    s.spacing = match p.spacing {
                        None => Spacing::Model,
                        Some(crate::core::TimestepSpacing::Leading) => Spacing::Leading,
                        Some(crate::core::TimestepSpacing::Trailing) => Spacing::Trailing,
                        Some(crate::core::TimestepSpacing::Linspace) => Spacing::Linspace,
                    };
                    s.eta = 0.0;
                }
                _ => {}
            }
        }
        self.set_graph(graph, true);
        self.notify(format!("{} preset: {}", preset.name(), preset.describe()));
    }

    /// What the last render found about a LoRA node's file.
    fn lora_node_notes(&self, node: &Node) -> Option<&Vec<String>> {
        let Node::Lora(l) = node else { return None };
        self.lora_notes.get(l.path.as_ref()?)
    }

    /// The properties panel; returns whether a control is being dragged.
    fn properties_panel_ui(&mut self, ui: &mut Ui) -> bool {
        let Some(id) = self.selected else {
            ui.label("Select a node (click its title) to edit it here.");
            return false;
        };
        let Some(sid) = graph_view::snarl_id(&self.snarl, id) else { return false };
        let base = self.canvas_base(id);
        let notes = match self.snarl.get_node(sid) {
            Some((_, Node::Prompt(p))) => self.unknown_words.get(&p.prompt).cloned().unwrap_or_default(),
            Some((_, node)) => self.lora_node_notes(node).cloned().unwrap_or_default(),
            None => vec![],
        };
        let Some((_, node)) = self.snarl.get_node_mut(sid) else { return false };
        ui.heading(node.title());
        ui.separator();
        let mut dragging = false;
        let mut choose_model = None;
        let mut choose_image = false;
        let mut choose_lora = false;
        let mut choose_vae = None;
        let mut preset = None;
        let mut load_base = false;
        if let Node::Canvas(canvas) = node {
            let worker = &self.worker;
            let view = self.canvas_views.entry(id).or_insert_with(|| CanvasView::new(worker.clone()));
            let size = ui.available_width().min(360.0);
            let change = view.ui(ui, canvas, base.as_ref(), size);
            if !canvas.regions.is_empty() {
                for note in &self.region_notes {
                    ui.label(egui::RichText::new(note).small().color(ui.visuals().warn_fg_color));
                }
            }
            dragging |= change.dragging;
            load_base = change.load_base;
            if ui.ui_contains_pointer() && ui.input(|i| i.pointer.any_pressed()) {
                self.canvas_focus = true;
            }
        } else {
            let out = crate::ui::properties::properties_ui(ui, node, &notes);
            dragging |= out.dragging;
            choose_model = out.choose_model;
            choose_image = out.choose_image;
            choose_lora = out.choose_lora;
            choose_vae = out.choose_vae;
            preset = out.preset;
        }
        if choose_lora {
            self.choose_lora(id);
        }
        if let Some(folder) = choose_vae {
            self.choose_vae(id, folder);
        }
        if let Some(preset) = preset {
            self.apply_preset(id, preset);
        }
        if let Some(folder) = choose_model {
            self.choose_model(id, folder);
        }
        if choose_image {
            self.choose_image(id);
        }
        if load_base {
            self.load_canvas_base(id);
        }
        dragging
    }

    /// The picture under a canvas: the file of an Image node wired into its base input, decoded
    /// on the background worker (`None` until it is).
    fn canvas_base(&mut self, canvas: NodeId) -> Option<Arc<Vec<u8>>> {
        let source = self.graph.source(crate::graph::PinRef { node: canvas, pin: 0 })?;
        let Some(Node::Image(image)) = self.graph.node(source.node) else { return None };
        let path = image.path.clone()?;
        let (worker, ctx) = (&self.worker, self.ctx.clone());
        let entry =
            self.base_images.entry(path.clone()).or_insert_with(|| {
                let spec = crate::engine::spec::ImageSpec::File(path);
                BaseImage::Loading(worker.submit(
                    move || ctx.request_repaint(),
                    move || crate::engine::spec::raster(&spec, 256, 256),
                ))
            });
        if let BaseImage::Loading(pending) = entry {
            let decoded = pending.poll_result()?;
            *entry = BaseImage::Ready(decoded.ok().map(|rgb| Arc::new(rgb.data)));
        }
        match entry {
            BaseImage::Ready(base) => base.clone(),
            BaseImage::Loading(_) => None,
        }
    }

    fn menu_ui(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("New graph").clicked() {
                    self.set_graph(Graph::first_start(), true);
                    self.fit_graph = true;
                    ui.close();
                }
                if ui.button("Open graph…  Ctrl+O").clicked() {
                    self.open_dialog();
                    ui.close();
                }
                if ui.button("Save graph…  Ctrl+S").clicked() {
                    self.save_dialog();
                    ui.close();
                }
                if ui.button("Save image…  Ctrl+E").clicked() {
                    self.save_image_dialog();
                    ui.close();
                }
            });
            ui.menu_button("Edit", |ui| {
                if ui.button("Undo  Ctrl+Z").clicked() {
                    self.undo();
                    ui.close();
                }
                if ui.button("Redo  Ctrl+Shift+Z").clicked() {
                    self.redo();
                    ui.close();
                }
            });
            let live =
                ui.selectable_label(self.settings.live, self.live_label()).on_hover_text(self.live_hint());
            if live.clicked() {
                self.toggle_live();
            }
            if ui.button("Settings").on_hover_text("Threads, previews, cache, output folder").clicked() {
                self.show_settings = !self.show_settings;
            }
            if ui.button("Help").on_hover_text("Keyboard shortcuts (F1)").clicked() {
                self.show_help = !self.show_help;
            }
            ui.separator();
            self.status_ui(ui);
        });
    }

    /// Progress, ETA and cancel for the running render, and the latest message.
    fn status_ui(&mut self, ui: &mut Ui) {
        let running = self.outputs.values().find_map(|o| o.progress);
        if let Some((step, total, started)) = running {
            let fraction = if total > 0 { step as f32 / total as f32 } else { 0.0 };
            let elapsed = started.elapsed().as_secs_f32();
            let eta = if step > 0 { elapsed / step as f32 * (total - step) as f32 } else { 0.0 };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(160.0)
                    .text(format!("step {step}/{total} · ETA {eta:.1}s")),
            );
            if ui.button("Cancel").on_hover_text("Stop the render (Esc)").clicked() {
                self.cancel_all();
            }
        }
        if let Some(m) = &self.message {
            if m.at.elapsed() < Duration::from_secs(8) {
                let color =
                    if m.error { egui::Color32::from_rgb(240, 110, 90) } else { ui.visuals().text_color() };
                ui.colored_label(color, &m.text);
            }
        }
    }

    /// The output view: the picture (or the live preview), errors, and the interpolation scrubber.
    fn output_ui(&mut self, ui: &mut Ui) -> bool {
        let Some(output) = self.graph.nodes.iter().find(|n| matches!(n.node, Node::Output(_))).map(|n| n.id)
        else {
            ui.label("Add an Output node to see a picture.");
            return false;
        };
        let state = self.outputs.entry(output).or_default();
        let size = ui.available_width().min(ui.available_height() - 140.0).max(64.0);
        let previews = self.settings.preview != PreviewMode::Off;
        if let (true, true, Some(_), Some((latent, dims)), Some(map)) =
            (previews, self.gpu_preview, &state.progress, &state.preview_latent, &self.preview_map)
        {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
            let callback = crate::ui::preview_gpu::PreviewCallback {
                map: map.clone(),
                latent: latent.clone(),
                dims: *dims,
            };
            ui.painter().add(eframe::egui_wgpu::Callback::new_paint_callback(rect, callback));
            return self.strip_ui(ui, output);
        }
        let texture = match (&state.progress, &state.preview, &state.picture) {
            (Some(_), Some(preview), _) if previews => Some(preview.clone()),
            (_, _, Some(picture)) => Some(picture.texture.clone()),
            _ => None,
        };
        match texture {
            Some(t) => {
                ui.add(egui::Image::new(&t).fit_to_exact_size(egui::vec2(size, size)))
                    .on_hover_text("The Output node's picture; step previews show while it renders");
            }
            None => {
                let (rect, _) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
                if state.drawn.as_ref().is_some_and(|(_, pending)| pending.is_some()) {
                    let spinner = egui::Rect::from_center_size(rect.center(), egui::vec2(24.0, 24.0));
                    egui::Spinner::new().paint_at(ui, spinner);
                }
            }
        }
        let error = state.error.clone();
        if let Some(error) = error {
            ui.colored_label(egui::Color32::from_rgb(240, 110, 90), error);
        }
        ui.horizontal(|ui| {
            if ui
                .button("Save image…")
                .on_hover_text("PNG with the graph and A1111 parameters (Ctrl+E)")
                .clicked()
            {
                self.save_image_dialog();
            }
        });
        self.strip_ui(ui, output)
    }

    /// The filmstrip and scrubber of an interpolation; returns whether the scrubber is dragged.
    fn strip_ui(&mut self, ui: &mut Ui, output: NodeId) -> bool {
        let Some(strip) = self.strips.get(&output) else { return false };
        let node = strip.node;
        let frames: Vec<Option<egui::TextureHandle>> =
            strip.keys.iter().map(|k| self.pictures.get(k).map(|p| p.texture)).collect();
        let Some(Node::Interpolate(interp)) = self.graph.node(node) else { return false };
        let mut position = interp.position;
        let n = frames.len();
        ui.separator();
        ui.label(format!("Interpolation: {}/{} frames ready", frames.iter().flatten().count(), n));
        egui::ScrollArea::horizontal().id_salt("filmstrip").show(ui, |ui| {
            ui.horizontal(|ui| {
                for (i, frame) in frames.iter().enumerate() {
                    let current = ((position * (n - 1) as f64).round() as usize) == i;
                    let response = match frame {
                        Some(t) => ui.add(
                            egui::Image::new(t)
                                .fit_to_exact_size(egui::vec2(40.0, 40.0))
                                .sense(egui::Sense::click()),
                        ),
                        None => ui.add(egui::Spinner::new().size(40.0)),
                    };
                    if current {
                        ui.painter().rect_stroke(
                            response.rect,
                            0.0,
                            (2.0, egui::Color32::WHITE),
                            egui::StrokeKind::Outside,
                        );
                    }
                    if response.on_hover_text(format!("Frame {}", i + 1)).clicked() {
                        position = i as f64 / (n - 1) as f64;
                    }
                }
            });
        });
        let mut dragging = false;
        ui.horizontal(|ui| {
            let playing = self.playing.is_some();
            if ui
                .button(if playing { "Pause" } else { "Play" })
                .on_hover_text("Play the strip's frames")
                .clicked()
            {
                self.playing = if playing { None } else { Some(Instant::now()) };
            }
            let slider = ui
                .add(egui::Slider::new(&mut position, 0.0..=1.0).text("Scrub"))
                .on_hover_text("Shows the nearest cached frame at once, then renders the exact point");
            dragging = slider.dragged();
            if ui.button("Export GIF…").on_hover_text("The strip as an animated GIF").clicked() {
                self.export_strip(output, true);
            }
            if ui.button("Export PNGs…").on_hover_text("The strip as numbered PNGs in a folder").clicked() {
                self.export_strip(output, false);
            }
        });
        if Some(position)
            != self.graph.node(node).and_then(|n| match n {
                Node::Interpolate(i) => Some(i.position),
                _ => None,
            })
        {
            self.edit_node(node, |n| {
                if let Node::Interpolate(i) = n {
                    i.position = position;
                }
            });
        }
        dragging
    }

    /// Steps playback through the strip's frames.
    fn advance_playback(&mut self, ctx: &egui::Context) {
        let Some(since) = self.playing else { return };
        if since.elapsed() < Duration::from_millis(120) {
            ctx.request_repaint_after(Duration::from_millis(120));
            return;
        }
        self.playing = Some(Instant::now());
        ctx.request_repaint_after(Duration::from_millis(120));
        let Some(strip) = self.strips.values().next() else { return };
        let (node, n) = (strip.node, strip.keys.len().max(2));
        self.edit_node(node, |node| {
            if let Node::Interpolate(i) = node {
                let frame = ((i.position * (n - 1) as f64).round() as usize + 1) % n;
                i.position = frame as f64 / (n - 1) as f64;
            }
        });
    }

    fn bottom_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.label("Made").on_hover_text("Renders since the studio opened; click one to restore its graph");
            let mut restore = None;
            egui::ScrollArea::horizontal().id_salt("made").show(ui, |ui| {
                for (i, entry) in self.made.iter().enumerate().rev() {
                    let image = egui::Image::new(&entry.picture.texture)
                        .fit_to_exact_size(egui::vec2(48.0, 48.0))
                        .sense(egui::Sense::click());
                    if ui.add(image).on_hover_text("Restore the graph that made this").clicked() {
                        restore = Some(i);
                    }
                }
            });
            if let Some(i) = restore {
                let graph = self.made[i].graph.clone();
                self.set_graph(graph, true);
                self.notify("Restored the graph of that render (Ctrl+Z goes back)");
            }
        });
    }

    fn windows(&mut self, ctx: &egui::Context) {
        let mut show_help = self.show_help;
        egui::Window::new("Keyboard shortcuts").open(&mut show_help).collapsible(false).show(ctx, |ui| {
            egui::Grid::new("shortcuts").show(ui, |ui| {
                for (keys, what) in SHORTCUTS {
                    ui.label(*keys);
                    ui.label(*what);
                    ui.end_row();
                }
            });
        });
        self.show_help = show_help;
        let mut show_settings = self.show_settings;
        let mut changed = false;
        let mut choose_folder = false;
        egui::Window::new("Settings").open(&mut show_settings).collapsible(false).show(ctx, |ui| {
            let options = crate::models::pipeline::LoadOptions::default();
            let device = crate::models::device::name(&options.device);
            ui.label(format!(
                "Device: {device} ({:?}, {} kernels)",
                options.dtype,
                crate::kernels::current().name()
            ))
            .on_hover_text(
                "Where the studio runs the networks: start it with --device auto|cpu|cuda:N|metal to choose \
                     (auto: a GPU when this build and machine have one); --kernels generic runs candle's \
                     device-generic operations on the CPU too",
            );
            let s = &mut self.settings;
            changed |= ui
                .add(egui::Slider::new(&mut s.threads, 0..=64).text("Tensor threads"))
                .on_hover_text("0 = one per core; applies at the next start")
                .changed();
            egui::ComboBox::from_label("Step previews").selected_text(format!("{:?}", s.preview)).show_ui(
                ui,
                |ui| {
                    changed |=
                        ui.selectable_value(&mut s.preview, PreviewMode::LatentMap, "LatentMap").changed();
                    changed |= ui.selectable_value(&mut s.preview, PreviewMode::Off, "Off").changed();
                },
            );
            changed |= ui
                .add(egui::Slider::new(&mut s.cache_mib, 16..=4096).text("Cache MiB").logarithmic(true))
                .on_hover_text("Memory for cached conditionings, inverted latents and pictures")
                .changed();
            let full = ui
                .checkbox(&mut s.live_final_full, "Live: finish each stroke with the full model")
                .on_hover_text(
                    "After a stroke ends, render with the built-in model instead of its few-step student",
                );
            if full.changed() {
                changed = true;
                self.last_plans.clear();
                self.replan = true;
            }
            ui.horizontal(|ui| {
                let folder = s.output_folder.as_ref().map_or("none".into(), |p| p.display().to_string());
                ui.label(format!("Output folder: {folder}"));
                if ui.button("Choose…").on_hover_text("Save every finished render here").clicked() {
                    choose_folder = true;
                }
                if ui.button("None").on_hover_text("Stop saving renders automatically").clicked() {
                    s.output_folder = None;
                    changed = true;
                }
            });
        });
        self.show_settings = show_settings;
        if choose_folder {
            if let Some(folder) = rfd::FileDialog::new().pick_folder() {
                self.settings.output_folder = Some(folder);
                changed = true;
            }
        }
        if changed {
            self.apply_settings();
        }
        self.dropped_file_modal(ctx);
    }

    /// The Live toggle's text: the frame rate while frames arrive, else what the last picture's
    /// time lets the user expect.
    fn live_label(&self) -> String {
        match (self.settings.live, self.live_fps(), self.last_render_secs) {
            (true, Some(fps), _) => format!("Live {fps:.0} fps"),
            (true, None, Some(secs)) => format!("Live (idle, ≈{} fps)", expected_fps(secs)),
            (true, None, None) => "Live (idle)".into(),
            (false, _, _) => "Live".into(),
        }
    }

    /// The Live toggle's tooltip: what it does, and what to do when the model is too slow for it.
    fn live_hint(&self) -> String {
        let mut hint =
            "Live mode (Ctrl+L): the picture follows the brush; the built-in model paints with its \
                        few-step student, other models as their Sampler node says"
                .to_string();
        if let Some(secs) = self.last_render_secs.filter(|s| *s > 0.25) {
            hint.push_str(&format!(
                ". The last picture took {secs:.1} s (≈{} frames/s): for live painting use an LCM or Turbo model, an \
                 LCM-LoRA with the LCM preset, few steps, and a TAESD as the Model node's VAE",
                expected_fps(secs)
            ));
        }
        hint
    }

    /// Turns Live mode on or off and re-renders every Output the new way.
    pub fn toggle_live(&mut self) {
        self.settings.live = !self.settings.live;
        self.live_submitted.clear();
        self.last_plans.clear();
        for state in self.outputs.values_mut() {
            state.wanted = None;
        }
        self.replan = true;
        self.apply_settings();
    }

    fn apply_settings(&mut self) {
        if let Err(e) = self.settings.save(&self.data_dir) {
            self.error(format!("settings could not be saved: {e}"));
        }
        let bytes = self.settings.cache_mib << 20;
        self.pictures.set_budget(bytes / 2);
        self.send_cache_budget(bytes / 2);
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.key_pressed(egui::Key::F1)) {
            self.show_help = !self.show_help;
        }
        if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            self.cancel_all();
        }
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let live = ctx.input_mut(|i| {
            i.consume_shortcut(&egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::L))
        });
        if live {
            self.toggle_live();
        }
        let (undo, redo, save, open, export) = ctx.input_mut(|i| {
            let shift_z =
                egui::KeyboardShortcut::new(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, egui::Key::Z);
            let redo = i.consume_shortcut(&shift_z);
            let undo =
                i.consume_shortcut(&egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::Z));
            let save =
                i.consume_shortcut(&egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::S));
            let open =
                i.consume_shortcut(&egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::O));
            let export =
                i.consume_shortcut(&egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::E));
            (undo, redo, save, open, export)
        });
        if redo {
            self.redo();
        } else if undo {
            self.undo();
        }
        if save {
            self.save_dialog();
        }
        if open {
            self.open_dialog();
        }
        if export {
            self.save_image_dialog();
        }
    }
}

/// The help overlay's list.
const SHORTCUTS: &[(&str, &str)] = &[
    ("F1", "show or hide this help"),
    ("Esc", "cancel the running render"),
    ("Ctrl+Z", "undo (strokes while the canvas has focus, graph edits otherwise)"),
    ("Ctrl+Shift+Z", "redo"),
    ("Ctrl+S", "save the graph"),
    ("Ctrl+O", "open a graph (JSON, or a PNG the studio saved)"),
    ("Ctrl+E", "save the picture as PNG with its graph"),
    ("Ctrl+L", "Live mode: the picture follows the brush"),
    ("Right-click the graph", "add a node"),
    ("Right-click a node", "delete it"),
    ("Drag from a pin", "wire it (wrong types are refused, with the reason)"),
    (
        "Drop a file",
        "PNG with a graph: open it or use the picture; A1111 PNG: fill prompt and sampler; image: Image node",
    ),
];

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        StudioApp::ui(self, ui);
    }

    fn on_exit(&mut self) {
        self.save_autosave();
    }
}

impl Drop for StudioApp {
    fn drop(&mut self) {
        if self.dirty {
            self.save_autosave();
        }
    }
}

/// Opens the studio window (blocks until it closes).
pub fn run(options: Options) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Latent Studio")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    let start = move |cc: &eframe::CreationContext<'_>| -> Result<Box<dyn eframe::App>, _> {
        let mut app = StudioApp::new(options);
        app.gpu_preview = crate::ui::preview_gpu::install(cc.wgpu_render_state.as_ref());
        Ok(Box::new(app))
    };
    eframe::run_native("Latent Studio", native, Box::new(start))
        .map_err(|e| anyhow::anyhow!("the window could not open: {e}"))
}

/// Frames per second a render time allows, for reading: whole numbers from 1, one decimal below.
fn expected_fps(secs: f64) -> String {
    let fps = 1.0 / secs.max(1e-3);
    if fps >= 1.0 {
        format!("{fps:.0}")
    } else {
        format!("{fps:.1}")
    }
}
