//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x/2.x and the built-in model), built from
//! its `config.json`. Module paths mirror diffusers' weight names, so the module tree is the
//! checkpoint layout. Unlike candle-transformers' version it takes one timestep per batch item
//! (training needs that) and every operation has a backward pass.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::config_limits::{within, MAX_CHANNELS, MAX_LATENT_SIDE, MAX_LEVELS};
use super::layers::{
    attention, attention_with_bias, conv, geglu, group_norm, linear, linear_no_bias, swap_last_two, Conv2d,
    GroupNorm, LayerNorm, Linear, Resnet,
};
use super::regions::CrossAttentionBias;

/// The fields of a diffusers UNet `config.json` this network reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out (the prediction).
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D` per level (deepest first).
    pub up_block_types: Vec<String>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// diffusers' historical name for the number of attention heads: one value, or one per level.
    pub attention_head_dim: HeadCount,
    /// Width of the text conditioning.
    pub cross_attention_dim: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' group norms.
    pub norm_eps: f64,
    /// Linear instead of 1x1-convolution projections in the transformers (SD 2.x).
    pub use_linear_projection: bool,
    /// Sinusoid order of the timestep embedding.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    pub freq_shift: f64,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Input size in latent pixels (default render size = this × the VAE factor).
    pub sample_size: usize,
    /// Width of the guidance embedding of a distilled (LCM) model: the guidance scale is an input
    /// of the network instead of a second pass. `None` for ordinary models.
    pub time_cond_proj_dim: Option<usize>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_block_types: vec![
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "DownBlock2D".into(),
            ],
            up_block_types: vec![
                "UpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
            ],
            layers_per_block: 2,
            attention_head_dim: HeadCount::One(8),
            cross_attention_dim: 1280,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            sample_size: 64,
            time_cond_proj_dim: None,
        }
    }
}

/// One head count for every level, or one per level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeadCount {
    /// The same for all levels.
    One(usize),
    /// Per level, shallowest first.
    PerLevel(Vec<usize>),
}

impl HeadCount {
    fn at(&self, level: usize) -> usize {
        match self {
            Self::One(n) => *n,
            Self::PerLevel(v) => v.get(level).or(v.last()).copied().unwrap_or(1),
        }
    }
}

/// diffusers' `Attention` with separate q/k/v projections (no bias) and `to_out.0`.
#[derive(Debug)]
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    fn new(dim: usize, context_dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            to_q: linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: linear(dim, dim, vb.pp("to_out").pp("0"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward_regions(x, context, None)
    }

    /// Attention, with paint-with-words' bias (and the `w × h` size of the map `x` holds) on the
    /// batch items it applies to; the others, and maps it has no resolution for, attend plainly.
    fn forward_regions(
        &self,
        x: &Tensor,
        context: &Tensor,
        bias: Option<(&CrossAttentionBias, (usize, usize))>,
    ) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let (k, v) = (self.to_k.forward(context)?, self.to_v.forward(context)?);
        let Some((bias, (w, h))) = bias.filter(|(b, (w, h))| b.any() && b.covers(*w, *h)) else {
            return self.to_out.forward(&attention(&q, &k, &v, self.heads, None)?);
        };
        let items = (0..x.dim(0)?)
            .map(|i| {
                let (q, k, v) = (q.narrow(0, i, 1)?, k.narrow(0, i, 1)?, v.narrow(0, i, 1)?);
                match bias.map(w, h, i)? {
                    Some(map) if bias.strength(i) != 0.0 => {
                        attention_with_bias(&q, &k, &v, self.heads, &map, bias.strength(i))
                    }
                    _ => attention(&q, &k, &v, self.heads, None),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        self.to_out.forward(&Tensor::cat(&items, 0)?)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(dim: usize, context_dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let ff = vb.pp("ff").pp("net");
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, dim, heads, vb.pp("attn1"))?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context_dim, heads, vb.pp("attn2"))?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: linear(dim, dim * 8, ff.pp("0").pp("proj"))?,
            ff_out: linear(dim * 4, dim, ff.pp("2"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        bias: Option<&CrossAttentionBias>,
        size: (usize, usize),
    ) -> Result<Tensor> {
        let n = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&n, &n)?)?;
        let x =
            (&x + self.attn2.forward_regions(&self.norm2.forward(&x)?, context, bias.map(|b| (b, size)))?)?;
        let h = geglu(&self.ff_in.forward(&self.norm3.forward(&x)?)?)?;
        &x + self.ff_out.forward(&h)?
    }
}

/// A projection that is a 1x1 convolution (SD 1.x) or a linear layer on tokens (SD 2.x).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel` with one block: group norm, project in, block, project out,
/// plus the input.
#[derive(Debug)]
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    block: TransformerBlock,
    proj_out: Projection,
}

