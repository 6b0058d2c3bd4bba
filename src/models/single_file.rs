//! Single-file Stable Diffusion checkpoints (`.safetensors` with the original LDM key names, as
//! most downloaded models are): keys are renamed to diffusers' layout on the fly over the
//! memory-mapped file, and the configs are read off the tensor shapes. SD 1.x (CLIP ViT-L text
//! encoder) and SD 2.x (OpenCLIP ViT-H) are told apart by their text encoder; inpainting
//! checkpoints (9 input channels) load as such; SDXL and other UNets are recognised and refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::clip::ClipTextConfig;
use super::pipeline::PipelineError;
use super::unet::{HeadCount, UNetConfig};
use super::vae::VaeConfig;
use crate::core::{PredictionType, SchedulerConfig};

/// How one diffusers tensor is made from a checkpoint tensor.
#[derive(Debug, Clone)]
pub(crate) enum Transform {
    /// As stored.
    Same,
    /// A 1x1 convolution kernel used as a linear weight.
    Squeeze,
    /// Part `index` of `parts` equal slices along dimension 0 (OpenCLIP's fused q/k/v).
    Slice { index: usize, parts: usize },
}

/// A weights backend that serves diffusers names from memory-mapped files under other names (an
/// LDM checkpoint; the two halves of a raw TAESD).
pub(crate) struct Renamed {
    /// The files.
    pub files: Vec<Arc<MmapedSafetensors>>,
    /// Diffusers name → (file index, key in it, transform).
    pub names: HashMap<String, (usize, String, Transform)>,
}

impl Renamed {
    fn fetch(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let Some((file, key, transform)) = self.names.get(name) else {
            return Err(candle_core::Error::CannotFindTensor { path: name.to_string() }.bt());
        };
        let Some(file) = self.files.get(*file) else {
            return Err(candle_core::Error::CannotFindTensor { path: name.to_string() }.bt());
        };
        let t = file.load(key, dev)?;
        match transform {
            Transform::Same => Ok(t),
            Transform::Squeeze => {
                let (o, i) = (t.dim(0)?, t.dim(1)?);
                t.reshape((o, i))
            }
            Transform::Slice { index, parts } => {
                let n = t.dim(0)? / parts;
                t.narrow(0, index * n, n)
            }
        }
    }
}

impl SimpleBackend for Renamed {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.fetch(name, dev)?.to_dtype(dtype)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}

/// Which Stable Diffusion generation a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// SD 1.x: CLIP ViT-L/14 text encoder, 768-wide conditioning.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H text encoder, 1024-wide conditioning.
    Sd2,
}

/// A converted single-file checkpoint, ready to build the networks.
pub struct Converted<'a> {
    /// SD 1.x or 2.x.
    pub generation: Generation,
    /// UNet config read off the shapes.
    pub unet: UNetConfig,
    /// VAE config read off the shapes.
    pub vae: VaeConfig,
    /// Text encoder config read off the shapes.
    pub text: ClipTextConfig,
    /// The schedule Stable Diffusion was trained with.
    pub scheduler: SchedulerConfig,
    /// The prediction type the generation usually has (SD 2.x single files are mostly the 768-v
    /// model; `--prediction-type eps` overrides).
    pub prediction: PredictionType,
    /// Weights under diffusers' UNet names.
    pub unet_weights: VarBuilder<'a>,
    /// Weights under diffusers' VAE names.
    pub vae_weights: VarBuilder<'a>,
    /// Weights under transformers' CLIP names.
    pub text_weights: VarBuilder<'a>,
}

fn unsupported(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Unsupported { path: path.into(), reason: reason.into() }
}

