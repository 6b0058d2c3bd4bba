//! The studio's side of the engine: planning the graph into jobs (latest wins per output), the
//! interpolation strip's frames in the background, and turning events into pictures.

use std::sync::Arc;
use std::time::Instant;

use super::{HistoryEntry, Picture, StripState, StudioApp};
use crate::background::Pending;
use crate::engine::spec::{ImageSpec, RenderSpec};
use crate::engine::studio::{StudioBackend, StudioJob, Task};
use crate::engine::{Engine, EventKind, Finished, JobId, OutputKey, Urgency};
use crate::graph::eval::{self, Shown};
use crate::graph::{Graph, NodeId};
use crate::imageio::Rgb;
use crate::models::pipeline::LoadOptions;

/// What a submitted job is for.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// The picture of an Output node.
    Output(NodeId),
    /// A Live-mode frame of an Output node while a stroke is painted (not kept in the history).
    Live(NodeId),
    /// Frame `i` of an Output node's strip.
    Frame(NodeId, usize),
    /// Loading a model.
    Model,
}

/// A submitted job's bookkeeping.
pub(super) struct JobMeta {
    target: Target,
    key: String,
    graph: Graph,
}

fn output_key(target: &Target) -> OutputKey {
    OutputKey(match target {
        // Live frames share their Output's key: of all its jobs only the newest matters.
        Target::Output(id) | Target::Live(id) => format!("output:{id}"),
        Target::Frame(id, _) => format!("strip:{id}"),
        Target::Model => "model".into(),
    })
}

/// Events handled per frame at most, so a flood never stalls the window.
const EVENTS_PER_FRAME: usize = 64;

impl StudioApp {
    pub(super) fn ensure_engine(&mut self, ctx: &egui::Context) {
        if self.engine.is_some() {
            return;
        }
        let repaint = ctx.clone();
        match Engine::spawn(StudioBackend::default(), Arc::new(move || repaint.request_repaint())) {
            Ok(engine) => self.engine = Some(engine),
            Err(e) => self.error(format!("the inference thread could not start: {e}")),
        }
        self.send_cache_budget((self.settings.cache_mib << 20) / 2);
    }

    fn submit(&mut self, target: Target, task: Task, key: String, urgency: Urgency) -> Option<JobId> {
        let engine = self.engine.as_ref()?;
        let output = output_key(&target);
        let id = engine.submit(StudioJob { output, task }, urgency);
        self.jobs.insert(id, JobMeta { target, key, graph: self.graph.clone() });
        Some(id)
    }

    pub(super) fn send_cache_budget(&mut self, bytes: usize) {
        if let Some(engine) = &self.engine {
            let job = StudioJob { output: OutputKey("settings".into()), task: Task::SetCacheBudget(bytes) };
            engine.submit(job, Urgency::Discrete);
        }
    }

    /// Cancels every render and strip frame (Esc, the cancel button).
    pub fn cancel_all(&mut self) {
        let Some(engine) = &self.engine else { return };
        for meta in self.jobs.values() {
            engine.cancel(output_key(&meta.target));
        }
        self.playing = None;
    }

    /// Plans the graph; submits a job for every Output whose spec changed.
    pub(super) fn plan_and_submit(&mut self, dragging: bool) {
        let plans = eval::plans(&self.graph);
        if plans == self.last_plans {
            return;
        }
        let urgency = if dragging { Urgency::Drag } else { Urgency::Discrete };
        for (output, plan) in &plans {
            let plan = match plan {
                Ok(plan) => plan,
                Err(e) => {
                    let state = self.outputs.entry(*output).or_default();
                    state.error = Some(e.to_string());
                    state.wanted = None;
                    if let Some(engine) = &self.engine {
                        engine.cancel(output_key(&Target::Output(*output)));
                    }
                    continue;
                }
            };
            match &plan.shown {
                Shown::Render(spec) => {
                    self.outputs.entry(*output).or_default().drawn = None;
                    let spec = self.as_shown(spec, dragging);
                    self.want(*output, &spec, urgency);
                }
                Shown::Picture(image) => self.draw_picture(*output, image),
            }
            match &plan.strip {
                Some(strip) => {
                    let keys: Vec<String> = strip.frames.iter().map(RenderSpec::key).collect();
                    let same = self.strips.get(output).is_some_and(|s| s.keys == keys);
                    if !same {
                        self.strips.insert(
                            *output,
                            StripState { node: strip.node, keys, specs: strip.frames.clone(), job: None },
                        );
                    }
                }
                None => {
                    self.strips.remove(output);
                }
            }
        }
        let live: Vec<NodeId> = plans.iter().map(|(id, _)| *id).collect();
        self.outputs.retain(|id, _| live.contains(id));
        self.strips.retain(|id, _| live.contains(id));
        self.last_plans = plans;
    }

