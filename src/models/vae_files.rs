//! Autoencoders in single files, as users download them to swap a model's VAE: madebyollin's raw
//! TAESD halves (`taesd_encoder.safetensors` + `taesd_decoder.safetensors`: `torch.nn.Sequential`
//! indices, the decoder's layer 0 being its clamp, so its indices are one above diffusers'
//! `decoder.layers.N`; they work in [0, 1] where diffusers' `AutoencoderTiny` converts from and to
//! [-1, 1] around the same weights), a diffusers `AutoencoderTiny` or `AutoencoderKL` weights file,
//! and LDM-named KL files (`encoder.down.0.block.0…`, with or without `first_stage_model.`). The
//! config is read off the tensor shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::autoencoder::AutoencoderConfig;
use super::pipeline::PipelineError;
use super::single_file::{dim, dims, ldm_vae_config, vae_name, Renamed, Transform};
use super::tiny_vae::TinyVaeConfig;
use super::vae::VaeConfig;

fn unsupported(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Unsupported { path: path.into(), reason: reason.into() }
}

fn open(path: &Path) -> Result<(Arc<MmapedSafetensors>, Vec<String>), PipelineError> {
    // SAFETY: read-only memory map of a file the studio never writes while it is loaded.
    let file = unsafe { MmapedSafetensors::new(path) }
        .map_err(|source| PipelineError::Weights { path: path.into(), source })?;
    let keys = file.tensors().into_iter().map(|(k, _)| k).collect();
    Ok((Arc::new(file), keys))
}

