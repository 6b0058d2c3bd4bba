//! diffusers' `AutoencoderKL` (Stable Diffusion's VAE and the built-in model's), built from its
//! `config.json`; module paths mirror diffusers' weight names.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::config_limits::{within, MAX_CHANNELS, MAX_LEVELS};
use super::layers::{attention, conv, group_norm, linear, Conv2d, GroupNorm, Linear, Resnet};

/// The fields of a diffusers VAE `config.json` this network reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Channels per resolution level; the image shrinks by 2^(levels - 1).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (decoder levels have one more).
    pub layers_per_block: usize,
    /// Channels of the latent.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Latents are multiplied by this before diffusion (0.18215 for SD 1.x).
    pub scaling_factor: f64,
    /// 1x1 convolutions around the latent.
    pub use_quant_conv: bool,
    /// The decoder-side one.
    pub use_post_quant_conv: bool,
    /// Image size the VAE was trained at.
    pub sample_size: usize,
    /// Whether it runs in f32 when the rest of the model runs in f16 (diffusers' flag; SD's VAE
    /// overflows in half precision, so it defaults to yes).
    pub force_upcast: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            sample_size: 512,
            force_upcast: true,
        }
    }
}

impl VaeConfig {
    /// How many image pixels one latent pixel covers along each side.
    pub fn downscale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1).min(usize::BITS as usize - 1)
    }

    /// Refuses what this network cannot build before anything is allocated, naming the field.
    fn check(&self) -> Result<()> {
        let widths = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("norm_num_groups", self.norm_num_groups),
        ];
        for (name, value) in
            widths.into_iter().chain(self.block_out_channels.iter().map(|&c| ("block_out_channels", c)))
        {
            within("VAE", name, value, MAX_CHANNELS)?;
        }
        within("VAE", "the length of block_out_channels", self.block_out_channels.len(), MAX_LEVELS)?;
        within("VAE", "layers_per_block", self.layers_per_block, MAX_LEVELS)
    }
}

const EPS: f64 = 1e-6;