    /// Live mode while a stroke is being painted: renders every Output from the strokes with the
    /// unfinished one added, on the student, as a stream of drag-urgency jobs (the engine keeps
    /// the newest). Frames are shown as they arrive, newest job first (see `finished`); the
    /// graph itself changes only when the stroke ends.
    pub(super) fn plan_live(&mut self) {
        if !self.settings.live {
            return;
        }
        let before = self.last_plans.clone();
        let painting =
            self.canvas_views.iter().find_map(|(id, view)| Some((*id, view.stroke_in_progress()?.clone())));
        let Some((canvas_id, stroke)) = painting else {
            self.live_submitted.clear();
            return;
        };
        let mut graph = self.graph.clone();
        let Some(node) = graph.nodes.iter_mut().find(|n| n.id == canvas_id) else { return };
        let crate::graph::node::Node::Canvas(canvas) = &mut node.node else { return };
        canvas.push(stroke);
        for (output, plan) in eval::plans(&graph) {
            // Only the Outputs the unfinished stroke changes.
            if before.iter().any(|(id, p)| *id == output && *p == plan) {
                continue;
            }
            let Ok(eval::Plan { shown: Shown::Render(spec), .. }) = plan else { continue };
            let spec = spec.on_live_model();
            let key = spec.key();
            if self.live_submitted.get(&output) == Some(&key) {
                continue;
            }
            self.live_submitted.insert(output, key.clone());
            if self.model_requested.as_ref() != Some(&spec.model) {
                self.model_requested = Some(spec.model.clone());
                let task = Task::LoadModel { path: spec.model.path(), options: LoadOptions::default() };
                self.submit(Target::Model, task, String::new(), Urgency::Discrete);
            }
            self.submit(Target::Live(output), Task::Spec(Box::new(spec)), key, Urgency::Drag);
        }
    }

    /// How many points the stroke being painted has (`None` when none is): Live mode's next
    /// frame draws the strokes with it.
    pub fn stroke_in_progress_points(&self) -> Option<usize> {
        self.canvas_views.values().find_map(|view| Some(view.stroke_in_progress()?.points.len()))
    }

    /// Frames per second Live mode delivered over the last second (`None` when none arrived).
    pub fn live_fps(&self) -> Option<f64> {
        let now = Instant::now();
        let recent: Vec<&Instant> =
            self.live_frames.iter().filter(|t| now.duration_since(**t).as_secs_f64() <= 1.0).collect();
        (recent.len() >= 2).then(|| {
            let span = now.duration_since(*recent[0]).as_secs_f64().max(1e-3);
            recent.len() as f64 / span.max(0.25)
        })
    }

    /// Makes `output` show `spec`: at once from the cache, else by a job (showing the nearest
    /// strip frame meanwhile).
    fn want(&mut self, output: NodeId, spec: &RenderSpec, urgency: Urgency) {
        let key = spec.key();
        let state = self.outputs.entry(output).or_default();
        if state.wanted.as_ref() == Some(&key) {
            return;
        }
        state.wanted = Some(key.clone());
        state.error = None;
        if self.model_requested.as_ref() != Some(&spec.model) {
            self.model_requested = Some(spec.model.clone());
            let task = Task::LoadModel { path: spec.model.path(), options: LoadOptions::default() };
            self.submit(Target::Model, task, String::new(), Urgency::Discrete);
        }
        if let Some(picture) = self.pictures.get(&key) {
            let state = self.outputs.entry(output).or_default();
            state.picture = Some(picture);
            state.progress = None;
            state.job = None;
            if let Some(engine) = &self.engine {
                engine.cancel(output_key(&Target::Output(output)));
            }
            return;
        }
        if let Some(nearest) = self.nearest_frame(output, spec) {
            self.outputs.entry(output).or_default().picture = Some(nearest);
        }
        // The strip waits while the picture the user looks at renders.
        if let (Some(engine), Some(strip)) = (&self.engine, self.strips.get_mut(&output)) {
            if strip.job.take().is_some() {
                engine.cancel(output_key(&Target::Frame(output, 0)));
            }
        }
        let job = self.submit(Target::Output(output), Task::Spec(Box::new(spec.clone())), key, urgency);
        self.outputs.entry(output).or_default().job = job.map(|id| (id, false));
    }