/// The config and weights of the autoencoder in the file `path`.
pub fn load(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(AutoencoderConfig, VarBuilder<'static>), PipelineError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "safetensors" {
        return Err(unsupported(
            path,
            "expected a .safetensors autoencoder (.pth/.pt/.ckpt files are Python pickles, which the studio does \
             not open: convert with `python -c \"import torch, safetensors.torch as s; \
             s.save_file(torch.load('IN.pth', map_location='cpu'), 'OUT.safetensors')\"`)",
        ));
    }
    let (file, keys) = open(path)?;
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    let renamed =
        |files, names| VarBuilder::from_backend(Box::new(Renamed { files, names }), dtype, device.clone());
    if has("encoder.layers.") || has("decoder.layers.") {
        let shapes = shapes(&file, &keys, path)?;
        let config = tiny_config(&shapes, path)?;
        let names = keys.iter().map(|k| (k.clone(), (0, k.clone(), Transform::Same))).collect();
        return Ok((AutoencoderConfig::Tiny(config), renamed(vec![file], names)));
    }
    if keys.iter().all(|k| k.split('.').next().is_some_and(|i| i.parse::<usize>().is_ok()))
        && !keys.is_empty()
    {
        return raw_taesd(path, file, &keys, dtype, device);
    }
    for prefix in ["", "first_stage_model."] {
        if has(&format!("{prefix}encoder.down.")) {
            let (config, levels) = ldm_vae_config(&file, &keys, prefix, path)?;
            let names = keys
                .iter()
                .filter_map(|k| {
                    let (name, t) = vae_name(k.strip_prefix(prefix)?, levels)?;
                    Some((name, (0, k.clone(), t)))
                })
                .collect();
            return Ok((AutoencoderConfig::Kl(config), renamed(vec![file], names)));
        }
    }
    if has("encoder.down_blocks.") {
        let count = |under: &str| {
            keys.iter()
                .filter_map(|k| k.strip_prefix(under)?.split('.').next()?.parse::<usize>().ok())
                .max()
                .map_or(0, |m| m + 1)
        };
        let levels = count("encoder.down_blocks.");
        let config = VaeConfig {
            block_out_channels: (0..levels)
                .map(|i| dim(&file, &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"), 0, path))
                .collect::<Result<_, _>>()?,
            layers_per_block: count("encoder.down_blocks.0.resnets."),
            latent_channels: dim(&file, "decoder.conv_in.weight", 1, path)?,
            ..VaeConfig::default()
        };
        let names = keys.iter().map(|k| (k.clone(), (0, k.clone(), Transform::Same))).collect();
        return Ok((AutoencoderConfig::Kl(config), renamed(vec![file], names)));
    }
    Err(unsupported(
        path,
        "not an autoencoder file (expected TAESD, AutoencoderTiny, AutoencoderKL or LDM VAE tensors)",
    ))
}

/// Shapes by name.
fn shapes(
    file: &MmapedSafetensors,
    keys: &[String],
    path: &Path,
) -> Result<HashMap<String, Vec<usize>>, PipelineError> {
    keys.iter().map(|k| Ok((k.clone(), dims(file, k, path)?))).collect()
}

/// One layer of a TAESD half, as its weights show it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A convolution: (input, output) channels.
    Conv(usize, usize),
    /// A residual block of this width.
    Block(usize),
    /// A layer without weights (ReLU, upsampling, the raw decoder's clamp).
    Plain,
}

/// The layers of `half` (`encoder` or `decoder`) under diffusers' names, by index.
fn layers(shapes: &HashMap<String, Vec<usize>>, half: &str, path: &Path) -> Result<Vec<Kind>, PipelineError> {
    let mut by_index: BTreeMap<usize, Kind> = BTreeMap::new();
    for (name, shape) in shapes {
        let Some(rest) = name.strip_prefix(&format!("{half}.layers.")) else { continue };
        let Some((i, tail)) = rest.split_once('.') else { continue };
        let Ok(i) = i.parse::<usize>() else { continue };
        let kind = match (tail, shape.as_slice()) {
            ("weight", [o, c, _, _]) => Kind::Conv(*c, *o),
            ("conv.0.weight", [o, _, _, _]) => Kind::Block(*o),
            _ => continue,
        };
        by_index.insert(i, kind);
    }
    let Some(&last) = by_index.keys().last() else {
        return Err(unsupported(path, format!("no {half} layers in this autoencoder")));
    };
    Ok((0..=last).map(|i| by_index.get(&i).copied().unwrap_or(Kind::Plain)).collect())
}

/// An `AutoencoderTiny` config from its layers' shapes (diffusers' names).
fn tiny_config(shapes: &HashMap<String, Vec<usize>>, path: &Path) -> Result<TinyVaeConfig, PipelineError> {
    let bad = |what: &str| unsupported(path, format!("not a TAESD-style autoencoder: {what}"));
    let encoder = layers(shapes, "encoder", path)?;
    let decoder = layers(shapes, "decoder", path)?;
    // Encoder: per level a convolution (stride 2 after the first) and its blocks; then the
    // convolution to the latent.
    let (Some(Kind::Conv(image_in, _)), Some(Kind::Conv(_, latent))) =
        (encoder.first().copied(), encoder.last().copied())
    else {
        return Err(bad("its encoder does not start and end with a convolution"));
    };
    let (mut enc_widths, mut enc_blocks) = (Vec::new(), Vec::new());
    for kind in &encoder[..encoder.len() - 1] {
        match kind {
            Kind::Conv(_, o) => {
                enc_widths.push(*o);
                enc_blocks.push(0);
            }
            Kind::Block(_) => {
                *enc_blocks.last_mut().ok_or_else(|| bad("a block before the first convolution"))? += 1
            }
            Kind::Plain => return Err(bad("a layer without weights in its encoder")),
        }
    }
    // Decoder: a convolution from the latent, then per level its blocks and a convolution.
    let Some(Kind::Conv(latent_in, first_width)) = decoder.first().copied() else {
        return Err(bad("its decoder does not start with a convolution"));
    };
    let Some(Kind::Conv(_, image_out)) = decoder.last().copied() else {
        return Err(bad("its decoder does not end with a convolution"));
    };
    let (mut dec_widths, mut dec_blocks) = (vec![first_width], vec![0]);
    for (i, kind) in decoder.iter().enumerate().skip(1) {
        match kind {
            Kind::Block(_) => *dec_blocks.last_mut().ok_or_else(|| bad("decoder levels"))? += 1,
            Kind::Conv(_, o) if i + 1 < decoder.len() => {
                dec_widths.push(*o);
                dec_blocks.push(0);
            }
            _ => {}
        }
    }
    if latent_in != latent || image_in % 3 != 0 || image_in != image_out {
        return Err(bad("its encoder and decoder do not fit together"));
    }
    let patch = (1..=16).find(|p| p * p * 3 == image_in).ok_or_else(|| bad("its image channels"))?;
    Ok(TinyVaeConfig {
        encoder_block_out_channels: enc_widths,
        num_encoder_blocks: enc_blocks,
        decoder_block_out_channels: dec_widths,
        num_decoder_blocks: dec_blocks,
        latent_channels: latent,
        patch_size: patch,
        scaling_factor: 1.0,
        ..TinyVaeConfig::default()
    })
}

/// The other half's file of a raw TAESD (`…encoder…` ↔ `…decoder…` in the file name).
fn sibling(path: &Path, from: &str, to: &str) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    name.contains(from).then(|| path.with_file_name(name.replacen(from, to, 1)))
}