impl SpatialTransformer {
    fn new(channels: usize, heads: usize, c: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let proj = |name: &str| -> Result<Projection> {
            Ok(if c.use_linear_projection {
                Projection::Linear(linear(channels, channels, vb.pp(name))?)
            } else {
                Projection::Conv(conv(channels, channels, 1, 1, 0, vb.pp(name))?)
            })
        };
        Ok(Self {
            norm: group_norm(c.norm_num_groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            block: TransformerBlock::new(
                channels,
                c.cross_attention_dim,
                heads,
                vb.pp("transformer_blocks").pp("0"),
            )?,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, bias: Option<&CrossAttentionBias>) -> Result<Tensor> {
        let (b, ch, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let to_tokens = |t: Tensor| swap_last_two(&t.flatten_from(2)?);
        let tokens = match &self.proj_in {
            Projection::Conv(p) => to_tokens(p.forward(&n)?)?,
            Projection::Linear(p) => p.forward(&to_tokens(n)?)?,
        };
        let tokens = self.block.forward(&tokens, context, bias, (w, h))?;
        let to_map = |t: Tensor| swap_last_two(&t)?.reshape((b, ch, h, w));
        let out = match &self.proj_out {
            Projection::Conv(p) => p.forward(&to_map(tokens)?)?,
            Projection::Linear(p) => to_map(p.forward(&tokens)?)?,
        };
        out + x
    }
}

/// One level of the U: resnets, each optionally followed by a transformer, then a resampler.
#[derive(Debug)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    resample: Option<Conv2d>,
}

/// Timestep embedding: sinusoids of `dim` frequencies (diffusers' `Timesteps`), then two linear
/// layers with SiLU (`TimestepEmbedding`). A distilled model adds its guidance embedding through
/// the bias-free `cond_proj` to the sinusoids before `linear_1`.
#[derive(Debug)]
struct TimeEmbedding {
    dim: usize,
    flip: bool,
    shift: f64,
    cond_proj: Option<Linear>,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimeEmbedding {
    fn forward(&self, timesteps: &Tensor, guidance: Option<&Tensor>) -> Result<Tensor> {
        let half = self.dim / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - self.shift)).exp() as f32)
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?.to_dtype(timesteps.dtype())?;
        let args = timesteps.unsqueeze(1)?.broadcast_mul(&freqs)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        let mut emb = if self.flip { Tensor::cat(&[cos, sin], 1)? } else { Tensor::cat(&[sin, cos], 1)? };
        // diffusers applies `cond_proj` only when a condition is given; a distilled model run
        // without one is the plain network.
        if let (Some(proj), Some(w)) = (&self.cond_proj, guidance) {
            let projected = proj.forward(&w.to_dtype(emb.dtype())?)?;
            emb = (emb + projected)?;
        }
        self.linear_2.forward(&self.linear_1.forward(&emb)?.silu()?)
    }
}

/// The guidance embedding a distilled (LCM) UNet takes, as diffusers'
/// `LatentConsistencyModelPipeline.get_guidance_scale_embedding` computes it: w = scale − 1,
/// times 1000, through `dim` sinusoids (sines, then cosines; a zero column pads an odd `dim`).
/// One row per batch item.
pub fn guidance_embedding(scales: &[f64], dim: usize, device: &candle_core::Device) -> Result<Tensor> {
    let half = dim / 2;
    let step = 10000f32.ln() / (half as f32 - 1.0);
    // In float32 as diffusers computes it, so the embedding matches bit for bit.
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut rows = Vec::with_capacity(scales.len() * dim);
    for &scale in scales {
        let w = (scale - 1.0) as f32 * 1000.0;
        rows.extend(freqs.iter().map(|f| (w * f).sin()));
        rows.extend(freqs.iter().map(|f| (w * f).cos()));
        if dim % 2 == 1 {
            rows.push(0.0);
        }
    }
    Tensor::from_vec(rows, (scales.len(), dim), device)
}

/// The UNet.
#[derive(Debug)]
pub struct UNet {
    config: UNetConfig,
    conv_in: Conv2d,
    time: TimeEmbedding,
    down: Vec<Level>,
    mid_resnets: [Resnet; 2],
    mid_attention: SpatialTransformer,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

fn is_cross_attn(block_type: &str) -> Result<bool> {
    match block_type {
        "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" => Ok(true),
        "DownBlock2D" | "UpBlock2D" => Ok(false),
        other => Err(candle_core::Error::Msg(format!("unsupported UNet block type {other}"))),
    }
}

impl UNetConfig {
    /// Refuses what this network cannot build before anything is allocated, naming the field:
    /// a hostile `config.json` (huge or zero widths, paddings) must end in an error, not in an
    /// overflow or an allocation the size of the address space.
    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(candle_core::Error::Msg(format!("UNet config: {why}")));
        let ch = &self.block_out_channels;
        let levels = ch.len();
        if levels == 0 || self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return bad(format!(
                "{} block_out_channels, {} down blocks and {} up blocks must agree and be non-empty",
                levels,
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let widths = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("cross_attention_dim", self.cross_attention_dim),
            ("norm_num_groups", self.norm_num_groups),
        ];
        for (name, value) in widths.into_iter().chain(ch.iter().map(|&c| ("block_out_channels", c))) {
            within("UNet", name, value, MAX_CHANNELS)?;
        }
        within("UNet", "the length of block_out_channels", levels, MAX_LEVELS)?;
        within("UNet", "layers_per_block", self.layers_per_block, MAX_LEVELS)?;
        within("UNet", "sample_size", self.sample_size, MAX_LATENT_SIDE)?;
        if let Some(dim) = self.time_cond_proj_dim {
            within("UNet", "time_cond_proj_dim", dim, MAX_CHANNELS)?;
            if dim < 4 {
                return bad(format!("time_cond_proj_dim {dim} is below 4 (two sines and two cosines)"));
            }
        }
        if self.downsample_padding > 1 {
            return bad(format!("downsample_padding {} is not 0 or 1", self.downsample_padding));
        }
        if let Some(level) = (0..levels).find(|&i| !(1..=ch[i]).contains(&self.attention_head_dim.at(i))) {
            return bad(format!(
                "attention_head_dim {} at level {level} is outside 1..={} (its channels)",
                self.attention_head_dim.at(level),
                ch[level]
            ));
        }
        Ok(())
    }
}

impl UNet {
    /// Builds the network from `config`, with weights from `vb` (diffusers' names).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.check()?;
        let c = config;
        let ch = &c.block_out_channels;
        let levels = ch.len();
        let temb = ch[0] * 4;
        let tvb = vb.pp("time_embedding");
        let time = TimeEmbedding {
            dim: ch[0],
            flip: c.flip_sin_to_cos,
            shift: c.freq_shift,
            cond_proj: c
                .time_cond_proj_dim
                .map(|d| linear_no_bias(d, ch[0], tvb.pp("cond_proj")))
                .transpose()?,
            linear_1: linear(ch[0], temb, tvb.pp("linear_1"))?,
            linear_2: linear(temb, temb, tvb.pp("linear_2"))?,
        };
        let mut down = Vec::with_capacity(levels);
        let mut in_c = ch[0];
        for (i, &out_c) in ch.iter().enumerate() {
            let bvb = vb.pp("down_blocks").pp(i.to_string());
            let cross = is_cross_attn(&c.down_block_types[i])?;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                let from = if j == 0 { in_c } else { out_c };
                resnets.push(Resnet::new(
                    from,
                    out_c,
                    Some(temb),
                    c.norm_num_groups,
                    c.norm_eps,
                    bvb.pp("resnets").pp(j.to_string()),
                )?);
                if cross {
                    let avb = bvb.pp("attentions").pp(j.to_string());
                    attentions.push(SpatialTransformer::new(out_c, c.attention_head_dim.at(i), c, avb)?);
                }
            }
            let resample = (i + 1 < levels)
                .then(|| {
                    conv(out_c, out_c, 3, 2, c.downsample_padding, bvb.pp("downsamplers").pp("0").pp("conv"))
                })
                .transpose()?;
            down.push(Level { resnets, attentions, resample });
            in_c = out_c;
        }
        let deepest = ch[levels - 1];
        let mvb = vb.pp("mid_block");
        let mid_resnets = [
            Resnet::new(
                deepest,
                deepest,
                Some(temb),
                c.norm_num_groups,
                c.norm_eps,
                mvb.pp("resnets").pp("0"),
            )?,
            Resnet::new(
                deepest,
                deepest,
                Some(temb),
                c.norm_num_groups,
                c.norm_eps,
                mvb.pp("resnets").pp("1"),
            )?,
        ];
        let mid_attention = SpatialTransformer::new(
            deepest,
            c.attention_head_dim.at(levels - 1),
            c,
            mvb.pp("attentions").pp("0"),
        )?;

        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(levels);
        let mut prev_out = reversed[0];
        for (i, &out_c) in reversed.iter().enumerate() {
            let bvb = vb.pp("up_blocks").pp(i.to_string());
            let cross = is_cross_attn(&c.up_block_types[i])?;
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..=c.layers_per_block {
                let skip = if j == c.layers_per_block { skip_in } else { out_c };
                let from = if j == 0 { prev_out } else { out_c };
                resnets.push(Resnet::new(
                    from + skip,
                    out_c,
                    Some(temb),
                    c.norm_num_groups,
                    c.norm_eps,
                    bvb.pp("resnets").pp(j.to_string()),
                )?);
                if cross {
                    let heads = c.attention_head_dim.at(levels - 1 - i);
                    attentions.push(SpatialTransformer::new(
                        out_c,
                        heads,
                        c,
                        bvb.pp("attentions").pp(j.to_string()),
                    )?);
                }
            }
            let resample = (i + 1 < levels)
                .then(|| conv(out_c, out_c, 3, 1, 1, bvb.pp("upsamplers").pp("0").pp("conv")))
                .transpose()?;
            up.push(Level { resnets, attentions, resample });
            prev_out = out_c;
        }
        Ok(Self {
            config: config.clone(),
            conv_in: conv(c.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            time,
            down,
            mid_resnets,
            mid_attention,
            up,
            norm_out: group_norm(c.norm_num_groups, ch[0], c.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv(ch[0], c.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    /// The config the network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Predicts for `x` `[batch, in, h, w]` at `timesteps` `[batch]` (training timesteps, any
    /// float dtype) with `context` `[batch, tokens, cross_attention_dim]`.
    pub fn forward(&self, x: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward_guided(x, timesteps, context, None)
    }

    /// [`UNet::forward`] with a distilled model's guidance embedding `[batch, time_cond_proj_dim]`
    /// (see [`guidance_embedding`]); `None` runs the plain network.
    pub fn forward_guided(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with_regions(x, timesteps, context, guidance, None)
    }

    /// [`UNet::forward_guided`] with paint-with-words' cross-attention bias (`None`: none).
    pub fn forward_with_regions(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        guidance: Option<&Tensor>,
        bias: Option<&CrossAttentionBias>,
    ) -> Result<Tensor> {
        crate::kernels::pool::on_pool(|| {
            let batch = x.dim(0)?;
            if !(batch >= 2
                && candle_core::utils::get_num_threads() >= 2
                && crate::kernels::fused_applies(&[x, context]))
            {
                return self.forward_batch(x, timesteps, context, guidance, bias);
            }
            // Inference on a batch (a guided pair): one half per core. Small networks gain far
            // more from this than from splitting each small product across threads.
            let half = batch / 2;
            let part = |from: usize, len: usize| {
                let guidance = guidance.map(|g| g.narrow(0, from, len)).transpose()?;
                let bias = bias.map(|b| b.narrow(from, len));
                self.forward_batch(
                    &x.narrow(0, from, len)?,
                    &timesteps.narrow(0, from, len)?,
                    &context.narrow(0, from, len)?,
                    guidance.as_ref(),
                    bias.as_ref(),
                )
            };
            let (first, second) = rayon::join(|| part(0, half), || part(half, batch - half));
            Tensor::cat(&[first?, second?], 0)
        })
    }

    /// [`UNet::forward`] on the calling thread.
    fn forward_batch(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        guidance: Option<&Tensor>,
        bias: Option<&CrossAttentionBias>,
    ) -> Result<Tensor> {
        let temb = self.time.forward(&timesteps.to_dtype(x.dtype())?, guidance)?.silu()?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (j, resnet) in level.resnets.iter().enumerate() {
                h = resnet.forward(&h, Some(&temb))?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h, context, bias)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &level.resample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_resnets[0].forward(&h, Some(&temb))?;
        h = self.mid_attention.forward(&h, context, bias)?;
        h = self.mid_resnets[1].forward(&h, Some(&temb))?;
        for level in &self.up {
            for (j, resnet) in level.resnets.iter().enumerate() {
                let skip =
                    skips.pop().ok_or_else(|| candle_core::Error::Msg("UNet skip stack underflow".into()))?;
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, Some(&temb))?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h, context, bias)?;
                }
            }
            if let Some(up) = &level.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}