    /// Makes `output` show a picture that needs no network (a file, a canvas), decoded or
    /// rasterised on the background worker; the previous picture stays up meanwhile.
    fn draw_picture(&mut self, output: NodeId, image: &ImageSpec) {
        let state = self.outputs.entry(output).or_default();
        state.wanted = None;
        if state.drawn.as_ref().is_some_and(|(spec, _)| spec == image) {
            return;
        }
        let (spec, ctx) = (image.clone(), self.ctx.clone());
        let pending = self.worker.submit(
            move || ctx.request_repaint(),
            move || crate::engine::spec::raster(&spec, 256, 256).map_err(|e| e.to_string()),
        );
        state.drawn = Some((image.clone(), Some(pending)));
    }

    /// Shows the pictures the background worker finished for Output nodes.
    pub(super) fn poll_drawn(&mut self) {
        let mut done = Vec::new();
        for (id, state) in self.outputs.iter_mut() {
            let Some((_, pending)) = state.drawn.as_mut() else { continue };
            let Some(result) = pending.as_ref().and_then(Pending::poll_result) else { continue };
            *pending = None;
            done.push((*id, result));
        }
        for (output, result) in done {
            match result {
                Ok(rgb) => {
                    let picture = self.picture(&format!("picture:{output}"), rgb, String::new());
                    let state = self.outputs.entry(output).or_default();
                    state.picture = Some(picture);
                    state.error = None;
                }
                Err(e) => self.outputs.entry(output).or_default().error = Some(e),
            }
        }
    }