/// madebyollin's raw TAESD: this half and the other one beside it.
fn raw_taesd(
    path: &Path,
    file: Arc<MmapedSafetensors>,
    keys: &[String],
    dtype: DType,
    device: &Device,
) -> Result<(AutoencoderConfig, VarBuilder<'static>), PipelineError> {
    // The decoder's layer 0 is its clamp: it has no "0." tensors.
    let is_decoder = !keys.iter().any(|k| k.starts_with("0."));
    let (from, to) = if is_decoder { ("decoder", "encoder") } else { ("encoder", "decoder") };
    let other = sibling(path, from, to).filter(|p| p.is_file()).ok_or_else(|| {
        unsupported(
            path,
            format!(
                "a raw TAESD {from} needs its {to} beside it (madebyollin's taesd_encoder.safetensors and \
                 taesd_decoder.safetensors)"
            ),
        )
    })?;
    let (other_file, other_keys) = open(&other)?;
    let (enc, dec) = if is_decoder {
        ((other_file, other_keys), (file, keys.to_vec()))
    } else {
        ((file, keys.to_vec()), (other_file, other_keys))
    };
    let mut names = HashMap::new();
    let mut shapes = HashMap::new();
    for (index, (half, (f, ks))) in [("encoder", &enc), ("decoder", &dec)].into_iter().enumerate() {
        for k in ks {
            let Some((i, tail)) = k.split_once('.') else { continue };
            let Ok(i) = i.parse::<usize>() else { continue };
            let i = if half == "decoder" {
                let Some(i) = i.checked_sub(1) else { continue };
                i
            } else {
                i
            };
            let name = format!("{half}.layers.{i}.{tail}");
            shapes.insert(name.clone(), dims(f, k, path)?);
            names.insert(name, (index, k.clone(), Transform::Same));
        }
    }
    let config = tiny_config(&shapes, path)?;
    let backend = Renamed { files: vec![enc.0, dec.0], names };
    Ok((AutoencoderConfig::Tiny(config), VarBuilder::from_backend(Box::new(backend), dtype, device.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taesd_layout_is_read_off_its_shapes() {
        // diffusers' default AutoencoderTiny (TAESD): 64-wide levels, blocks 1/3/3/3 and 3/3/3/1.
        let mut shapes = HashMap::new();
        let mut enc = vec![(0, Kind::Conv(3, 64))];
        let mut i = 1;
        for (level, blocks) in [1, 3, 3, 3].into_iter().enumerate() {
            if level > 0 {
                enc.push((i, Kind::Conv(64, 64)));
                i += 1;
            }
            for _ in 0..blocks {
                enc.push((i, Kind::Block(64)));
                i += 1;
            }
        }
        enc.push((i, Kind::Conv(64, 4)));
        let mut dec = vec![(0, Kind::Conv(4, 64))];
        let mut i = 2;
        for (level, blocks) in [3, 3, 3, 1].into_iter().enumerate() {
            for _ in 0..blocks {
                dec.push((i, Kind::Block(64)));
                i += 1;
            }
            if level < 3 {
                i += 1; // upsampling
            }
            dec.push((i, Kind::Conv(64, if level == 3 { 3 } else { 64 })));
            i += 1;
        }
        for (half, layers) in [("encoder", enc), ("decoder", dec)] {
            for (i, kind) in layers {
                let (key, shape) = match kind {
                    Kind::Conv(c, o) => ("weight", vec![o, c, 3, 3]),
                    Kind::Block(w) => ("conv.0.weight", vec![w, w, 3, 3]),
                    Kind::Plain => continue,
                };
                shapes.insert(format!("{half}.layers.{i}.{key}"), shape);
            }
        }
        let config = tiny_config(&shapes, Path::new("taesd")).unwrap();
        let taesd = TinyVaeConfig::default();
        assert_eq!(config.encoder_block_out_channels, taesd.encoder_block_out_channels);
        assert_eq!(config.num_encoder_blocks, taesd.num_encoder_blocks);
        assert_eq!(config.decoder_block_out_channels, taesd.decoder_block_out_channels);
        assert_eq!(config.num_decoder_blocks, taesd.num_decoder_blocks);
        assert_eq!((config.latent_channels, config.patch_size), (4, 1));
    }

    #[test]
    fn the_other_half_of_a_raw_taesd_is_found_by_its_name() {
        let got = sibling(Path::new("/m/taesd_decoder.safetensors"), "decoder", "encoder");
        assert_eq!(got, Some(PathBuf::from("/m/taesd_encoder.safetensors")));
        assert_eq!(sibling(Path::new("/m/tiny.safetensors"), "decoder", "encoder"), None);
    }
}