fn resnet_part(rest: &str) -> String {
    for (from, to) in [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("skip_connection", "conv_shortcut"),
    ] {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// Splits `a.b.rest` into (a, b, rest) with a and b numbers.
fn two_indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, s) = s.split_once('.')?;
    let (b, rest) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

/// The diffusers name of a UNet key (without `model.diffusion_model.`).
pub(crate) fn unet_name(key: &str, layers: usize) -> Option<String> {
    let per = layers + 1;
    if let Some(rest) = key.strip_prefix("time_embed.0.") {
        return Some(format!("time_embedding.linear_1.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("time_embed.2.") {
        return Some(format!("time_embedding.linear_2.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("input_blocks.0.0.") {
        return Some(format!("conv_in.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("out.0.") {
        return Some(format!("conv_norm_out.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("out.2.") {
        return Some(format!("conv_out.{rest}"));
    }
    if let Some(s) = key.strip_prefix("input_blocks.") {
        let (i, j, rest) = two_indices(s)?;
        let i = i.checked_sub(1)?;
        let (b, l) = (i / per, i % per);
        return Some(if let Some(tail) = rest.strip_prefix("op.") {
            format!("down_blocks.{b}.downsamplers.0.conv.{tail}")
        } else if j == 0 {
            format!("down_blocks.{b}.resnets.{l}.{}", resnet_part(rest))
        } else {
            format!("down_blocks.{b}.attentions.{l}.{rest}")
        });
    }
    if let Some(s) = key.strip_prefix("middle_block.") {
        let (j, rest) = s.split_once('.')?;
        return Some(match j {
            "0" => format!("mid_block.resnets.0.{}", resnet_part(rest)),
            "1" => format!("mid_block.attentions.0.{rest}"),
            _ => format!("mid_block.resnets.1.{}", resnet_part(rest)),
        });
    }
    if let Some(s) = key.strip_prefix("output_blocks.") {
        let (i, j, rest) = two_indices(s)?;
        let (b, l) = (i / per, i % per);
        return Some(if j == 0 {
            format!("up_blocks.{b}.resnets.{l}.{}", resnet_part(rest))
        } else if let Some(tail) = rest.strip_prefix("conv.") {
            format!("up_blocks.{b}.upsamplers.0.conv.{tail}")
        } else {
            format!("up_blocks.{b}.attentions.{l}.{rest}")
        });
    }
    None
}

/// The diffusers name of a VAE key (without `first_stage_model.`), and its transform.
pub(crate) fn vae_name(key: &str, levels: usize) -> Option<(String, Transform)> {
    let (side, rest) = key.split_once('.')?;
    if side == "quant_conv" || side == "post_quant_conv" {
        return Some((key.to_string(), Transform::Same));
    }
    let mapped = if let Some(r) = rest.strip_prefix("norm_out.") {
        format!("conv_norm_out.{r}")
    } else if let Some(s) = rest.strip_prefix("down.").or_else(|| rest.strip_prefix("up.")) {
        let (i, s) = s.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (blocks, level) =
            // An `up.N` beyond the file's levels maps to nothing (fuzz seed 2^32 + 215548).
            if rest.starts_with("down.") { ("down_blocks", i) } else { ("up_blocks", levels.checked_sub(i + 1)?) };
        if let Some(s) = s.strip_prefix("block.") {
            let (j, r) = s.split_once('.')?;
            format!("{blocks}.{level}.resnets.{j}.{}", r.replace("nin_shortcut", "conv_shortcut"))
        } else if let Some(r) = s.strip_prefix("downsample.").or_else(|| s.strip_prefix("upsample.")) {
            let sampler = if rest.starts_with("down.") { "downsamplers" } else { "upsamplers" };
            format!("{blocks}.{level}.{sampler}.0.{r}")
        } else {
            return None;
        }
    } else if let Some(r) = rest.strip_prefix("mid.block_1.") {
        format!("mid_block.resnets.0.{}", r.replace("nin_shortcut", "conv_shortcut"))
    } else if let Some(r) = rest.strip_prefix("mid.block_2.") {
        format!("mid_block.resnets.1.{}", r.replace("nin_shortcut", "conv_shortcut"))
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (part, tail) = r.split_once('.')?;
        let to = match part {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        let transform = if part != "norm" && tail == "weight" { Transform::Squeeze } else { Transform::Same };
        return Some((format!("{side}.mid_block.attentions.0.{to}.{tail}"), transform));
    } else {
        rest.to_string()
    };
    Some((format!("{side}.{mapped}"), Transform::Same))
}

/// The config of an LDM-named `AutoencoderKL` read off its shapes (keys under `prefix`), and its
/// number of levels.
pub(crate) fn ldm_vae_config(
    file: &MmapedSafetensors,
    keys: &[String],
    prefix: &str,
    path: &Path,
) -> Result<(VaeConfig, usize), PipelineError> {
    let count = |under: &str| {
        keys.iter()
            .filter_map(|k| {
                k.strip_prefix(&format!("{prefix}{under}"))?.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |m| m + 1)
    };
    let levels = count("encoder.down.");
    let vae = VaeConfig {
        block_out_channels: (0..levels)
            .map(|i| dim(file, &format!("{prefix}encoder.down.{i}.block.0.conv1.weight"), 0, path))
            .collect::<Result<_, _>>()?,
        layers_per_block: count("encoder.down.0.block."),
        latent_channels: dim(file, &format!("{prefix}decoder.conv_in.weight"), 1, path)?,
        ..VaeConfig::default()
    };
    Ok((vae, levels))
}

/// transformers' CLIP names of an OpenCLIP key (without `cond_stage_model.model.`).
fn open_clip_names(key: &str) -> Vec<(String, Transform)> {
    let one = |name: String| vec![(format!("text_model.{name}"), Transform::Same)];
    match key {
        "token_embedding.weight" => return one("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return one("embeddings.position_embedding.weight".into()),
        _ => {}
    }
    if let Some(r) = key.strip_prefix("ln_final.") {
        return one(format!("final_layer_norm.{r}"));
    }
    let Some(s) = key.strip_prefix("transformer.resblocks.") else { return Vec::new() };
    let Some((i, r)) = s.split_once('.') else { return Vec::new() };
    let layer = format!("encoder.layers.{i}");
    if let Some(kind) = r.strip_prefix("attn.in_proj_") {
        return ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(index, p)| {
                (format!("text_model.{layer}.self_attn.{p}.{kind}"), Transform::Slice { index, parts: 3 })
            })
            .collect();
    }
    for (from, to) in [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ] {
        if let Some(tail) = r.strip_prefix(from) {
            return one(format!("{layer}.{to}{tail}"));
        }
    }
    Vec::new()
}

pub(crate) fn dims(file: &MmapedSafetensors, key: &str, path: &Path) -> Result<Vec<usize>, PipelineError> {
    file.get(key)
        .map(|v| v.shape().to_vec())
        .map_err(|_| unsupported(path, format!("not a Stable Diffusion checkpoint: it has no tensor {key}")))
}

/// Dimension `index` of tensor `key`, or an error naming the tensor.
pub(crate) fn dim(
    file: &MmapedSafetensors,
    key: &str,
    index: usize,
    path: &Path,
) -> Result<usize, PipelineError> {
    let d = dims(file, key, path)?;
    d.get(index)
        .copied()
        .ok_or_else(|| unsupported(path, format!("tensor {key} has shape {d:?}, too few dimensions")))
}

/// Reads a single-file checkpoint.
pub fn convert<'a>(path: &Path, dtype: DType, device: &'a Device) -> Result<Converted<'a>, PipelineError> {
    // SAFETY: the file is memory-mapped read-only and not written while loaded.
    let file = unsafe { MmapedSafetensors::new(path) }
        .map_err(|source| PipelineError::Weights { path: path.into(), source })?;
    let keys: Vec<String> = file.tensors().into_iter().map(|(k, _)| k).collect();
    if keys.iter().any(|k| k.starts_with("conditioner.") || k.starts_with("model.diffusion_model.label_emb."))
    {
        return Err(unsupported(
            path,
            "this is an SDXL checkpoint; the studio runs Stable Diffusion 1.x and 2.x",
        ));
    }
    const UNET: &str = "model.diffusion_model.";
    let in_channels = dim(&file, &format!("{UNET}input_blocks.0.0.weight"), 1, path)?;
    if in_channels != 4 && in_channels != 9 {
        return Err(unsupported(
            path,
            format!(
                "this checkpoint's UNet takes {in_channels} input channels (an instruct-pix2pix or depth model?); \
                 the studio runs ordinary (4) and inpainting (9) checkpoints"
            ),
        ));
    }
    let generation = if file.get("cond_stage_model.model.token_embedding.weight").is_ok() {
        Generation::Sd2
    } else {
        Generation::Sd1
    };

    // UNet layout from the keys: levels = downsamplers + 1, layers from the input block count.
    let input_blocks: std::collections::BTreeSet<usize> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{UNET}input_blocks."))?.split('.').next()?.parse().ok())
        .collect();
    let downsamplers = keys.iter().filter(|k| k.starts_with(UNET) && k.ends_with(".op.weight")).count();
    let levels = downsamplers + 1;
    let n_in = input_blocks.iter().max().map_or(0, |m| m + 1);
    let resnets = n_in.checked_sub(1 + downsamplers).filter(|&r| r > 0 && r.is_multiple_of(levels));
    let Some(resnets) = resnets else {
        return Err(unsupported(path, "unrecognised UNet layout"));
    };
    let layers = resnets / levels;
    let mut block_out_channels = Vec::new();
    let mut cross = Vec::new();
    for b in 0..levels {
        let first = 1 + b * (layers + 1);
        block_out_channels.push(dim(
            &file,
            &format!("{UNET}input_blocks.{first}.0.out_layers.3.weight"),
            0,
            path,
        )?);
        cross.push(keys.iter().any(|k| k.starts_with(&format!("{UNET}input_blocks.{first}.1."))));
    }
    let context_key = keys
        .iter()
        .find(|k| k.starts_with(UNET) && k.ends_with("attn2.to_k.weight"))
        .ok_or_else(|| unsupported(path, "the UNet has no cross-attention"))?;
    let context_dim = dim(&file, context_key, 1, path)?;
    let linear_projection = keys
        .iter()
        .find(|k| k.starts_with(UNET) && k.ends_with("proj_in.weight"))
        .map(|k| dims(&file, k, path).map(|d| d.len() == 2))
        .transpose()?
        .unwrap_or(false);
    let heads = match generation {
        Generation::Sd1 => HeadCount::One(8),
        Generation::Sd2 => HeadCount::PerLevel(block_out_channels.iter().map(|c| (c / 64).max(1)).collect()),
    };
    let prediction = match generation {
        Generation::Sd1 => PredictionType::Epsilon,
        Generation::Sd2 => PredictionType::VPrediction,
    };
    let down_types =
        cross.iter().map(|&c| if c { "CrossAttnDownBlock2D" } else { "DownBlock2D" }.to_string()).collect();
    let up_types =
        cross.iter().rev().map(|&c| if c { "CrossAttnUpBlock2D" } else { "UpBlock2D" }.to_string()).collect();
    let unet = UNetConfig {
        in_channels,
        out_channels: dim(&file, &format!("{UNET}out.2.weight"), 0, path)?,
        block_out_channels,
        down_block_types: down_types,
        up_block_types: up_types,
        layers_per_block: layers,
        attention_head_dim: heads,
        cross_attention_dim: context_dim,
        use_linear_projection: linear_projection,
        sample_size: if prediction == PredictionType::VPrediction { 96 } else { 64 },
        ..UNetConfig::default()
    };

    const VAE: &str = "first_stage_model.";
    let (vae, vae_levels) = ldm_vae_config(&file, &keys, VAE, path)?;

    let (text_prefix, token_key) = match generation {
        Generation::Sd1 => {
            let p = if file
                .get("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
                .is_ok()
            {
                "cond_stage_model.transformer.text_model."
            } else {
                "cond_stage_model.transformer."
            };
            (p, format!("{p}embeddings.token_embedding.weight"))
        }
        Generation::Sd2 => {
            ("cond_stage_model.model.", "cond_stage_model.model.token_embedding.weight".to_string())
        }
    };
    let (vocab_size, hidden) = (dim(&file, &token_key, 0, path)?, dim(&file, &token_key, 1, path)?);
    let text_layers = keys
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(text_prefix)?;
            let rest = rest
                .strip_prefix("encoder.layers.")
                .or_else(|| rest.strip_prefix("transformer.resblocks."))?;
            rest.split('.').next()?.parse::<usize>().ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let (fc1_key, pos_key) = match generation {
        Generation::Sd1 => (
            format!("{text_prefix}encoder.layers.0.mlp.fc1.weight"),
            format!("{text_prefix}embeddings.position_embedding.weight"),
        ),
        Generation::Sd2 => (
            format!("{text_prefix}transformer.resblocks.0.mlp.c_fc.weight"),
            format!("{text_prefix}positional_embedding"),
        ),
    };
    let text = ClipTextConfig {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: dim(&file, &fc1_key, 0, path)?,
        // SD 2.x conditions on the penultimate layer of OpenCLIP.
        num_hidden_layers: if generation == Generation::Sd2 {
            text_layers.saturating_sub(1)
        } else {
            text_layers
        },
        num_attention_heads: (hidden / 64).max(1),
        max_position_embeddings: dim(&file, &pos_key, 0, path)?,
        hidden_act: if generation == Generation::Sd2 { "gelu" } else { "quick_gelu" }.into(),
        layer_norm_eps: 1e-5,
    };

    let mut unet_names = HashMap::new();
    let mut vae_names = HashMap::new();
    let mut text_names = HashMap::new();
    for key in &keys {
        if let Some(k) = key.strip_prefix(UNET) {
            if let Some(name) = unet_name(k, layers) {
                unet_names.insert(name, (0, key.clone(), Transform::Same));
            }
        } else if let Some(k) = key.strip_prefix(VAE) {
            if let Some((name, t)) = vae_name(k, vae_levels) {
                vae_names.insert(name, (0, key.clone(), t));
            }
        } else if let Some(k) = key.strip_prefix(text_prefix) {
            match generation {
                Generation::Sd1 => {
                    text_names.insert(format!("text_model.{k}"), (0, key.clone(), Transform::Same));
                }
                Generation::Sd2 => {
                    for (name, t) in open_clip_names(k) {
                        text_names.insert(name, (0, key.clone(), t));
                    }
                }
            }
        }
    }
    let file = Arc::new(file);
    let backend = |names| {
        VarBuilder::from_backend(
            Box::new(Renamed { files: vec![file.clone()], names }),
            dtype,
            device.clone(),
        )
    };
    let mut scheduler = SchedulerConfig::stable_diffusion();
    scheduler.class_name = Some("DDIMScheduler".into());
    scheduler.prediction_type =
        Some(if prediction == PredictionType::VPrediction { "v_prediction" } else { "epsilon" }.into());
    Ok(Converted {
        generation,
        unet,
        vae,
        text,
        scheduler,
        prediction,
        unet_weights: backend(unet_names),
        vae_weights: backend(vae_names),
        text_weights: backend(text_names),
    })
}

#[cfg(test)]
mod tests {
    use super::vae_name;

    #[test]
    fn ldm_up_levels_count_down_from_the_last_and_one_past_them_maps_to_nothing() {
        let name = |key: &str| vae_name(key, 4).map(|(name, _)| name);
        // LDM numbers the decoder's levels coarsest last; diffusers' up_blocks coarsest first.
        assert_eq!(
            name("decoder.up.0.block.1.conv1.weight").as_deref(),
            Some("decoder.up_blocks.3.resnets.1.conv1.weight")
        );
        assert_eq!(
            name("decoder.up.3.upsample.conv.bias").as_deref(),
            Some("decoder.up_blocks.0.upsamplers.0.conv.bias")
        );
        assert_eq!(name("decoder.up.4.block.0.conv1.weight"), None);
        assert_eq!(name("decoder.up.99999.block.0.conv1.weight"), None);
    }
}
