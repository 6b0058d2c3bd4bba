//! Render specifications: plain data (no tensors) describing a whole render, what the graph
//! evaluator produces and the studio backend runs. Being plain data they serialise, compare and
//! hash, which keys the caches of inverted latents and interpolation frames.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::core::interpolate::slerp;
use crate::core::{Guidance, SamplerKind, SamplerOptions, SeededNoise, TimestepSpacing};
use crate::edit_mask::{CellRule, EditMask};
use crate::imageio::{read_image, resize, Rgb};
use crate::models::pipeline::{InitImage, Pipeline, Request};
use crate::models::regions::Region;
use crate::sketch::Canvas;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ModelSource {
    /// The model that ships with the studio.
    #[default]
    Builtin,
    /// Its live student (`assets/builtin-live`): a few-step distilled copy for painting live.
    BuiltinLive,
    /// A diffusers folder or a single `.safetensors` file.
    Path(PathBuf),
}

impl ModelSource {
    /// A short name for the node and PNG metadata.
    pub fn name(&self) -> String {
        match self {
            Self::Builtin => "built-in".into(),
            Self::BuiltinLive => "built-in live".into(),
            Self::Path(path) => path
                .file_name()
                .map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned()),
        }
    }

    /// The folder or file to load.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Builtin => builtin_model_dir(BUILTIN),
            Self::BuiltinLive => builtin_model_dir(BUILTIN_LIVE),
            Self::Path(path) => path.clone(),
        }
    }

    /// What a command line's `--model` names: `builtin`, `builtin-live`, or a path.
    pub fn from_arg(arg: &Path) -> Self {
        match arg.to_str() {
            Some(BUILTIN) => Self::Builtin,
            Some(BUILTIN_LIVE) => Self::BuiltinLive,
            _ => Self::Path(arg.to_path_buf()),
        }
    }
}

/// An autoencoder in place of the model's own: a TAESD also decodes the step previews.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VaeSpec {
    /// Its folder or file (what `--vae` takes).
    pub path: PathBuf,
    /// Whether it also encodes and decodes the pictures (else only previews, which needs a TAESD).
    pub finals: bool,
}

/// A LoRA file merged into the model, with its strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// How much of it: 1 as trained, 0 off, negative to steer away.
    pub strength: f64,
}

impl LoraSpec {
    /// `FILE[:STRENGTH]`, strength 1 when omitted (a colon that is followed by no number, as in a
    /// Windows drive letter, belongs to the file name).
    pub fn parse(arg: &str) -> Self {
        if let Some((file, strength)) = arg.rsplit_once(':') {
            if let Ok(strength) = strength.trim().parse::<f64>() {
                return Self { path: file.into(), strength };
            }
        }
        Self { path: arg.into(), strength: 1.0 }
    }
}

/// Where a word region is painted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegionMask {
    /// A picture, white inside (its mean brightness per pixel); any size, resampled.
    File(PathBuf),
    /// Word region `index` of a canvas.
    Canvas {
        /// The canvas.
        canvas: Canvas,
        /// Which of its regions.
        index: usize,
    },
}

/// Paint with words: a phrase and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSpec {
    /// Where.
    pub mask: RegionMask,
    /// What.
    pub phrase: String,
    /// How strongly.
    pub weight: f64,
}

impl RegionSpec {
    /// `MASK.png:PHRASE[:WEIGHT]` as `--region` takes it: the file is everything up to the
    /// first `:` after a `.png` (or the first `:`), a last `:NUMBER` is the weight
    /// ([`DEFAULT_WEIGHT`](crate::models::regions::DEFAULT_WEIGHT) without one).
    pub fn parse(arg: &str) -> Result<Self, String> {
        let lower = arg.to_lowercase();
        let split = lower.find(".png:").map(|i| i + 4).or_else(|| arg.find(':'));
        let Some(split) = split else {
            return Err(format!("--region {arg:?}: expected MASK.png:PHRASE[:WEIGHT]"));
        };
        let (file, rest) = (&arg[..split], &arg[split + 1..]);
        let (phrase, weight) = match rest.rsplit_once(':') {
            Some((phrase, w)) if w.trim().parse::<f64>().is_ok() => (phrase, w.trim().parse::<f64>().ok()),
            _ => (rest, None),
        };
        let weight = weight.unwrap_or(crate::models::regions::DEFAULT_WEIGHT);
        let max = crate::models::regions::MAX_WEIGHT;
        if !(weight.is_finite() && (0.0..=max).contains(&weight)) {
            return Err(format!("--region {arg:?}: weight {weight} is outside [0, {max}]"));
        }
        Ok(Self { mask: RegionMask::File(file.into()), phrase: phrase.trim().to_string(), weight })
    }

