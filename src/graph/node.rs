//! The node kinds of the studio's graph, their settings, and their typed pins.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::SamplerKind;
pub use crate::engine::spec::ModelSource;
use crate::sketch::Canvas;

/// What travels along a wire. A wire joins an output and an input of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PinType {
    /// A loaded diffusion model.
    Model,
    /// A prompt and negative prompt for a model.
    Conditioning,
    /// Steps, spacing, sigmas and eta.
    Schedule,
    /// Starting noise (a seed, an inverted image, or a path between two of them).
    Latent,
    /// A picture (with the SDEdit strength it should be edited at).
    Image,
    /// Where an edit may change the picture.
    Mask,
    /// Word regions: phrases painted onto parts of the picture.
    Regions,
}

impl PinType {
    /// Its name in tooltips.
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Conditioning => "conditioning",
            Self::Schedule => "schedule",
            Self::Latent => "latent",
            Self::Image => "image",
            Self::Mask => "mask",
            Self::Regions => "regions",
        }
    }
}

/// One input or output of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// Its label.
    pub name: &'static str,
    /// What it carries.
    pub ty: PinType,
    /// Whether a node works with this input unconnected (outputs: always true).
    pub optional: bool,
}

/// A required pin, as a constant (so pin lists are `'static`).
macro_rules! pin {
    ($name:literal, $ty:expr) => {
        Pin { name: $name, ty: $ty, optional: false }
    };
}

/// An optional input.
macro_rules! optional {
    ($name:literal, $ty:expr) => {
        Pin { name: $name, ty: $ty, optional: true }
    };
}

/// The most sampling or inversion steps a graph may ask for: a model's training steps.
pub const MAX_STEPS: usize = 1000;
/// The largest guidance scale a graph may hold, either sign.
pub const MAX_GUIDANCE: f64 = 100.0;
/// The most frames an Interpolate node may hold.
pub const MAX_FRAMES: usize = 64;

/// Model node: which checkpoint to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelNode {
    /// Built-in, or a folder or file.
    pub source: ModelSource,
    /// An autoencoder in place of the model's (`--vae`): a folder or file. A TAESD decodes the
    /// step previews too.
    pub vae: Option<PathBuf>,
    /// Whether that autoencoder also makes the pictures, not only the previews.
    pub vae_finals: bool,
}

impl Default for ModelNode {
    fn default() -> Self {
        Self { source: ModelSource::default(), vae: None, vae_finals: true }
    }
}

/// The largest LoRA strength a graph may hold, either sign.
pub const MAX_LORA_STRENGTH: f64 = 10.0;

/// LoRA node: a LoRA file merged into the model wired in, at a strength; chain several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraNode {
    /// The `.safetensors` file (kohya-ss or diffusers/PEFT).
    pub path: Option<PathBuf>,
    /// 1 as trained, 0 off, negative to steer away.
    pub strength: f64,
}

impl Default for LoraNode {
    fn default() -> Self {
        Self { path: None, strength: 1.0 }
    }
}

/// Prompt node: what to draw and what to avoid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptNode {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt ("" = unconditional).
    pub negative: String,
}

impl Default for PromptNode {
    fn default() -> Self {
        Self { prompt: "sunset over snowy mountains with a lake".into(), negative: String::new() }
    }
}

/// How sigmas are placed along the chosen timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Sigmas {
    /// The model's scheduler config decides.
    #[default]
    Model,
    /// Karras et al.'s rho = 7 sigmas (Euler family, DPM-Solver++).
    Karras,
}

/// Timestep spacing, or the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Spacing {
    /// From the model's `scheduler_config.json`.
    #[default]
    Model,
    /// diffusers' "leading".
    Leading,
    /// diffusers' "trailing".
    Trailing,
    /// diffusers' "linspace".
    Linspace,
}

/// Schedule node: how many steps and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleNode {
    /// Sigma placement.
    pub sigmas: Sigmas,
    /// Inference steps.
    pub steps: usize,
    /// Timestep spacing.
    pub spacing: Spacing,
    /// DDIM's eta (0 = deterministic).
    pub eta: f64,
}

impl Default for ScheduleNode {
    fn default() -> Self {
        Self { sigmas: Sigmas::Model, steps: 20, spacing: Spacing::Model, eta: 0.0 }
    }
}

/// Sampler node: the algorithm, guidance and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerNode {
    /// The sampling algorithm.
    pub algorithm: SamplerKind,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Guidance rescale phi in [0, 1].
    pub rescale: f64,
    /// Seed of the starting noise (when no latent is wired in).
    pub seed: u64,
}

impl Default for SamplerNode {
    fn default() -> Self {
        Self { algorithm: SamplerKind::Ddim, guidance: 5.0, rescale: 0.0, seed: 1 }
    }
}

/// Image node: a picture file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageNode {
    /// The file (PNG, JPEG, BMP, WebP).
    pub path: Option<PathBuf>,
    /// SDEdit strength when it feeds a sampler.
    pub strength: f64,
}

impl Default for ImageNode {
    fn default() -> Self {
        Self { path: None, strength: 0.6 }
    }
}

/// DDIM Invert node: turns a picture back into the noise DDIM maps to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InvertNode {
    /// Inversion steps.
    pub steps: usize,
    /// Guidance during inversion (1 inverts most faithfully).
    pub guidance: f64,
}

impl Default for InvertNode {
    fn default() -> Self {
        Self { steps: 20, guidance: 1.0 }
    }
}

