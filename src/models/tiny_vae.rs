//! diffusers' `AutoencoderTiny` (TAESD's architecture: plain 3x3 convolutions and ReLUs, no
//! normalisation, a deterministic encoder), built from its `config.json`; module paths mirror
//! diffusers' weight names (`encoder.layers.N`, `decoder.layers.N`).
//!
//! Two extensions, both off in diffusers' own files: `patch_size` folds `p`x`p` pixel patches into
//! channels before the encoder and unfolds them after the decoder (pixel unshuffle / shuffle), so
//! no convolution runs at full resolution; and levels may differ in width, the resampling
//! convolution between two levels changing it. The built-in model uses both to stay within a
//! few milliseconds at 128x128 on a laptop CPU.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::config_limits::{within, MAX_CHANNELS, MAX_LEVELS};
use super::layers::{conv, conv_no_bias, Conv2d};

/// The fields of a diffusers `AutoencoderTiny` `config.json` this network reads, plus our
/// `patch_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinyVaeConfig {
    /// Image channels (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Width of each encoder level, finest first; each level after the first halves the size.
    pub encoder_block_out_channels: Vec<usize>,
    /// Width of each decoder level, coarsest first; each level after the first doubles the size.
    pub decoder_block_out_channels: Vec<usize>,
    /// Residual blocks per encoder level.
    pub num_encoder_blocks: Vec<usize>,
    /// Residual blocks per decoder level.
    pub num_decoder_blocks: Vec<usize>,
    /// Channels of the latent.
    pub latent_channels: usize,
    /// Upsampling factor between decoder levels (2).
    pub upsampling_scaling_factor: usize,
    /// Activation (`relu`, the only one TAESD uses).
    pub act_fn: String,
    /// Upsampling (`nearest`).
    pub upsample_fn: String,
    /// Latents are multiplied by this before diffusion (1.0 for TAESD).
    pub scaling_factor: f64,
    /// Pixels per side of a patch folded into channels at both ends (1 = none, as in diffusers).
    pub patch_size: usize,
    /// Image size the autoencoder was trained at (not a diffusers field; informational).
    pub sample_size: usize,
}

impl Default for TinyVaeConfig {
    /// TAESD's configuration, as diffusers defaults it.
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            scaling_factor: 1.0,
            patch_size: 1,
            sample_size: 512,
        }
    }
}

impl TinyVaeConfig {
    /// How many image pixels one latent pixel covers along each side.
    pub fn downscale(&self) -> usize {
        let levels = self.encoder_block_out_channels.len().saturating_sub(1) as u32;
        self.patch_size.max(1) * 2usize.pow(levels)
    }

    /// Refuses what this network cannot build, naming the field.
    fn check(&self) -> Result<()> {
        let bad = |why: String| Err(candle_core::Error::Msg(format!("AutoencoderTiny config: {why}")));
        let (enc, dec) = (&self.encoder_block_out_channels, &self.decoder_block_out_channels);
        if enc.is_empty() || enc.len() != self.num_encoder_blocks.len() {
            return bad(
                "encoder_block_out_channels and num_encoder_blocks must be non-empty and of one length"
                    .into(),
            );
        }
        if dec.len() != enc.len() || dec.len() != self.num_decoder_blocks.len() {
            return bad("the decoder needs as many levels as the encoder".into());
        }
        let widths = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ];
        let levels = enc.iter().map(|&c| ("encoder_block_out_channels", c));
        let levels = levels.chain(dec.iter().map(|&c| ("decoder_block_out_channels", c)));
        for (name, value) in widths.into_iter().chain(levels) {
            within("AutoencoderTiny", name, value, MAX_CHANNELS)?;
        }
        within("AutoencoderTiny", "the length of encoder_block_out_channels", enc.len(), MAX_LEVELS)?;
        let blocks = self.num_encoder_blocks.iter().map(|&b| ("num_encoder_blocks", b));
        for (name, value) in blocks.chain(self.num_decoder_blocks.iter().map(|&b| ("num_decoder_blocks", b)))
        {
            within("AutoencoderTiny", name, value, MAX_LEVELS)?;
        }
        if self.act_fn != "relu" {
            return bad(format!("act_fn `{}` is not supported (relu)", self.act_fn));
        }
        if self.upsample_fn != "nearest" || self.upsampling_scaling_factor != 2 {
            return bad("only nearest upsampling by 2 is supported".into());
        }
        if !(1..=16).contains(&self.patch_size) {
            return bad(format!("patch_size {} is outside 1..=16", self.patch_size));
        }
        Ok(())
    }
}

/// TAESD's residual block: three 3x3 convolutions with ReLUs between, plus the input (through a
/// 1x1 convolution when the width changes), then a ReLU.
#[derive(Debug)]
struct Block {
    convs: [Conv2d; 3],
    skip: Option<Conv2d>,
}