    /// Every shown word region of `canvas` with a phrase, as specs.
    pub fn from_canvas(canvas: &Canvas) -> Vec<Self> {
        canvas
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.hidden)
            .map(|(index, r)| Self {
                mask: RegionMask::Canvas { canvas: canvas.clone(), index },
                phrase: r.phrase.clone(),
                weight: r.weight,
            })
            .collect()
    }
}

/// A region spec read or painted at `width × height` (a mask file keeps its own size; the
/// pipeline resamples it).
pub fn region(spec: &RegionSpec, width: usize, height: usize) -> Result<Region, SpecError> {
    let (w, h, coverage) = match &spec.mask {
        RegionMask::File(path) => {
            let image = read_image(path)?;
            let coverage = image
                .data
                .chunks_exact(3)
                .map(|p| (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / (3.0 * 255.0))
                .collect();
            (image.width, image.height, coverage)
        }
        RegionMask::Canvas { canvas, index } => {
            let raster = canvas.rasterize(width, height, None);
            let cells = raster.regions.get(*index).map(|c| c.iter().map(|&v| f32::from(v) / 255.0).collect());
            (width, height, cells.unwrap_or_else(|| vec![0.0; width * height]))
        }
    };
    Ok(Region { width: w, height: h, coverage, phrase: spec.phrase.clone(), weight: spec.weight })
}

/// The built-in model's name on command lines and its folder under `assets/`.
pub const BUILTIN: &str = "builtin";

/// The live student's name on command lines and its folder under `assets/`.
pub const BUILTIN_LIVE: &str = "builtin-live";

/// Where a built-in model (`name` = [`BUILTIN`] or [`BUILTIN_LIVE`]) lives: `assets/<name>`
/// beside the executable when installed (packaging puts it there), otherwise in the source tree.
pub fn builtin_model_dir(name: &str) -> PathBuf {
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("assets").join(name)))
        .filter(|dir| dir.join("model_index.json").is_file());
    installed.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(name))
}

/// A picture to start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageSpec {
    /// A file, resized to the render size.
    File(PathBuf),
    /// Strokes over a base picture (or the canvas background).
    Canvas {
        /// The strokes.
        canvas: Canvas,
        /// What they are painted over.
        base: Option<Box<ImageSpec>>,
    },
}

/// Starting noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NoiseSpec {
    /// Seeded Gaussian noise.
    Seed(u64),
    /// The noise DDIM inversion finds for a picture.
    Inverted {
        /// The picture.
        image: ImageSpec,
        /// Prompt the inversion is conditioned on.
        prompt: String,
        /// Guidance scale during inversion.
        guidance: f64,
        /// Inversion steps.
        steps: usize,
    },
    /// Spherical interpolation between two noises.
    Slerp {
        /// t = 0.
        a: Box<NoiseSpec>,
        /// t = 1.
        b: Box<NoiseSpec>,
        /// Position in [0, 1].
        t: f64,
    },
}

/// An SDEdit start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitSpec {
    /// The picture.
    pub image: ImageSpec,
    /// Strength in (0, 1].
    pub strength: f64,
    /// The canvas whose mask layer limits the edit (ignored when it has no mask strokes).
    pub mask: Option<Canvas>,
}

/// A whole render, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderSpec {
    /// The model.
    pub model: ModelSource,
    /// LoRA files merged into it (older specs have none).
    #[serde(default)]
    pub loras: Vec<LoraSpec>,
    /// An autoencoder in place of the model's (older specs have none).
    #[serde(default)]
    pub vae: Option<VaeSpec>,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative: String,
    /// A second prompt and how far toward it to blend the conditioning.
    pub prompt_to: Option<(String, f64)>,
    /// Algorithm.
    pub sampler: SamplerKind,
    /// Steps (the model's default when `None`).
    pub steps: Option<usize>,
    /// diffusers' spacing name, or the model's.
    pub spacing: Option<String>,
    /// Karras sigmas, or the model's choice.
    pub karras: Option<bool>,
    /// DDIM eta.
    pub eta: f64,
    /// Guidance scale.
    pub guidance: f64,
    /// Guidance rescale.
    pub rescale: f64,
    /// Starting noise; its seed also seeds stochastic samplers.
    pub noise: NoiseSpec,
    /// SDEdit start.
    pub init: Option<InitSpec>,
    /// Paint with words (older specs have none).
    #[serde(default)]
    pub regions: Vec<RegionSpec>,
}

