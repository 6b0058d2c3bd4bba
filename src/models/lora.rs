//! LoRA files (low-rank weight updates) and their merging into a model's weights: kohya-ss files
//! (`lora_unet_…` / `lora_te_…` in diffusers' module names or LDM's, `.lora_down` / `.lora_up` /
//! `.alpha`, 3×3 "LoCon" convolutions) and diffusers/PEFT files (`unet.…` / `text_encoder.…`,
//! `lora_A` / `lora_B`, alphas in the file's metadata). A layer's weight becomes
//! `W + Σ strength · scale · (up · down)`, `scale` = alpha / rank, as diffusers'
//! `load_lora_weights` + `set_adapters` compute it. Formats we do not merge (LoHa, LoKr, DoRA) and
//! LoRAs for SDXL are refused by name; layers that match nothing in the model are reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::kept_weights::Weights;
use super::pipeline::PipelineError;

/// Which network a layer patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraPart {
    /// The UNet.
    Unet,
    /// The CLIP text encoder.
    TextEncoder,
}

/// How a file names a layer.
#[derive(Debug, Clone)]
enum LayerName {
    /// A module path (`down_blocks.0.attentions.0.proj_in`), as PEFT files write it.
    Path(String),
    /// kohya-ss's path with `.` flattened to `_`, after its `lora_unet_` / `lora_te_` prefix.
    Flat(String),
}

/// One low-rank update.
#[derive(Debug)]
struct LoraLayer {
    part: LoraPart,
    /// The layer's name as the file writes it, for reports.
    key: String,
    name: LayerName,
    /// `[rank, in(, kh, kw)]`, f32.
    down: Tensor,
    /// `[out, rank(, 1, 1)]`, f32.
    up: Tensor,
    /// alpha / rank.
    scale: f64,
}

/// A LoRA file read into memory, its layers not yet matched to a model.
#[derive(Debug)]
pub struct LoraFile {
    path: PathBuf,
    layers: Vec<LoraLayer>,
    /// Tensors that belong to no layer we read, by name.
    unknown: Vec<String>,
}

/// What merging one LoRA file into a model did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraReport {
    /// The file.
    pub path: PathBuf,
    /// Its layers found in the model.
    pub matched: usize,
    /// Its layers and tensors that matched nothing in the model, by the file's names.
    pub unmatched: Vec<String>,
}

impl LoraReport {
    /// An empty report for `file`, its tensors of no layer already listed.
    pub fn new(file: &LoraFile) -> Self {
        Self { path: file.path.clone(), matched: 0, unmatched: file.unknown.clone() }
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Unsupported { path: path.into(), reason: reason.into() }
}

/// The largest safetensors header we read (real LoRA headers are well under a megabyte).
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// A safetensors file's JSON header, from its first bytes.
fn header(path: &Path, bytes: &[u8], file_len: u64) -> Result<Value, PipelineError> {
    let bad = || unsupported(path, "not a safetensors file (its header is unreadable)");
    let len = bytes.get(..8).ok_or_else(bad)?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| bad())?);
    if len > MAX_HEADER_BYTES || 8 + len > file_len || 8 + len > bytes.len() as u64 {
        return Err(bad());
    }
    serde_json::from_slice(&bytes[8..8 + len as usize]).map_err(|_| bad())
}