    /// The cached strip frame nearest to `spec`'s position on the path.
    fn nearest_frame(&mut self, output: NodeId, spec: &RenderSpec) -> Option<Picture> {
        let crate::engine::spec::NoiseSpec::Slerp { t, .. } = &spec.noise else { return None };
        let strip = self.strips.get(&output)?;
        let n = strip.keys.len();
        let nearest = ((t * (n - 1) as f64).round() as usize).min(n - 1);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| i.abs_diff(nearest));
        let keys: Vec<String> = order.iter().map(|&i| strip.keys[i].clone()).collect();
        keys.iter().find_map(|k| self.pictures.get(k))
    }

    /// After a drag: when the running job is not the newest value, restart with it at once.
    pub(super) fn drag_released(&mut self) {
        let stale: Vec<(NodeId, String)> = self
            .outputs
            .iter()
            .filter_map(|(id, o)| {
                let wanted = o.wanted.clone()?;
                let (job, _) = o.job?;
                let running = self.jobs.get(&job).map(|m| m.key.clone());
                (running.as_ref() != Some(&wanted)).then_some((*id, wanted))
            })
            .collect();
        for (output, _) in stale {
            if let Some(spec) = self.spec_of(output) {
                let spec = self.as_shown(&spec, false);
                self.outputs.entry(output).or_default().wanted = None;
                self.want(output, &spec, crate::engine::Urgency::Discrete);
            }
        }
    }

    /// The spec an Output renders: in Live mode on the student while anything moves, and after a
    /// stroke or a drag ends too unless the full model is asked for then.
    fn as_shown(&self, spec: &RenderSpec, dragging: bool) -> RenderSpec {
        if self.settings.live && (dragging || !self.settings.live_final_full) {
            spec.on_live_model()
        } else {
            spec.clone()
        }
    }

    fn spec_of(&self, output: NodeId) -> Option<RenderSpec> {
        self.last_plans.iter().find(|(id, _)| *id == output).and_then(|(_, p)| match p {
            Ok(eval::Plan { shown: Shown::Render(spec), .. }) => Some((**spec).clone()),
            _ => None,
        })
    }

    /// Renders the next missing strip frame when no picture is being rendered.
    pub(super) fn pump_strips(&mut self) {
        // Live frames are in flight while a stroke is painted.
        let rendering = self.outputs.values().any(|o| o.job.is_some()) || !self.live_submitted.is_empty();
        if rendering {
            return;
        }
        let outputs: Vec<NodeId> = self.strips.keys().copied().collect();
        for output in outputs {
            let Some(strip) = self.strips.get(&output) else { continue };
            if strip.job.is_some() {
                continue;
            }
            let missing = (0..strip.keys.len()).find(|&i| self.pictures.get(&strip.keys[i]).is_none());
            let Some(i) = missing else { continue };
            let (key, spec) = (strip.keys[i].clone(), strip.specs[i].clone());
            let job =
                self.submit(Target::Frame(output, i), Task::Spec(Box::new(spec)), key, Urgency::Discrete);
            if let Some(strip) = self.strips.get_mut(&output) {
                strip.job = job.map(|j| (j, i));
            }
        }
    }

    /// Makes a picture (and its texture) from RGB.
    fn picture(&self, key: &str, rgb: Rgb, parameters: String) -> Picture {
        let image = egui::ColorImage::from_rgb([rgb.width, rgb.height], &rgb.data);
        let texture = self.ctx.load_texture("picture", image, egui::TextureOptions::LINEAR);
        let key = key.to_string();
        Picture { rgb: Arc::new(rgb.data), width: rgb.width, height: rgb.height, texture, parameters, key }
    }

    /// Handles the engine's events (a bounded number per frame).
    pub(super) fn poll_events(&mut self, ctx: &egui::Context) {
        for _ in 0..EVENTS_PER_FRAME {
            let Some(event) = self.engine.as_ref().and_then(|e| e.events().try_recv().ok()) else { return };
            let Some(meta) = self.jobs.get(&event.job) else { continue };
            let (target, key) = (meta.target.clone(), meta.key.clone());
            match event.kind {
                EventKind::Started => {
                    if let Target::Output(o) = target {
                        let state = self.outputs.entry(o).or_default();
                        if state.job.is_some_and(|(j, _)| j == event.job) {
                            state.job = Some((event.job, true));
                        }
                        state.progress = Some((0, 0, Instant::now()));
                    }
                }
                EventKind::Progress { step, total, preview } => {
                    let Target::Output(o) = target else { continue };
                    let map = self.preview_map.clone();
                    let state = self.outputs.entry(o).or_default();
                    let started = state.progress.map_or_else(Instant::now, |p| p.2);
                    state.progress = Some((step, total, started));
                    if self.settings.preview == super::PreviewMode::Off {
                        continue;
                    }
                    let Some(latent) = preview else { continue };
                    let Ok((_, c, h, w)) = latent.dims4() else { continue };
                    if c == 3 {
                        // A picture the model's TAESD decoded, in [0, 1].
                        let rgb = (|| {
                            (latent.squeeze(0)?.permute((1, 2, 0))? * 255.0)?
                                .round()?
                                .clamp(0f32, 255f32)?
                                .to_dtype(candle_core::DType::U8)?
                                .flatten_all()?
                                .to_vec1::<u8>()
                        })();
                        if let Ok(rgb) = rgb {
                            let image = egui::ColorImage::from_rgb([w, h], &rgb);
                            let texture =
                                ctx.load_texture(format!("preview:{o}"), image, egui::TextureOptions::LINEAR);
                            let state = self.outputs.entry(o).or_default();
                            state.preview = Some(texture);
                            state.preview_latent = None;
                        }
                        continue;
                    }
                    let Some(map) = map else { continue };
                    if self.gpu_preview {
                        let values =
                            latent.to_dtype(candle_core::DType::F32).and_then(|l| l.flatten_all()?.to_vec1());
                        if let Ok(values) = values {
                            self.outputs.entry(o).or_default().preview_latent = Some((values, (c, h, w)));
                        }
                    } else if let Ok(rgb) = map.apply(&latent) {
                        let image = egui::ColorImage::from_rgb([w, h], &rgb);
                        let texture =
                            ctx.load_texture(format!("preview:{o}"), image, egui::TextureOptions::LINEAR);
                        self.outputs.entry(o).or_default().preview = Some(texture);
                    }
                }
                EventKind::Done { result, elapsed } => {
                    if matches!(target, Target::Output(_) | Target::Live(_)) {
                        self.last_render_secs = Some(elapsed.as_secs_f64());
                    }
                    let meta = self.jobs.remove(&event.job);
                    self.finished(target, key, result, meta.map(|m| m.graph), event.job);
                }
                EventKind::Failed { error } => {
                    self.jobs.remove(&event.job);
                    self.job_ended(&target, event.job);
                    match target {
                        Target::Output(o) | Target::Live(o) => {
                            let title = format!("Output (node {o}): {error}");
                            self.outputs.entry(o).or_default().error = Some(title.clone());
                            self.error(title);
                        }
                        Target::Frame(o, i) => {
                            self.strips.remove(&o);
                            self.error(format!("strip frame {}: {error}", i + 1));
                        }
                        Target::Model => {
                            self.model_requested = None;
                            self.error(format!("the model could not be loaded: {error}"));
                        }
                    }
                }
                EventKind::Cancelled => {
                    self.cancelled_jobs += 1;
                    self.jobs.remove(&event.job);
                    self.job_ended(&target, event.job);
                }
            }
        }
        ctx.request_repaint();
    }

    /// Clears a job's bookkeeping on its output or strip.
    fn job_ended(&mut self, target: &Target, job: JobId) {
        match target {
            Target::Output(o) => {
                let state = self.outputs.entry(*o).or_default();
                if state.job.is_some_and(|(j, _)| j == job) {
                    state.job = None;
                    state.progress = None;
                }
            }
            Target::Frame(o, _) => {
                if let Some(strip) = self.strips.get_mut(o) {
                    if strip.job.is_some_and(|(j, _)| j == job) {
                        strip.job = None;
                    }
                }
            }
            Target::Live(_) | Target::Model => {}
        }
    }

    fn finished(&mut self, target: Target, key: String, result: Finished, graph: Option<Graph>, job: JobId) {
        match result {
            Finished::ModelLoaded { name, preview } => {
                self.preview_map = Some(preview);
                self.notify(format!("model loaded: {name}"));
            }
            Finished::Image { rgb, width, height, unknown_words, notes, parameters, .. } => {
                let picture = self.picture(&key, Rgb { width, height, data: rgb }, parameters);
                self.pictures.insert(key.clone(), picture.clone());
                match target {
                    Target::Output(o) => {
                        let state = self.outputs.entry(o).or_default();
                        let current = state.wanted.as_ref() == Some(&key);
                        if let Some((j, _)) = state.job {
                            if !self.jobs.contains_key(&j) {
                                state.job = None;
                                state.progress = None;
                            }
                        }
                        if current {
                            state.shown_job = Some(job);
                            state.picture = Some(picture.clone());
                            state.job = None;
                            state.progress = None;
                            state.preview = None;
                            state.preview_latent = None;
                        }
                        if let Some(spec) = self.spec_of(o) {
                            self.unknown_words.insert(spec.prompt, unknown_words);
                            for lora in &spec.loras {
                                let prefix = format!("{}: ", lora.path.display());
                                let lines =
                                    notes.iter().filter_map(|n| n.strip_prefix(&prefix)).map(String::from);
                                self.lora_notes.insert(lora.path.clone(), lines.collect());
                            }
                            if !spec.regions.is_empty() || !self.region_notes.is_empty() {
                                self.region_notes =
                                    notes.iter().filter(|n| n.starts_with("region ")).cloned().collect();
                            }
                        }
                        self.save_to_output_folder(&picture);
                        self.made.push(HistoryEntry {
                            picture,
                            graph: graph.unwrap_or_else(|| self.graph.clone()),
                        });
                        if self.made.len() > 100 {
                            self.made.remove(0);
                        }
                    }
                    Target::Live(o) => {
                        // A frame is shown unless a newer job's picture already is, so the
                        // picture never goes back to older strokes.
                        let state = self.outputs.entry(o).or_default();
                        if state.shown_job.is_none_or(|shown| shown < job) {
                            state.shown_job = Some(job);
                            state.picture = Some(picture);
                            state.preview = None;
                            state.preview_latent = None;
                        }
                        let now = Instant::now();
                        self.live_frames.push_back(now);
                        while self
                            .live_frames
                            .front()
                            .is_some_and(|t| now.duration_since(*t).as_secs_f64() > 1.0)
                        {
                            self.live_frames.pop_front();
                        }
                    }
                    Target::Frame(o, _) => {
                        if let Some(strip) = self.strips.get_mut(&o) {
                            strip.job = None;
                        }
                    }
                    Target::Model => {}
                }
            }
        }
    }
}