impl Block {
    fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        let c = vb.pp("conv");
        Ok(Self {
            convs: [
                conv(in_c, out_c, 3, 1, 1, c.pp("0"))?,
                conv(out_c, out_c, 3, 1, 1, c.pp("2"))?,
                conv(out_c, out_c, 3, 1, 1, c.pp("4"))?,
            ],
            skip: (in_c != out_c).then(|| conv_no_bias(in_c, out_c, 1, 1, 0, vb.pp("skip"))).transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(x)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        let h = self.convs[2].forward(&h)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (h + skip)?.relu()
    }
}

/// One entry of diffusers' `nn.Sequential`, in order.
#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Relu,
    Block(Block),
    Upsample,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Conv(c) => c.forward(x),
            Self::Relu => x.relu(),
            Self::Block(b) => b.forward(x),
            Self::Upsample => {
                let (_, _, h, w) = x.dims4()?;
                x.upsample_nearest2d(h * 2, w * 2)
            }
        }
    }
}

/// Folds `p`x`p` pixel patches into channels: `[B, C, H, W]` → `[B, C·p², H/p, W/p]`, channel
/// `c·p² + i·p + j` holding row offset `i`, column offset `j` (`torch.nn.PixelUnshuffle`).
fn pixel_unshuffle(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    if h % p != 0 || w % p != 0 {
        return Err(candle_core::Error::Msg(format!("{w}x{h} is not a multiple of the patch size {p}")));
    }
    x.reshape(vec![b, c, h / p, p, w / p, p])?.permute(vec![0, 1, 3, 5, 2, 4])?.reshape((
        b,
        c * p * p,
        h / p,
        w / p,
    ))
}

/// The inverse of [`pixel_unshuffle`] (`torch.nn.PixelShuffle`).
fn pixel_shuffle(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, cp, h, w) = x.dims4()?;
    let c = cp / (p * p);
    x.reshape(vec![b, c, p, p, h, w])?.permute(vec![0, 1, 4, 2, 5, 3])?.reshape((b, c, h * p, w * p))
}

/// The tiny autoencoder.
#[derive(Debug)]
pub struct TinyVae {
    config: TinyVaeConfig,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
}

impl TinyVae {
    /// Builds the autoencoder from `config` with weights from `vb` (diffusers' names).
    pub fn new(config: &TinyVaeConfig, vb: VarBuilder) -> Result<Self> {
        config.check()?;
        let c = config;
        let p2 = c.patch_size * c.patch_size;
        let e = vb.pp("encoder").pp("layers");
        let mut encoder = Vec::new();
        let mut prev = c.in_channels * p2;
        for (i, (&ch, &blocks)) in c.encoder_block_out_channels.iter().zip(&c.num_encoder_blocks).enumerate()
        {
            let at = e.pp(encoder.len().to_string());
            let resample =
                if i == 0 { conv(prev, ch, 3, 1, 1, at)? } else { conv_no_bias(prev, ch, 3, 2, 1, at)? };
            encoder.push(Layer::Conv(resample));
            for _ in 0..blocks {
                let block = Block::new(ch, ch, e.pp(encoder.len().to_string()))?;
                encoder.push(Layer::Block(block));
            }
            prev = ch;
        }
        let out = conv(prev, c.latent_channels, 3, 1, 1, e.pp(encoder.len().to_string()))?;
        encoder.push(Layer::Conv(out));

        let d = vb.pp("decoder").pp("layers");
        let widths = &c.decoder_block_out_channels;
        let mut decoder = Vec::new();
        decoder.push(Layer::Conv(conv(c.latent_channels, widths[0], 3, 1, 1, d.pp("0"))?));
        decoder.push(Layer::Relu);
        for (i, (&ch, &blocks)) in widths.iter().zip(&c.num_decoder_blocks).enumerate() {
            for _ in 0..blocks {
                let block = Block::new(ch, ch, d.pp(decoder.len().to_string()))?;
                decoder.push(Layer::Block(block));
            }
            let last = i + 1 == widths.len();
            if !last {
                decoder.push(Layer::Upsample);
            }
            let at = d.pp(decoder.len().to_string());
            let layer = if last {
                conv(ch, c.out_channels * p2, 3, 1, 1, at)?
            } else {
                conv_no_bias(ch, widths[i + 1], 3, 1, 1, at)?
            };
            decoder.push(Layer::Conv(layer));
        }
        Ok(Self { config: config.clone(), encoder, decoder })
    }

    /// The config the autoencoder was built from.
    pub fn config(&self) -> &TinyVaeConfig {
        &self.config
    }

