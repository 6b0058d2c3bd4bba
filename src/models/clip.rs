//! The CLIP text encoder (transformers' `CLIPTextModel`), built from its `config.json`; weight
//! paths mirror transformers' names. Stable Diffusion conditions on its last hidden state.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use super::layers::{attention, linear, LayerNorm, Linear};

/// The fields of a transformers `CLIPTextConfig` this encoder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states (and of the conditioning).
    pub hidden_size: usize,
    /// Width of the feed-forward layers.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest token sequence (77 for Stable Diffusion).
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x) or `gelu` (SD 2.x).
    pub hidden_act: String,
    /// Epsilon of the layer norms.
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The text encoder.
#[derive(Debug)]
pub struct ClipTextModel {
    config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    quick_gelu: bool,
}

impl ClipTextModel {
    /// Builds the encoder from `config` with weights from `vb` (transformers' names, with or
    /// without the `text_model.` prefix).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        let quick_gelu = match c.hidden_act.as_str() {
            "quick_gelu" => true,
            "gelu" => false,
            other => return Err(candle_core::Error::Msg(format!("unsupported CLIP activation {other}"))),
        };
        // transformers before 5 saves under `text_model.`, transformers 5 without the prefix.
        let vb =
            if vb.contains_tensor("embeddings.token_embedding.weight") { vb } else { vb.pp("text_model") };
        let evb = vb.pp("embeddings");
        let token_embedding = candle_nn::embedding(c.vocab_size, c.hidden_size, evb.pp("token_embedding"))?;
        let position_embedding = evb.pp("position_embedding").get_with_hints(
            (c.max_position_embeddings, c.hidden_size),
            "weight",
            candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        let d = c.hidden_size;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("encoder").pp("layers").pp(i.to_string());
                let a = l.pp("self_attn");
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::new(d, c.layer_norm_eps, l.pp("layer_norm1"))?,
                    q_proj: linear(d, d, a.pp("q_proj"))?,
                    k_proj: linear(d, d, a.pp("k_proj"))?,
                    v_proj: linear(d, d, a.pp("v_proj"))?,
                    out_proj: linear(d, d, a.pp("out_proj"))?,
                    layer_norm2: LayerNorm::new(d, c.layer_norm_eps, l.pp("layer_norm2"))?,
                    fc1: linear(d, c.intermediate_size, l.pp("mlp").pp("fc1"))?,
                    fc2: linear(c.intermediate_size, d, l.pp("mlp").pp("fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::new(d, c.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            config: config.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            quick_gelu,
        })
    }

    /// The config the encoder was built from.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The last hidden state `[batch, tokens, hidden]` for token ids `[batch, tokens]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        crate::kernels::pool::on_pool(|| self.forward_on_pool(ids))
    }

    fn forward_on_pool(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, n) = ids.dims2()?;
        let positions = self.position_embedding.narrow(0, 0, n)?;
        let mut x = self.token_embedding.forward(ids)?.broadcast_add(&positions)?;
        let mask = causal_mask(n, x.dtype(), x.device())?;
        let heads = self.config.num_attention_heads;
        for l in &self.layers {
            let h = l.layer_norm1.forward(&x)?;
            let (q, k, v) = (l.q_proj.forward(&h)?, l.k_proj.forward(&h)?, l.v_proj.forward(&h)?);
            x = (&x + l.out_proj.forward(&attention(&q, &k, &v, heads, Some(&mask))?)?)?;
            let h = l.fc1.forward(&l.layer_norm2.forward(&x)?)?;
            let h = if self.quick_gelu {
                (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?
            } else {
                h.gelu_erf()?
            };
            x = (&x + l.fc2.forward(&h)?)?;
        }
        self.final_layer_norm.forward(&x)
    }
}

/// Scores added so token i attends only to tokens ≤ i.
fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (n, n), device)?.to_dtype(dtype)
}