/// Single-head self-attention over pixels with a residual (the VAE's mid-block attention).
#[derive(Debug)]
struct PixelAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl PixelAttention {
    fn new(ch: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(groups, ch, EPS, vb.pp("group_norm"))?,
            to_q: linear(ch, ch, vb.pp("to_q"))?,
            to_k: linear(ch, ch, vb.pp("to_k"))?,
            to_v: linear(ch, ch, vb.pp("to_v"))?,
            to_out: linear(ch, ch, vb.pp("to_out").pp("0"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.group_norm.forward(x)?.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let (q, k, v) = (self.to_q.forward(&t)?, self.to_k.forward(&t)?, self.to_v.forward(&t)?);
        let out = self.to_out.forward(&attention(&q, &k, &v, 1, None)?)?;
        out.transpose(1, 2)?.reshape((b, c, h, w))? + x
    }
}

/// resnet, attention, resnet at the lowest resolution.
#[derive(Debug)]
struct MidBlock {
    resnets: [Resnet; 2],
    attention: PixelAttention,
}

impl MidBlock {
    fn new(ch: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            resnets: [
                Resnet::new(ch, ch, None, groups, EPS, vb.pp("resnets").pp("0"))?,
                Resnet::new(ch, ch, None, groups, EPS, vb.pp("resnets").pp("1"))?,
            ],
            attention: PixelAttention::new(ch, groups, vb.pp("attentions").pp("0"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.resnets[0].forward(x, None)?;
        let h = self.attention.forward(&h)?;
        self.resnets[1].forward(&h, None)
    }
}

#[derive(Debug)]
struct Level {
    resnets: Vec<Resnet>,
    resample: Option<Conv2d>,
}

/// The autoencoder.
#[derive(Debug)]
pub struct Vae {
    config: VaeConfig,
    enc_conv_in: Conv2d,
    enc_levels: Vec<Level>,
    enc_mid: MidBlock,
    enc_norm_out: GroupNorm,
    enc_conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dec_conv_in: Conv2d,
    dec_mid: MidBlock,
    dec_levels: Vec<Level>,
    dec_norm_out: GroupNorm,
    dec_conv_out: Conv2d,
}

impl Vae {
    /// Builds the autoencoder from `config` with weights from `vb` (diffusers' names).
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        config.check()?;
        let c = config;
        let ch = &c.block_out_channels;
        let (g, n, lat) = (c.norm_num_groups, ch.len(), c.latent_channels);
        let e = vb.pp("encoder");
        let mut enc_levels = Vec::with_capacity(n);
        let mut in_c = ch[0];
        for (i, &out_c) in ch.iter().enumerate() {
            let b = e.pp("down_blocks").pp(i.to_string());
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let from = if j == 0 { in_c } else { out_c };
                    Resnet::new(from, out_c, None, g, EPS, b.pp("resnets").pp(j.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = (i + 1 < n)
                .then(|| conv(out_c, out_c, 3, 2, 0, b.pp("downsamplers").pp("0").pp("conv")))
                .transpose()?;
            enc_levels.push(Level { resnets, resample });
            in_c = out_c;
        }
        let deepest = ch[n - 1];
        let d = vb.pp("decoder");
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut dec_levels = Vec::with_capacity(n);
        let mut prev = reversed[0];
        for (i, &out_c) in reversed.iter().enumerate() {
            let b = d.pp("up_blocks").pp(i.to_string());
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let from = if j == 0 { prev } else { out_c };
                    Resnet::new(from, out_c, None, g, EPS, b.pp("resnets").pp(j.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = (i + 1 < n)
                .then(|| conv(out_c, out_c, 3, 1, 1, b.pp("upsamplers").pp("0").pp("conv")))
                .transpose()?;
            dec_levels.push(Level { resnets, resample });
            prev = out_c;
        }
        Ok(Self {
            config: config.clone(),
            enc_conv_in: conv(c.in_channels, ch[0], 3, 1, 1, e.pp("conv_in"))?,
            enc_levels,
            enc_mid: MidBlock::new(deepest, g, e.pp("mid_block"))?,
            enc_norm_out: group_norm(g, deepest, EPS, e.pp("conv_norm_out"))?,
            enc_conv_out: conv(deepest, 2 * lat, 3, 1, 1, e.pp("conv_out"))?,
            quant_conv: c
                .use_quant_conv
                .then(|| conv(2 * lat, 2 * lat, 1, 1, 0, vb.pp("quant_conv")))
                .transpose()?,
            post_quant_conv: c
                .use_post_quant_conv
                .then(|| conv(lat, lat, 1, 1, 0, vb.pp("post_quant_conv")))
                .transpose()?,
            dec_conv_in: conv(lat, deepest, 3, 1, 1, d.pp("conv_in"))?,
            dec_mid: MidBlock::new(deepest, g, d.pp("mid_block"))?,
            dec_levels,
            dec_norm_out: group_norm(g, ch[0], EPS, d.pp("conv_norm_out"))?,
            dec_conv_out: conv(ch[0], c.out_channels, 3, 1, 1, d.pp("conv_out"))?,
        })
    }

    /// The config the autoencoder was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Mean and log-variance of the latent distribution for images in [-1, 1], unscaled.
    pub fn encode(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        crate::kernels::pool::on_pool(|| self.encode_on_pool(image))
    }

    fn encode_on_pool(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = self.enc_conv_in.forward(image)?;
        for level in &self.enc_levels {
            for r in &level.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(down) = &level.resample {
                // diffusers pads right and bottom by one before the stride-2 convolution.
                h = down.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        h = self.enc_mid.forward(&h)?;
        h = self.enc_conv_out.forward(&self.enc_norm_out.forward_silu(&h)?)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let lat = self.config.latent_channels;
        Ok((h.narrow(1, 0, lat)?, h.narrow(1, lat, lat)?.clamp(-30.0, 20.0)?))
    }

    /// Images in about [-1, 1] from unscaled latents.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        crate::kernels::pool::on_pool(|| self.decode_on_pool(latent))
    }

    fn decode_on_pool(&self, latent: &Tensor) -> Result<Tensor> {
        let mut h = match &self.post_quant_conv {
            Some(p) => p.forward(latent)?,
            None => latent.clone(),
        };
        h = self.dec_conv_in.forward(&h)?;
        h = self.dec_mid.forward(&h)?;
        for level in &self.dec_levels {
            for r in &level.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(up) = &level.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = up.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.dec_conv_out.forward(&self.dec_norm_out.forward_silu(&h)?)
    }
}