    /// Unscaled latents of images in [-1, 1].
    pub fn encode(&self, image: &Tensor) -> Result<Tensor> {
        crate::kernels::pool::on_pool(|| {
            // diffusers' EncoderTiny works on [0, 1].
            let x = ((image + 1.0)? * 0.5)?;
            let mut h = pixel_unshuffle(&x, self.config.patch_size)?;
            for layer in &self.encoder {
                h = layer.forward(&h)?;
            }
            Ok(h)
        })
    }

    /// Images in about [-1, 1] from unscaled latents.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        crate::kernels::pool::on_pool(|| {
            // TAESD's latent clamp, tanh(x / 3) · 3.
            let mut h = ((latent / 3.0)?.tanh()? * 3.0)?;
            for layer in &self.decoder {
                h = layer.forward(&h)?;
            }
            let image = pixel_shuffle(&h, self.config.patch_size)?;
            (image * 2.0)? - 1.0
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    #[test]
    fn pixel_shuffle_matches_the_definition_and_inverts_unshuffle() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 6.0, &dev).unwrap().reshape((2, 3, 4, 6)).unwrap();
        let folded = pixel_unshuffle(&x, 2).unwrap();
        assert_eq!(folded.dims(), &[2, 12, 2, 3]);
        let x4: Vec<Vec<Vec<Vec<f32>>>> = (0..2).map(|b| x.get(b).unwrap().to_vec3().unwrap()).collect();
        let f4: Vec<Vec<Vec<Vec<f32>>>> = (0..2).map(|b| folded.get(b).unwrap().to_vec3().unwrap()).collect();
        // PyTorch: out[b, c·p² + i·p + j, y, x] = in[b, c, y·p + i, x·p + j].
        for b in 0..2 {
            for c in 0..3 {
                for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    for y in 0..2 {
                        for xx in 0..3 {
                            assert_eq!(f4[b][c * 4 + i * 2 + j][y][xx], x4[b][c][y * 2 + i][xx * 2 + j]);
                        }
                    }
                }
            }
        }
        let back = pixel_shuffle(&folded, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn taesd_layout_and_patched_layout_build_with_the_right_sizes() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let taesd = TinyVaeConfig {
            num_encoder_blocks: vec![1, 1, 1, 1],
            num_decoder_blocks: vec![1, 1, 1, 1],
            encoder_block_out_channels: vec![8; 4],
            decoder_block_out_channels: vec![8; 4],
            ..Default::default()
        };
        let vae = TinyVae::new(&taesd, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
        // diffusers' indices: encoder conv 0, block 1, conv 2, block 3, ...; final conv 8.
        let names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        for name in [
            "encoder.layers.0.weight",
            "encoder.layers.1.conv.4.bias",
            "encoder.layers.2.weight",
            "encoder.layers.8.weight",
            "decoder.layers.0.weight",
            "decoder.layers.2.conv.0.weight",
            "decoder.layers.4.weight",
            "decoder.layers.12.bias",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
        let image = Tensor::zeros((1, 3, 32, 32), DType::F32, &dev).unwrap();
        let latent = vae.encode(&image).unwrap();
        assert_eq!(latent.dims(), &[1, 4, 4, 4]);
        assert_eq!(vae.decode(&latent).unwrap().dims(), &[1, 3, 32, 32]);

        let patched = TinyVaeConfig {
            encoder_block_out_channels: vec![8, 16, 16],
            decoder_block_out_channels: vec![16, 16, 8],
            num_encoder_blocks: vec![1, 1, 1],
            num_decoder_blocks: vec![1, 1, 1],
            latent_channels: 8,
            patch_size: 2,
            ..Default::default()
        };
        assert_eq!(patched.downscale(), 8);
        let vae = TinyVae::new(&patched, VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev)).unwrap();
        let image = Tensor::zeros((2, 3, 48, 64), DType::F32, &dev).unwrap();
        let latent = vae.encode(&image).unwrap();
        assert_eq!(latent.dims(), &[2, 8, 6, 8]);
        assert_eq!(vae.decode(&latent).unwrap().dims(), &[2, 3, 48, 64]);
    }

    #[test]
    fn impossible_configs_are_errors_naming_the_field() {
        let dev = Device::Cpu;
        for (config, word) in [
            (TinyVaeConfig { act_fn: "gelu".into(), ..Default::default() }, "act_fn"),
            (TinyVaeConfig { num_decoder_blocks: vec![1], ..Default::default() }, "decoder"),
            (TinyVaeConfig { patch_size: 0, ..Default::default() }, "patch_size"),
            (TinyVaeConfig { latent_channels: 0, ..Default::default() }, "latent_channels"),
        ] {
            let err = TinyVae::new(&config, VarBuilder::zeros(DType::F32, &dev)).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
    }
}