/// The `__metadata__` strings of a header.
fn metadata(header: &Value) -> HashMap<String, String> {
    header
        .get("__metadata__")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// Whether the `.safetensors` file at `path` holds LoRA layers (or LoHa/LoKr ones, which
/// [`LoraFile::read`] refuses by name) rather than a checkpoint: only its header is read.
pub fn is_lora_file(path: &Path) -> Result<bool, PipelineError> {
    use std::io::Read;
    let io = |source| PipelineError::Io { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len).min(MAX_HEADER_BYTES).min(file_len.saturating_sub(8));
    let mut bytes = len.to_vec();
    file.take(n).read_to_end(&mut bytes).map_err(io)?;
    let header = header(path, &bytes, file_len)?;
    let Some(tensors) = header.as_object() else { return Ok(false) };
    Ok(tensors.keys().any(|k| classify(k).is_some() || k.contains("hada_w1") || k.contains("lokr_w")))
}

/// Refuses what we do not merge, by name.
fn refuse_other_formats(
    path: &Path,
    keys: &[&String],
    meta: &HashMap<String, String>,
) -> Result<(), PipelineError> {
    let any = |needle: &str| keys.iter().find(|k| k.contains(needle));
    let with_key =
        |what: &str, key: &str| unsupported(path, format!("{what} (tensor {key}); only LoRA files are read"));
    if let Some(k) = any("hada_w1") {
        return Err(with_key("this is a LoHa file", k));
    }
    if let Some(k) = any("lokr_w1").or_else(|| any("lokr_w2")) {
        return Err(with_key("this is a LoKr file", k));
    }
    if let Some(k) = any("dora_scale").or_else(|| any("lora_magnitude_vector")) {
        return Err(with_key("this is a DoRA file (weight-decomposed LoRA)", k));
    }
    if meta.get("lora_adapter_metadata").is_some_and(|m| m.contains("\"use_dora\": true")) {
        return Err(unsupported(
            path,
            "this is a DoRA file (use_dora in its metadata); only LoRA files are read",
        ));
    }
    if let Some(k) = any("lora_mid") {
        return Err(unsupported(
            path,
            format!("this LoCon file splits its convolutions in three (tensor {k}, Tucker); only two-factor LoRAs are read"),
        ));
    }
    if let Some(k) = keys.iter().find(|k| {
        k.starts_with("lora_te1_") || k.starts_with("lora_te2_") || k.starts_with("text_encoder_2.")
    }) {
        return Err(unsupported(
            path,
            format!(
                "this LoRA is for SDXL (tensor {k} is for its second text encoder); the studio runs Stable Diffusion 1.x and 2.x"
            ),
        ));
    }
    Ok(())
}

/// The PEFT adapter settings of one part, from `lora_adapter_metadata`.
#[derive(Debug, Default)]
struct PeftAlphas {
    alpha: Option<f64>,
    patterns: Vec<(String, f64)>,
    rs_lora: bool,
}

impl PeftAlphas {
    fn read(meta: &HashMap<String, String>, prefix: &str) -> Self {
        let Some(json) = meta.get("lora_adapter_metadata") else { return Self::default() };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(json) else { return Self::default() };
        let field = |name: &str| m.get(&format!("{prefix}.{name}"));
        Self {
            alpha: field("lora_alpha").and_then(Value::as_f64),
            patterns: field("alpha_pattern")
                .and_then(Value::as_object)
                .map(|p| p.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default(),
            rs_lora: field("use_rslora").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    /// PEFT's scale of the module at `path` with `rank`: alpha / rank (alpha / √rank with
    /// rsLoRA); without an alpha, alpha = rank.
    fn scale(&self, path: &str, rank: usize) -> f64 {
        let pattern = self
            .patterns
            .iter()
            .find(|(p, _)| path == p || path.ends_with(&format!(".{p}")))
            .map(|(_, a)| *a);
        let rank = rank as f64;
        match pattern.or(self.alpha) {
            Some(alpha) if self.rs_lora => alpha / rank.sqrt(),
            Some(alpha) => alpha / rank,
            None => 1.0,
        }
    }
}

/// The three tensors of a layer while a file is read.
#[derive(Default)]
struct Parts {
    down: Option<Tensor>,
    up: Option<Tensor>,
    alpha: Option<Tensor>,
}

/// The part, layer name and tensor role of one key, or `None` for a tensor of no layer.
fn classify(key: &str) -> Option<(LoraPart, LayerName, &'static str)> {
    for (suffix, role) in [
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".alpha", "alpha"),
    ] {
        let Some(stem) = key.strip_suffix(suffix) else { continue };
        if let Some(flat) = stem.strip_prefix("lora_unet_") {
            return Some((LoraPart::Unet, LayerName::Flat(flat.into()), role));
        }
        if let Some(flat) = stem.strip_prefix("lora_te_") {
            return Some((LoraPart::TextEncoder, LayerName::Flat(flat.into()), role));
        }
        if let Some(path) = stem.strip_prefix("unet.") {
            return Some((LoraPart::Unet, LayerName::Path(path.into()), role));
        }
        if let Some(path) = stem.strip_prefix("text_encoder.") {
            return Some((LoraPart::TextEncoder, LayerName::Path(path.into()), role));
        }
        return None;
    }
    None
}

impl LoraFile {
    /// Reads a LoRA `.safetensors` file.
    pub fn read(path: &Path) -> Result<Self, PipelineError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext != "safetensors" {
            return Err(unsupported(
                path,
                "expected a .safetensors LoRA file (.pt/.ckpt/.bin files are Python pickles, which the studio does not \
                 open: convert them with safetensors' `save_file`)",
            ));
        }
        let bytes = std::fs::read(path).map_err(|source| PipelineError::Io { path: path.into(), source })?;
        let meta = metadata(&header(path, &bytes, bytes.len() as u64)?);
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|source| PipelineError::Weights { path: path.into(), source })?;
        let keys: Vec<&String> = tensors.keys().collect();
        refuse_other_formats(path, &keys, &meta)?;
        let alphas = [
            (LoraPart::Unet, PeftAlphas::read(&meta, "unet")),
            (LoraPart::TextEncoder, PeftAlphas::read(&meta, "text_encoder")),
        ];
        // Sorted, so layers and reports come in a stable order.
        let mut groups: BTreeMap<(LoraPart, String), (LayerName, Parts)> = BTreeMap::new();
        let mut unknown = Vec::new();
        let sorted: BTreeMap<&String, &Tensor> = tensors.iter().collect();
        for (key, tensor) in sorted {
            let Some((part, name, role)) = classify(key) else {
                unknown.push(key.clone());
                continue;
            };
            let id = match &name {
                LayerName::Path(p) | LayerName::Flat(p) => p.clone(),
            };
            let entry = groups.entry((part, id)).or_insert_with(|| (name, Parts::default()));
            let slot = match role {
                "down" => &mut entry.1.down,
                "up" => &mut entry.1.up,
                _ => &mut entry.1.alpha,
            };
            *slot = Some(tensor.to_dtype(DType::F32).map_err(|e| tensor_error(path, key, e))?);
        }
        let mut layers = Vec::new();
        for ((part, id), (name, parts)) in groups {
            let key = match &name {
                LayerName::Flat(_) => {
                    format!("{}{id}", if part == LoraPart::Unet { "lora_unet_" } else { "lora_te_" })
                }
                LayerName::Path(_) => {
                    format!("{}.{id}", if part == LoraPart::Unet { "unet" } else { "text_encoder" })
                }
            };
            let (Some(down), Some(up)) = (parts.down, parts.up) else {
                return Err(unsupported(path, format!("layer {key} lacks its down (A) or up (B) tensor")));
            };
            let rank = down.dims().first().copied().unwrap_or(0);
            let up_rank = up.dims().get(1).copied().unwrap_or(0);
            let square_up = up.dims().iter().skip(2).all(|&d| d == 1);
            if rank == 0 || up_rank != rank || !square_up || down.rank() < 2 || !matches!(up.rank(), 2 | 4) {
                return Err(unsupported(
                    path,
                    format!(
                        "layer {key}: down {:?} and up {:?} are not a rank-{rank} pair",
                        down.dims(),
                        up.dims()
                    ),
                ));
            }
            let scale = match (&parts.alpha, &name) {
                (Some(alpha), _) => {
                    let alpha = alpha.flatten_all().and_then(|a| a.get(0)).and_then(|a| a.to_scalar::<f32>());
                    let alpha = alpha.map_err(|e| tensor_error(path, &format!("{key}.alpha"), e))?;
                    f64::from(alpha) / rank as f64
                }
                (None, LayerName::Flat(_)) => 1.0,
                (None, LayerName::Path(p)) => {
                    alphas.iter().find(|(q, _)| *q == part).map_or(1.0, |(_, a)| a.scale(p, rank))
                }
            };
            if !scale.is_finite() {
                return Err(unsupported(path, format!("layer {key}: its alpha is not a finite number")));
            }
            layers.push(LoraLayer { part, key, name, down, up, scale });
        }
        if layers.is_empty() {
            return Err(unsupported(
                path,
                "no LoRA layers in this file (expected lora_down/lora_up or lora_A/lora_B tensors); is it a checkpoint?",
            ));
        }
        Ok(Self { path: path.into(), layers, unknown })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether any layer patches `part`.
    pub fn patches(&self, part: LoraPart) -> bool {
        self.layers.iter().any(|l| l.part == part)
    }
}

fn tensor_error(path: &Path, key: &str, e: candle_core::Error) -> PipelineError {
    unsupported(path, format!("tensor {key}: {e}"))
}

/// LDM's resampling and ResNet layer names after an LDM block index (`in_layers_2`), dotted as the
/// single-file renaming reads them.
fn ldm_rest(rest: &str) -> String {
    for (flat, dotted) in
        [("in_layers_2", "in_layers.2"), ("out_layers_3", "out_layers.3"), ("emb_layers_1", "emb_layers.1")]
    {
        if rest == flat {
            return dotted.into();
        }
    }
    rest.into()
}

/// The kohya-flattened diffusers name of a kohya-flattened LDM UNet name
/// (`input_blocks_1_1_proj_in` → `down_blocks_0_attentions_0_proj_in`).
fn ldm_to_diffusers(flat: &str, layers_per_block: usize) -> Option<String> {
    let dotted =
        if let Some(r) = flat.strip_prefix("input_blocks_").or_else(|| flat.strip_prefix("output_blocks_")) {
            let block = if flat.starts_with("input") { "input_blocks" } else { "output_blocks" };
            let mut it = r.splitn(3, '_');
            let (i, j) = (it.next()?.parse::<usize>().ok()?, it.next()?.parse::<usize>().ok()?);
            match it.next() {
                Some(rest) => format!("{block}.{i}.{j}.{}", ldm_rest(rest)),
                None => format!("{block}.{i}.{j}"),
            }
        } else if let Some(r) = flat.strip_prefix("middle_block_") {
            let (j, rest) = r.split_once('_')?;
            format!("middle_block.{}.{}", j.parse::<usize>().ok()?, ldm_rest(rest))
        } else if let Some(n) = flat.strip_prefix("time_embed_") {
            format!("time_embed.{}", n.parse::<usize>().ok()?)
        } else if let Some(n) = flat.strip_prefix("out_") {
            format!("out.{}", n.parse::<usize>().ok()?)
        } else {
            return None;
        };
    let name = super::single_file::unet_name(&format!("{dotted}.weight"), layers_per_block)?;
    Some(name.strip_suffix(".weight")?.replace('.', "_"))
}

/// Finds a file's layer names among one network's weights.
struct Names<'a> {
    weights: &'a Weights,
    /// kohya-flattened module path → module path, for every weight of rank ≥ 2.
    flat: HashMap<String, String>,
    part: LoraPart,
    layers_per_block: usize,
}

impl<'a> Names<'a> {
    fn new(weights: &'a Weights, part: LoraPart, layers_per_block: usize) -> Self {
        let mut flat = HashMap::new();
        for (name, t) in weights {
            let Some(module) = name.strip_suffix(".weight") else { continue };
            if t.rank() < 2 {
                continue;
            }
            flat.insert(module.replace('.', "_"), module.to_string());
            // Text encoders saved without transformers' `text_model.` prefix still match kohya's
            // names, which have it, and the other way round.
            if part == LoraPart::TextEncoder {
                match module.strip_prefix("text_model.") {
                    Some(bare) => flat.insert(bare.replace('.', "_"), module.to_string()),
                    None => {
                        flat.insert(format!("text_model_{}", module.replace('.', "_")), module.to_string())
                    }
                };
            }
        }
        Self { weights, flat, part, layers_per_block }
    }

    /// The weight's full name of a layer, if the network has it.
    fn find(&self, name: &LayerName) -> Option<String> {
        let module = match name {
            LayerName::Path(p) => {
                let flat = p.replace('.', "_");
                self.flat.get(&flat).cloned()
            }
            LayerName::Flat(f) => self.flat.get(f).cloned().or_else(|| match self.part {
                LoraPart::Unet => self.flat.get(&ldm_to_diffusers(f, self.layers_per_block)?).cloned(),
                LoraPart::TextEncoder => None,
            }),
        }?;
        let weight = format!("{module}.weight");
        self.weights.contains_key(&weight).then_some(weight)
    }
}

/// `up · down` in the shape of `base`, or why it does not fit.
fn delta(layer: &LoraLayer, base: &Tensor, file: &Path) -> Result<Tensor, PipelineError> {
    let shape_error = || {
        unsupported(
            file,
            format!(
                "layer {} (down {:?}, up {:?}) does not fit the model's {:?}: is this LoRA for another architecture?",
                layer.key,
                layer.down.dims(),
                layer.up.dims(),
                base.dims()
            ),
        )
    };
    let (rank, out) = (layer.down.dim(0)?, layer.up.dim(0)?);
    let inputs = layer.down.elem_count() / rank;
    let dims = base.dims();
    if dims.first() != Some(&out) || dims.iter().skip(1).product::<usize>() != inputs {
        return Err(shape_error());
    }
    // A 3×3 down on a 1×1 layer (or the reverse) has the same count only by accident: the kernel
    // sizes must agree where both have one.
    if layer.down.rank() == 4 && base.rank() == 4 && layer.down.dims()[2..] != dims[2..] {
        return Err(shape_error());
    }
    let up = layer.up.reshape((out, rank))?;
    let down = layer.down.reshape((rank, inputs))?;
    Ok(up.matmul(&down)?.reshape(dims)?)
}

/// `base` with every layer of `loras` (file, strength) for `part` merged in; each file's report
/// (aligned with `loras`) counts what matched and names what did not.
pub fn merge(
    base: &Weights,
    part: LoraPart,
    layers_per_block: usize,
    loras: &[(&LoraFile, f64)],
    reports: &mut [LoraReport],
) -> Result<Weights, PipelineError> {
    let names = Names::new(base, part, layers_per_block);
    let mut sums: HashMap<String, Tensor> = HashMap::new();
    for ((file, strength), report) in loras.iter().zip(reports.iter_mut()) {
        for layer in file.layers.iter().filter(|l| l.part == part) {
            let Some(weight) = names.find(&layer.name) else {
                report.unmatched.push(layer.key.clone());
                continue;
            };
            report.matched += 1;
            if *strength == 0.0 {
                continue;
            }
            let d = (delta(layer, &base[&weight], &file.path)? * (strength * layer.scale))?;
            let sum = match sums.remove(&weight) {
                Some(s) => (s + d)?,
                None => d,
            };
            sums.insert(weight, sum);
        }
    }
    let mut merged = base.clone();
    for (weight, sum) in sums {
        let w = &base[&weight];
        let patched = (w.to_dtype(DType::F32)? + sum)?.to_dtype(w.dtype())?;
        merged.insert(weight, patched);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_names_become_diffusers_names() {
        let cases = [
            (
                "input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                2,
                "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            ("input_blocks_4_0_in_layers_2", 2, "down_blocks_1_resnets_0_conv1"),
            ("input_blocks_3_0_op", 2, "down_blocks_0_downsamplers_0_conv"),
            ("input_blocks_4_0_skip_connection", 2, "down_blocks_1_resnets_0_conv_shortcut"),
            ("middle_block_1_proj_in", 2, "mid_block_attentions_0_proj_in"),
            ("middle_block_2_emb_layers_1", 2, "mid_block_resnets_1_time_emb_proj"),
            ("output_blocks_2_1_conv", 2, "up_blocks_0_upsamplers_0_conv"),
            ("output_blocks_5_2_conv", 2, "up_blocks_1_upsamplers_0_conv"),
            ("output_blocks_3_0_out_layers_3", 2, "up_blocks_1_resnets_0_conv2"),
            ("time_embed_2", 2, "time_embedding_linear_2"),
            ("input_blocks_0_0", 2, "conv_in"),
            ("out_2", 2, "conv_out"),
        ];
        for (ldm, layers, want) in cases {
            assert_eq!(ldm_to_diffusers(ldm, layers).as_deref(), Some(want), "{ldm}");
        }
        assert_eq!(ldm_to_diffusers("label_emb_0_0", 2), None);
    }

    #[test]
    fn peft_scales_follow_alpha_rank_patterns_and_rslora() {
        let meta = HashMap::from([(
            "lora_adapter_metadata".to_string(),
            r#"{"unet.lora_alpha": 8, "unet.r": 4, "unet.alpha_pattern": {"to_k": 2}, "unet.use_rslora": false,
                "text_encoder.lora_alpha": 4, "text_encoder.use_rslora": true}"#
                .to_string(),
        )]);
        let unet = PeftAlphas::read(&meta, "unet");
        assert_eq!(unet.scale("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 4), 2.0);
        assert_eq!(unet.scale("mid_block.attentions.0.transformer_blocks.0.attn1.to_k", 4), 0.5);
        assert_eq!(PeftAlphas::read(&meta, "text_encoder").scale("q_proj", 16), 1.0);
        assert_eq!(PeftAlphas::read(&HashMap::new(), "unet").scale("to_q", 8), 1.0);
    }
}