/// Interpolate node: a path between two noises (seeds or inverted images), and optionally
/// between two prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterpolateNode {
    /// Seed of endpoint A when its input is not wired.
    pub seed_a: u64,
    /// Seed of endpoint B when its input is not wired.
    pub seed_b: u64,
    /// A second prompt to blend toward along the path ("" = none).
    pub prompt_b: String,
    /// Frames in the filmstrip.
    pub frames: usize,
    /// Where on the path the shown picture is, in [0, 1].
    pub position: f64,
}

impl Default for InterpolateNode {
    fn default() -> Self {
        Self { seed_a: 1, seed_b: 2, prompt_b: String::new(), frames: 9, position: 0.0 }
    }
}

/// Output node: shows (and optionally saves) a picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OutputNode {}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Node {
    /// A checkpoint.
    Model(ModelNode),
    /// A LoRA merged into the model.
    Lora(LoraNode),
    /// Prompt and negative prompt.
    Prompt(PromptNode),
    /// Steps, spacing, eta.
    Schedule(ScheduleNode),
    /// Algorithm, guidance, seed.
    Sampler(SamplerNode),
    /// A stroke canvas for SDEdit.
    Canvas(Canvas),
    /// A picture file.
    Image(ImageNode),
    /// DDIM inversion.
    Invert(InvertNode),
    /// Interpolation between noises.
    Interpolate(InterpolateNode),
    /// The shown picture.
    Output(OutputNode),
}

impl Node {
    /// Every kind, as the "add node" menu lists them.
    pub fn all_kinds() -> Vec<Node> {
        vec![
            Node::Model(ModelNode::default()),
            Node::Lora(LoraNode::default()),
            Node::Prompt(PromptNode::default()),
            Node::Schedule(ScheduleNode::default()),
            Node::Sampler(SamplerNode::default()),
            Node::Canvas(Canvas::default()),
            Node::Image(ImageNode::default()),
            Node::Invert(InvertNode::default()),
            Node::Interpolate(InterpolateNode::default()),
            Node::Output(OutputNode::default()),
        ]
    }

    /// Its title.
    pub fn title(&self) -> &'static str {
        match self {
            Self::Model(_) => "Model",
            Self::Lora(_) => "LoRA",
            Self::Prompt(_) => "Prompt",
            Self::Schedule(_) => "Schedule",
            Self::Sampler(_) => "Sampler",
            Self::Canvas(_) => "SDEdit Canvas",
            Self::Image(_) => "Image",
            Self::Invert(_) => "DDIM Invert",
            Self::Interpolate(_) => "Interpolate",
            Self::Output(_) => "Output",
        }
    }

    /// Checks the values a file gave this node against what the studio can run (the sliders
    /// offer less): steps, strengths, guidance, frames, and every stroke of a canvas. The reason
    /// names the field and the value.
    pub fn check(&self) -> Result<(), String> {
        use crate::sketch::within;
        let steps = |name: &str, n: usize| {
            if (1..=MAX_STEPS).contains(&n) {
                Ok(())
            } else {
                Err(format!("{name} = {n} is outside 1..={MAX_STEPS}"))
            }
        };
        match self {
            Self::Model(_) | Self::Prompt(_) | Self::Output(_) => Ok(()),
            Self::Lora(l) => within("strength", l.strength, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH),
            Self::Schedule(s) => {
                steps("steps", s.steps)?;
                within("eta", s.eta, 0.0, 1.0)
            }
            Self::Sampler(s) => {
                within("guidance", s.guidance, -MAX_GUIDANCE, MAX_GUIDANCE)?;
                within("rescale", s.rescale, 0.0, 1.0)
            }
            Self::Canvas(c) => c.check(),
            Self::Image(i) => within("strength", i.strength, 0.0, 1.0),
            Self::Invert(i) => {
                steps("steps", i.steps)?;
                within("guidance", i.guidance, -MAX_GUIDANCE, MAX_GUIDANCE)
            }
            Self::Interpolate(i) => {
                if !(2..=MAX_FRAMES).contains(&i.frames) {
                    return Err(format!("frames = {} is outside 2..={MAX_FRAMES}", i.frames));
                }
                within("position", i.position, 0.0, 1.0)
            }
        }
    }

    /// Its inputs, in order.
    pub fn inputs(&self) -> &'static [Pin] {
        use PinType::*;
        match self {
            Self::Model(_) | Self::Schedule(_) | Self::Image(_) => &[],
            Self::Prompt(_) | Self::Lora(_) => &[pin!("model", Model)],
            Self::Sampler(_) => &[
                pin!("conditioning", Conditioning),
                optional!("schedule", Schedule),
                optional!("noise", Latent),
                optional!("init image", Image),
                optional!("mask", Mask),
                optional!("regions", Regions),
            ],
            Self::Canvas(_) => &[optional!("base image", Image)],
            Self::Invert(_) => &[pin!("conditioning", Conditioning), pin!("image", Image)],
            Self::Interpolate(_) => &[optional!("latent A", Latent), optional!("latent B", Latent)],
            Self::Output(_) => &[pin!("image", Image)],
        }
    }

    /// Its outputs, in order.
    pub fn outputs(&self) -> &'static [Pin] {
        use PinType::*;
        match self {
            Self::Model(_) | Self::Lora(_) => &[pin!("model", Model)],
            Self::Prompt(_) => &[pin!("conditioning", Conditioning)],
            Self::Schedule(_) => &[pin!("schedule", Schedule)],
            Self::Sampler(_) => &[pin!("image", Image)],
            Self::Canvas(_) => &[pin!("image", Image), pin!("mask", Mask), pin!("regions", Regions)],
            Self::Image(_) => &[pin!("image", Image)],
            Self::Invert(_) | Self::Interpolate(_) => &[pin!("latent", Latent)],
            Self::Output(_) => &[],
        }
    }
}
