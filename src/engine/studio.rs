//! The studio's backend: loads models and renders with the pipeline.

use std::path::PathBuf;

use super::protocol::{Finished, OutputKey, Work};
use super::{Backend, StepHook};
use crate::core::StepView;
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
    /// Render with the loaded model.
    Render(Box<Request>),
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

/// Runs studio jobs with the loaded pipeline.
#[derive(Default)]
pub struct StudioBackend {
    pipeline: Option<Pipeline>,
}

impl Backend for StudioBackend {
    type Work = StudioJob;

    fn run(&mut self, work: &StudioJob, step: &mut StepHook<'_>) -> Result<Option<Finished>, String> {
        match &work.task {
            Task::LoadModel { path, options } => {
                self.pipeline = None;
                let pipeline = Pipeline::load(path, options).map_err(|e| e.to_string())?;
                let preview = LatentRgbMap::for_pipeline(&pipeline).map_err(|e| e.to_string())?;
                self.pipeline = Some(pipeline);
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok(Some(Finished::ModelLoaded { name, preview }))
            }
            Task::Render(request) => {
                let Some(pipeline) = &self.pipeline else {
                    return Err("no model is loaded".into());
                };
                let mut callback = |v: &StepView<'_>| step(v.index + 1, v.total, Some(v.denoised));
                let rendered = pipeline.render(request, &mut callback).map_err(|e| e.to_string())?;
                Ok(rendered.map(|r| Finished::Image {
                    rgb: r.rgb,
                    width: r.width,
                    height: r.height,
                    latent: Some(r.latent),
                }))
            }
        }
    }
}
