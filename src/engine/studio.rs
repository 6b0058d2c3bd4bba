//! The studio's backend: loads models and renders with the pipeline, from pipeline requests
//! (the command line's benchmarks) or from render specs (the graph). Inverted latents are cached
//! by what they depend on (model, picture, prompt, guidance, steps) under a byte budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use candle_core::Tensor;

use super::protocol::{Finished, OutputKey, Work};
use super::spec::{self, ImageSpec, LoraSpec, NoiseSpec, RenderSpec, SpecError, VaeSpec};
use super::{Backend, StepHook};
use crate::cache::LruCache;
use crate::core::{Guidance, StepView};
use crate::models::lora::LoraFile;
use crate::models::pipeline::{LoadOptions, Pipeline, Request};
use crate::models::preview::LatentRgbMap;

/// What a studio job does.
#[derive(Debug, Clone)]
pub enum Task {
    /// Load a model (replacing the current one).
    LoadModel {
        /// Folder, single file, or the built-in model's folder.
        path: PathBuf,
        /// How to load it.
        options: LoadOptions,
    },
    /// Render a pipeline request with the loaded model.
    Render(Box<Request>),
    /// Render a spec, loading its model first when another one is loaded.
    Spec(Box<RenderSpec>),
    /// Set the byte budget of the backend's caches (conditionings, inverted latents).
    SetCacheBudget(usize),
}

/// A studio job: a task for one output.
#[derive(Debug, Clone)]
pub struct StudioJob {
    /// Which output it is for.
    pub output: OutputKey,
    /// What to do.
    pub task: Task,
}

impl Work for StudioJob {
    fn output(&self) -> &OutputKey {
        &self.output
    }
}

/// Default byte budget of the inverted-latent cache.
pub const INVERSION_CACHE_BYTES: usize = 64 << 20;

/// Runs studio jobs with the loaded pipeline.
pub struct StudioBackend {
    /// The loaded model: its path, the autoencoder put in place of its own, the pipeline.
    pipeline: Option<(PathBuf, Option<VaeSpec>, Pipeline)>,
    inversions: LruCache<String, Tensor>,
    /// LoRA files read, with the modification time they were read at (a file saved again is
    /// read again).
    loras: HashMap<PathBuf, (Option<SystemTime>, Arc<LoraFile>)>,
}

impl Default for StudioBackend {
    fn default() -> Self {
        Self { pipeline: None, inversions: LruCache::new(INVERSION_CACHE_BYTES), loras: HashMap::new() }
    }
}

impl StudioBackend {
    /// Loads `path` with `vae` in place of its autoencoder unless that is what is loaded; returns
    /// it. A TAESD decodes the step previews; one only for previews leaves the model's own for
    /// the pictures.
    fn load(
        &mut self,
        path: &PathBuf,
        vae: Option<&VaeSpec>,
        options: &LoadOptions,
    ) -> Result<&Pipeline, String> {
        if self.pipeline.as_ref().is_none_or(|(loaded, v, _)| loaded != path || v.as_ref() != vae) {
            self.pipeline = None;
            let mut pipeline = Pipeline::load(path, options).map_err(|e| e.to_string())?;
            if let Some(v) = vae {
                if v.finals {
                    pipeline.swap_vae(&v.path).map_err(|e| e.to_string())?;
                    // A TAESD making the pictures makes the previews too; a KL one does not.
                    let _ = pipeline.set_preview_decoder(Some(&v.path));
                } else {
                    pipeline.set_preview_decoder(Some(&v.path)).map_err(|e| e.to_string())?;
                }
            }
            self.pipeline = Some((path.clone(), vae.cloned(), pipeline));
        }
        self.pipeline.as_ref().map(|(_, _, p)| p).ok_or_else(|| "no model is loaded".into())
    }

    /// The LoRA file at `path`, read once (again when it changed on disk).
    fn lora_file(&mut self, path: &PathBuf) -> Result<Arc<LoraFile>, String> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some((when, file)) = self.loras.get(path) {
            if *when == modified {
                return Ok(file.clone());
            }
        }
        let file = Arc::new(LoraFile::read(path).map_err(|e| e.to_string())?);
        self.loras.insert(path.clone(), (modified, file.clone()));
        Ok(file)
    }

    /// Merges `loras` into the loaded model (a no-op when they are merged already); returns
    /// what the user should know: layers that matched nothing, by file.
    fn apply_loras(&mut self, loras: &[LoraSpec]) -> Result<Vec<String>, String> {
        let files = loras
            .iter()
            .map(|l| Ok((self.lora_file(&l.path)?, l.strength)))
            .collect::<Result<Vec<_>, String>>()?;
        let Some((_, _, pipeline)) = &mut self.pipeline else { return Err("no model is loaded".into()) };
        let reports = pipeline.set_loras(&files).map_err(|e| e.to_string())?;
        Ok(reports
            .into_iter()
            .filter(|r| !r.unmatched.is_empty())
            .map(|r| {
                format!(
                    "{}: {} layers not in this model: {}",
                    r.path.display(),
                    r.unmatched.len(),
                    r.unmatched.join(", ")
                )
            })
            .collect())
    }

    /// Runs a spec: resolves its noise (inverting pictures through the cache), then renders.
    fn render_spec(
        &mut self,
        spec: &RenderSpec,
        step: &mut StepHook<'_>,
    ) -> Result<Option<Finished>, String> {
        let path = spec.model.path();
        self.load(&path, spec.vae.as_ref(), &LoadOptions::default())?;
        let mut notes = self.apply_loras(&spec.loras)?;
        let Some((_, _, pipeline)) = &self.pipeline else { return Err("no model is loaded".into()) };
        let text = |e: SpecError| e.to_string();
        let mut request = spec::request(spec, pipeline).map_err(text)?;
        // Inverted latents depend on the LoRAs too.
        let model = serde_json::to_string(&(spec.model.name(), &spec.loras)).unwrap_or_default();
        let Some(noise) = resolve_noise(&spec.noise, pipeline, &mut self.inversions, &model, step)? else {
            return Ok(None);
        };
        request.init_latent = noise;
        let mut callback = |v: &StepView<'_>| match pipeline.decode_preview(v.denoised) {
            Ok(Some(picture)) => step(v.index + 1, v.total, Some(&picture)),
            _ => step(v.index + 1, v.total, Some(v.denoised)),
        };
        let rendered = pipeline.render(&request, &mut callback).map_err(|e| e.to_string())?;
        Ok(rendered.map(|r| {
            notes.extend(r.notes);
            // The steps and guidance the render used (a distilled model's guidance is clamped).
            let used = RenderSpec { guidance: request.guidance.scale, ..spec.clone() };
            let parameters = used.a1111_parameters(request.steps, (r.width, r.height));
            Finished::Image {
                rgb: r.rgb,
                width: r.width,
                height: r.height,
                latent: Some(r.latent),
                unknown_words: r.unknown_words,
                notes,
                parameters,
            }
        }))
    }

    /// Sets the byte budget of the caches (text conditionings and inverted latents).
    pub fn set_cache_budget(&mut self, bytes: usize) {
        self.inversions.set_budget(bytes / 2);
        if let Some((_, _, p)) = &self.pipeline {
            p.set_cache_budget(bytes / 2);
        }
    }
}