impl RenderSpec {
    /// This render as Live mode draws it: the built-in model's renders move to its few-step
    /// student with the student's own sampler and steps (its folder's defaults). Other models'
    /// renders are left as they are: an LCM or Turbo model is already fast, and which sampler
    /// suits a user's model is the user's choice.
    pub fn on_live_model(&self) -> RenderSpec {
        match self.model {
            ModelSource::Builtin | ModelSource::BuiltinLive => RenderSpec {
                model: ModelSource::BuiltinLive,
                sampler: SamplerKind::Lcm,
                steps: None,
                spacing: None,
                karras: None,
                eta: 0.0,
                ..self.clone()
            },
            ModelSource::Path(_) => self.clone(),
        }
    }

    /// A stable text key for caches.
    pub fn key(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The seed stochastic samplers draw from: the first seed in the noise.
    pub fn seed(&self) -> u64 {
        fn first(noise: &NoiseSpec) -> u64 {
            match noise {
                NoiseSpec::Seed(s) => *s,
                NoiseSpec::Inverted { .. } => 0,
                NoiseSpec::Slerp { a, .. } => first(a),
            }
        }
        first(&self.noise)
    }

    /// AUTOMATIC1111's `parameters` text for this render.
    pub fn a1111_parameters(&self, steps: usize, size: (usize, usize)) -> String {
        let mut text = self.prompt.clone();
        // LoRAs as A1111 writes them: a `<lora:NAME:STRENGTH>` tag in the prompt.
        for lora in &self.loras {
            let name = lora.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            text.push_str(&format!(" <lora:{name}:{}>", lora.strength));
        }
        if !self.negative.is_empty() {
            text.push_str(&format!("\nNegative prompt: {}", self.negative));
        }
        text.push_str(&format!(
            "\nSteps: {steps}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
            self.sampler.a1111_name(),
            self.guidance,
            self.seed(),
            size.0,
            size.1,
            self.model.name()
        ));
        if let Some(init) = &self.init {
            text.push_str(&format!(", Denoising strength: {}", init.strength));
        }
        text
    }
}

/// Turning a spec into tensors failed.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A picture could not be read.
    #[error(transparent)]
    Image(#[from] crate::imageio::ImageError),
    /// The pipeline refused it.
    #[error(transparent)]
    Pipeline(#[from] crate::models::pipeline::PipelineError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A diffusion-core check failed.
    #[error(transparent)]
    Core(#[from] crate::core::CoreError),
}

/// Reads or paints a picture at `width × height`.
pub fn raster(spec: &ImageSpec, width: usize, height: usize) -> Result<Rgb, SpecError> {
    Ok(match spec {
        ImageSpec::File(path) => resize(&read_image(path)?, width, height),
        ImageSpec::Canvas { canvas, base } => {
            let base = base.as_deref().map(|b| raster(b, width, height)).transpose()?;
            let painted = canvas.rasterize(width, height, base.as_ref().map(|b| b.data.as_slice()));
            Rgb { width, height, data: painted.rgb }
        }
    })
}

/// An RGB picture as a `[1, 3, H, W]` tensor in [-1, 1].
pub fn rgb_tensor(image: &Rgb) -> Result<Tensor, candle_core::Error> {
    let data: Vec<f32> = image.data.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(data, (1, image.height, image.width, 3), &Device::Cpu)?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

/// The edit mask of `canvas` at the model's size: unblurred, a latent cell is edited when any
/// pixel of it is painted; its mask blur softens the edge. `None` when it has no mask strokes.
pub fn edit_mask(canvas: &Canvas, pipeline: &Pipeline) -> Result<Option<EditMask>, SpecError> {
    if !canvas.has_mask() {
        return Ok(None);
    }
    let size = pipeline.image_size();
    let raster = canvas.rasterize(size, size, None);
    let coverage: Vec<f32> = raster.mask.iter().map(|&m| if m > 0 { 1.0 } else { 0.0 }).collect();
    Ok(Some(EditMask::new(&coverage, size, size, pipeline.vae_factor(), canvas.mask_blur, CellRule::Any)?))
}

/// Everything but the noise, as a pipeline request (the noise needs the inversion cache).
pub fn request(spec: &RenderSpec, pipeline: &Pipeline) -> Result<Request, SpecError> {
    let size = pipeline.image_size();
    let init_image = match &spec.init {
        None => None,
        Some(init) => Some(InitImage {
            image: rgb_tensor(&raster(&init.image, size, size)?)?,
            strength: init.strength,
            mask: init.mask.as_ref().map(|c| edit_mask(c, pipeline)).transpose()?.flatten(),
        }),
    };
    let spacing = spec.spacing.as_deref().map(TimestepSpacing::parse).transpose()?;
    Ok(Request {
        prompt: spec.prompt.clone(),
        negative: spec.negative.clone(),
        sampler: spec.sampler,
        options: SamplerOptions { spacing, karras: spec.karras, eta: spec.eta },
        steps: spec.steps.unwrap_or(pipeline.defaults().steps),
        // A distilled model's guidance control stops at the scales it was trained on.
        guidance: Guidance {
            scale: pipeline.clamp_guidance(spec.guidance),
            rescale: spec.rescale,
            interval: None,
        },
        seed: spec.seed(),
        size: None,
        init_latent: None,
        init_image,
        prompt_to: spec.prompt_to.clone(),
        regions: spec.regions.iter().map(|r| region(r, size, size)).collect::<Result<_, _>>()?,
    })
}

/// Seeded unit noise of the model's latent shape.
pub fn seeded_latent(seed: u64, pipeline: &Pipeline) -> Result<Tensor, SpecError> {
    let l = pipeline.image_size() / pipeline.vae_factor();
    Ok(SeededNoise::new(seed).tensor(&[1, pipeline.latent_channels(), l, l], DType::F32, &Device::Cpu)?)
}

/// Slerps two resolved noises.
pub fn blend(a: &Tensor, b: &Tensor, t: f64) -> Result<Tensor, SpecError> {
    Ok(slerp(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?, t)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lora_argument_is_a_file_with_an_optional_strength_after_its_last_colon() {
        let parsed = |arg: &str| {
            let l = LoraSpec::parse(arg);
            (l.path.to_string_lossy().into_owned(), l.strength)
        };
        assert_eq!(parsed("style.safetensors"), ("style.safetensors".into(), 1.0));
        assert_eq!(parsed("style.safetensors:0.6"), ("style.safetensors".into(), 0.6));
        assert_eq!(parsed("a:b.safetensors:-1.5"), ("a:b.safetensors".into(), -1.5));
        assert_eq!(parsed(r"C:\loras\style.safetensors"), (r"C:\loras\style.safetensors".into(), 1.0));
    }

    #[test]
    fn a_region_argument_is_a_mask_a_phrase_and_an_optional_weight() {
        let parsed = |arg: &str| {
            let r = RegionSpec::parse(arg).unwrap();
            let RegionMask::File(path) = r.mask else { unreachable!() };
            (path.to_string_lossy().into_owned(), r.phrase, r.weight)
        };
        let default = crate::models::regions::DEFAULT_WEIGHT;
        assert_eq!(parsed("sun.png:a bright sun"), ("sun.png".into(), "a bright sun".into(), default));
        assert_eq!(parsed("sun.png:a bright sun:2.5"), ("sun.png".into(), "a bright sun".into(), 2.5));
        assert_eq!(
            parsed(r"C:\masks\Sun.PNG:a sun: at noon"),
            (r"C:\masks\Sun.PNG".into(), "a sun: at noon".into(), default)
        );
        assert!(RegionSpec::parse("sun.png").is_err());
        assert!(RegionSpec::parse("sun.png:a sun:-1").unwrap_err().contains("weight -1"));
        assert!(RegionSpec::parse("sun.png:a sun:1e9").is_err());
    }

    #[test]
    fn canvas_regions_become_specs_and_masks_of_their_strokes() {
        use crate::sketch::{Layer, Stroke, Tool, WordRegion};
        let mut canvas = Canvas { strokes: vec![], ..Canvas::default() };
        canvas.regions = vec![
            WordRegion { phrase: "a calm lake".into(), weight: 2.0, hidden: false },
            WordRegion { phrase: "hidden".into(), weight: 1.0, hidden: true },
        ];
        canvas.push(Stroke {
            layer: Layer::Region(0),
            tool: Tool::Fill,
            color: [0, 0, 0],
            radius: 0.1,
            points: vec![[0.5, 0.5, 1.0]],
        });
        let specs = RegionSpec::from_canvas(&canvas);
        assert_eq!(specs.len(), 1, "hidden regions are left out");
        assert_eq!((specs[0].phrase.as_str(), specs[0].weight), ("a calm lake", 2.0));
        let r = region(&specs[0], 8, 8).unwrap();
        assert_eq!((r.width, r.height), (8, 8));
        assert!(r.coverage.iter().all(|&c| c == 1.0), "the fill covers the canvas");
    }
}