/// The starting noise of `noise`: `Ok(Some(None))` for a plain seed (the pipeline draws it),
/// `Ok(None)` when the step hook cancelled an inversion.
fn resolve_noise(
    noise: &NoiseSpec,
    pipeline: &Pipeline,
    cache: &mut LruCache<String, Tensor>,
    model: &str,
    step: &mut StepHook<'_>,
) -> Result<Option<Option<Tensor>>, String> {
    let text = |e: SpecError| e.to_string();
    match noise {
        NoiseSpec::Seed(_) => Ok(Some(None)),
        NoiseSpec::Inverted { image, prompt, guidance, steps } => {
            invert(image, prompt, *guidance, *steps, pipeline, cache, model, step).map(|t| t.map(Some))
        }
        NoiseSpec::Slerp { a, b, t } => {
            let mut endpoint = |n: &NoiseSpec| -> Result<Option<Tensor>, String> {
                Ok(match resolve_noise(n, pipeline, cache, model, step)? {
                    None => None,
                    Some(Some(tensor)) => Some(tensor),
                    Some(None) => {
                        let NoiseSpec::Seed(seed) = n else { return Err("unresolved noise".into()) };
                        Some(spec::seeded_latent(*seed, pipeline).map_err(text)?)
                    }
                })
            };
            let (Some(a), Some(b)) = (endpoint(a)?, endpoint(b)?) else { return Ok(None) };
            Ok(Some(Some(spec::blend(&a, &b, *t).map_err(text)?)))
        }
    }
}

/// DDIM inversion of a picture, through the cache.
#[allow(clippy::too_many_arguments)]
fn invert(
    image: &ImageSpec,
    prompt: &str,
    guidance: f64,
    steps: usize,
    pipeline: &Pipeline,
    cache: &mut LruCache<String, Tensor>,
    model: &str,
    step: &mut StepHook<'_>,
) -> Result<Option<Tensor>, String> {
    let key = serde_json::to_string(&(model, image, prompt, guidance, steps)).unwrap_or_default();
    if let Some(hit) = cache.get(&key) {
        return Ok(Some(hit));
    }
    let text = |e: SpecError| e.to_string();
    let size = pipeline.image_size();
    let picture =
        spec::rgb_tensor(&spec::raster(image, size, size).map_err(text)?).map_err(|e| e.to_string())?;
    let latent = pipeline.encode_image(&picture).map_err(|e| e.to_string())?;
    let guidance = Guidance { scale: pipeline.clamp_guidance(guidance), rescale: 0.0, interval: None };
    let mut callback = |v: &StepView<'_>| step(v.index + 1, v.total, None);
    let inverted =
        pipeline.invert(&latent, prompt, guidance, steps, &mut callback).map_err(|e| e.to_string())?;
    if let Some(noise) = &inverted {
        cache.insert(key, noise.clone());
    }
    Ok(inverted)
}

impl Backend for StudioBackend {
    type Work = StudioJob;

    fn run(&mut self, work: &StudioJob, step: &mut StepHook<'_>) -> Result<Option<Finished>, String> {
        match &work.task {
            Task::LoadModel { path, options } => {
                let pipeline = self.load(path, None, options)?;
                let preview = LatentRgbMap::for_pipeline(pipeline).map_err(|e| e.to_string())?;
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok(Some(Finished::ModelLoaded { name, preview }))
            }
            Task::Render(request) => {
                let Some((_, _, pipeline)) = &self.pipeline else {
                    return Err("no model is loaded".into());
                };
                let mut callback = |v: &StepView<'_>| step(v.index + 1, v.total, Some(v.denoised));
                let rendered = pipeline.render(request, &mut callback).map_err(|e| e.to_string())?;
                Ok(rendered.map(|r| Finished::Image {
                    rgb: r.rgb,
                    width: r.width,
                    height: r.height,
                    latent: Some(r.latent),
                    unknown_words: r.unknown_words,
                    notes: Vec::new(),
                    parameters: String::new(),
                }))
            }
            Task::Spec(spec) => self.render_spec(spec, step),
            Task::SetCacheBudget(bytes) => {
                self.set_cache_budget(*bytes);
                Ok(None)
            }
        }
    }
}
