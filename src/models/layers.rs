//! Building blocks shared by the networks. Each has two paths: candle's device-generic
//! operations (differentiable, what a GPU and training run), and for inference on the CPU the
//! one-pass kernels of [`crate::kernels`], which give the same numbers to rounding and are tested
//! against the first path. The kernels decide where they apply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::kernels::{self, winograd};

/// Floating-point operations of the convolutions, linear layers and attention products run in
/// this process (a relaxed counter: one add per layer call).
static FLOPS: AtomicU64 = AtomicU64::new(0);

fn record_flops(flops: u64) {
    FLOPS.fetch_add(flops, Ordering::Relaxed);
}

/// Runs `f` and returns what it returned with the floating-point operations (2 per multiply-add)
/// of the convolutions, linear layers and attention products run meanwhile, on any thread: the
/// arithmetic that `bench` compares with the machine's matrix-multiply rate. Counts are exact
/// only while nothing else runs networks.
pub fn count_flops<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = FLOPS.load(Ordering::Relaxed);
    let out = f();
    (out, FLOPS.load(Ordering::Relaxed) - before)
}

/// Adds the multiply-adds of a layer whose weight has `weight_elems` elements and `outputs`
/// output features, for an output of `output_elems` elements.
fn add_flops(weight_elems: usize, outputs: usize, output_elems: usize) {
    let flops = 2 * weight_elems as u64 * (output_elems / outputs.max(1)) as u64;
    record_flops(flops);
}

/// A 2-D convolution (`torch.nn.Conv2d`) that counts its arithmetic. A 3×3 stride-1 convolution
/// at a resolution where it pays runs by Winograd's algorithm, its kernel transformed on first use
/// and kept while a memory budget allows (the weights of an inference model do not change).
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
    winograd: Arc<OnceLock<winograd::Kernel>>,
}

impl Conv2d {
    /// The differentiable path: our im2col convolution where it applies (its backward pass is
    /// several times faster than candle's), candle's otherwise.
    fn trainable(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.inner.config();
        let ours = if cfg.groups == 1 && cfg.dilation == 1 {
            kernels::conv_train::conv2d(x, self.inner.weight(), cfg.stride, cfg.padding)?
        } else {
            None
        };
        let Some(y) = ours else { return self.inner.forward(x) };
        match self.inner.bias() {
            Some(bias) => y.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
            None => Ok(y),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias, cfg) = (self.inner.weight(), self.inner.bias(), self.inner.config());
        let fast = match winograd::conv_layer(x, weight, bias, cfg, &self.winograd)? {
            Some(y) => Some(y),
            None => kernels::fast_conv::conv2d(x, weight, bias, cfg)?,
        };
        let y = match fast {
            Some(y) => y,
            None => self.trainable(x)?,
        };
        add_flops(self.inner.weight().elem_count(), self.inner.weight().dim(0)?, y.elem_count());
        Ok(y)
    }
}

/// A linear layer (`torch.nn.Linear`) that counts its arithmetic.
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match kernels::linear::linear(x, self.0.weight(), self.0.bias())? {
            Some(y) => y,
            None => self.0.forward(x)?,
        };
        add_flops(self.0.weight().elem_count(), self.0.weight().dim(0)?, y.elem_count());
        Ok(y)
    }
}

/// A linear layer with bias, weights `weight` and `bias` under `vb`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb).map(Linear)
}

/// A linear layer without bias.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear_no_bias(in_dim, out_dim, vb).map(Linear)
}

/// Layer normalisation over the last dimension with weight and bias (`torch.nn.LayerNorm`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of size `dim` from `vb`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = kernels::rows::layer_norm(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// `t` (`[B, R, C]`) with its last two dimensions swapped, contiguous: `[B, C, R]` (a feature
/// map's channels to tokens and back).
pub fn swap_last_two(t: &Tensor) -> Result<Tensor> {
    match kernels::rows::swap_last_two(t)? {
        Some(y) => Ok(y),
        None => t.transpose(1, 2)?.contiguous(),
    }
}

/// GEGLU's gate: the first half of the last dimension times GELU (erf form) of the second half.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if let Some(y) = kernels::rows::geglu(h)? {
        return Ok(y);
    }
    let half = h.dim(D::Minus1)? / 2;
    let (value, gate) = (h.narrow(D::Minus1, 0, half)?, h.narrow(D::Minus1, half, half)?);
    value * gate.gelu_erf()?
}

/// Group normalisation (`torch.nn.GroupNorm`), optionally followed by SiLU. Where no gradient
/// is tracked (inference, f32 on the CPU) both happen in one pass over the data instead of a
/// dozen tensor operations with a buffer each; training takes candle's differentiable path.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// Loads a group norm's `weight` and `bias` (`channels` each) from `vb`.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        candle_core::bail!("{}: {channels} channels cannot be split into {groups} groups", vb.prefix());
    }
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    Ok(GroupNorm { inner, weight, bias, groups, eps })
}

impl GroupNorm {
    /// Normalises `x` (`[B, C, ...]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }

    /// Normalises `x`, then applies SiLU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if let Some(y) = kernels::rows::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, silu)?
        {
            return Ok(y);
        }
        let y = self.inner.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

/// Multi-head attention core: softmax(q kᵀ / sqrt(d)) v for `[batch, tokens, heads · d]` inputs.
/// `mask` (broadcast to `[batch, heads, q, k]`) is added to the scores.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    if heads == 0 || !dim.is_multiple_of(heads) {
        candle_core::bail!("attention: {dim} channels cannot be split into {heads} heads");
    }
    let d = dim / heads;
    if mask.is_none() {
        if let Some(out) = kernels::attention::attention(q, k, v, heads)? {
            record_flops(4 * (b * heads * n * m * d) as u64);
            return Ok(out);
        }
    }
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let mut scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    // Two products of b · heads · n · m · d multiply-adds each.
    record_flops(4 * (b * heads * n * m * d) as u64);
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, dim))
}

/// Attention with paint-with-words' extra scores: `bias` `[n, m]` (region weights per query
/// position and key token) times `strength · max(QKᵀ)` is added to the unscaled scores, the
/// maximum taken over the whole score tensor, before the usual scaling and softmax.
pub fn attention_with_bias(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: &Tensor,
    strength: f64,
) -> Result<Tensor> {
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    if heads == 0 || !dim.is_multiple_of(heads) {
        candle_core::bail!("attention: {dim} channels cannot be split into {heads} heads");
    }
    if bias.dims() != [n, m] {
        candle_core::bail!("attention: a bias of {:?} for {n} queries and {m} keys", bias.dims());
    }
    let d = dim / heads;
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let scores = q.matmul(&k.t()?)?;
    let top = scores.to_dtype(DType::F32)?.max_all()?.to_scalar::<f32>()?;
    let extra = (bias.to_dtype(scores.dtype())? * (strength * f64::from(top)))?;
    let scores = (scores.broadcast_add(&extra)? * (1.0 / (d as f64).sqrt()))?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    record_flops(4 * (b * heads * n * m * d) as u64);
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, dim))
}

/// A `k`×`k` convolution with bias.
pub fn conv(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let inner =
        candle_nn::conv2d(in_c, out_c, k, Conv2dConfig { padding, stride, ..Default::default() }, vb)?;
    Ok(Conv2d { inner, winograd: Arc::default() })
}

/// A `k`×`k` convolution without bias (TAESD's resampling convolutions).
pub fn conv_no_bias(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding, stride, ..Default::default() };
    let inner = candle_nn::conv2d_no_bias(in_c, out_c, k, cfg, vb)?;
    Ok(Conv2d { inner, winograd: Arc::default() })
}

/// diffusers' `ResnetBlock2D`: norm, SiLU, conv, (+ projected time embedding), norm, SiLU, conv,
/// plus the input (through a 1x1 convolution when the width changes).
#[derive(Debug)]
pub struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    /// A block from `in_c` to `out_c` channels; `temb` is the time embedding's width, if any.
    pub fn new(
        in_c: usize,
        out_c: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let shortcut =
            (in_c != out_c).then(|| conv(in_c, out_c, 1, 1, 0, vb.pp("conv_shortcut"))).transpose()?;
        let time_emb_proj = temb.map(|t| linear(t, out_c, vb.pp("time_emb_proj"))).transpose()?;
        Ok(Self {
            norm1: group_norm(groups, in_c, eps, vb.pp("norm1"))?,
            conv1: conv(in_c, out_c, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: group_norm(groups, out_c, eps, vb.pp("norm2"))?,
            conv2: conv(out_c, out_c, 3, 1, 1, vb.pp("conv2"))?,
            shortcut,
        })
    }

    /// `temb` is the SiLU of the time embedding, `[batch, width]`, for blocks that take one.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h.broadcast_add(&proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// The one-pass group norm (+ SiLU) against candle's, with tracked weights forcing candle's
    /// path: a small map, and one large enough to spread its groups over the threads.
    #[test]
    fn fused_group_norm_matches_candles() {
        for shape in [(2, 6, 5, 3), (2, 6, 300, 300)] {
            group_norm_matches_candles(shape);
        }
    }

    fn group_norm_matches_candles(shape: (usize, usize, usize, usize)) {
        let dev = Device::Cpu;
        let weight = Tensor::randn(1f32, 0.5, 6, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.5, 6, &dev).unwrap();
        let x = Tensor::randn(1f32, 3.0, shape, &dev).unwrap();
        let plain = |w: Tensor, b: Tensor| {
            let inner = candle_nn::GroupNorm::new(w.clone(), b.clone(), 6, 3, 1e-5).unwrap();
            GroupNorm { inner, weight: w, bias: b, groups: 3, eps: 1e-5 }
        };
        let fast = plain(weight.clone(), bias.clone());
        let reference = plain(
            Var::from_tensor(&weight).unwrap().as_tensor().clone(),
            Var::from_tensor(&bias).unwrap().as_tensor().clone(),
        );
        let fused = |n: &GroupNorm| kernels::rows::group_norm(&x, &n.weight, &n.bias, 3, 1e-5, true).unwrap();
        assert!(fused(&fast).is_some() && fused(&reference).is_none());
        for silu in [false, true] {
            let (a, b) = (fast.run(&x, silu).unwrap(), reference.run(&x, silu).unwrap());
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{shape:?}, silu {silu}: max difference {diff}");
        }
    }
}

#[cfg(test)]
mod linear_tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn fast_linear_matches_candles() {
        let dev = Device::Cpu;
        // Many tokens for the width; few (weights from the left); few and large enough that the
        // output channels are split across the threads.
        for (rows, in_dim, out_dim) in [(6, 7, 5), (3, 64, 9), (16, 1024, 1030)] {
            let weight = Tensor::randn(0f32, 1.0, (out_dim, in_dim), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, out_dim, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, rows, in_dim), &dev).unwrap();
            let fast = Linear(candle_nn::Linear::new(weight.clone(), Some(bias.clone())));
            let tracked = Var::from_tensor(&weight).unwrap().as_tensor().clone();
            let reference = Linear(candle_nn::Linear::new(tracked, Some(bias)));
            let fused = |l: &Linear| kernels::linear::linear(&x, l.0.weight(), l.0.bias()).unwrap();
            assert!(fused(&reference).is_none());
            let (a, b) = (fused(&fast).expect("fast path"), reference.forward(&x).unwrap());
            assert_eq!(a.dims(), &[1, rows, out_dim]);
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(
                diff < 1e-5 * (in_dim as f32).sqrt(),
                "max difference {diff} for {rows}x{in_dim}->{out_dim}"
            );
        }
    }
}

#[cfg(test)]
mod fused_tests {
    use candle_core::{Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// Each fused path against the same operation on a tracked copy (candle's path).
    #[test]
    fn fused_paths_match_candles_operations() {
        let dev = Device::Cpu;
        let tracked = |t: &Tensor| Var::from_tensor(t).unwrap().as_tensor().clone();
        // The second shape is large enough for blocks of rows on each thread (997 rows, a prime:
        // blocks of unequal size whatever the thread count).
        for (b, n, d) in [(1, 10, 8), (1, 997, 80)] {
            let x = Tensor::randn(0.5f32, 2.0, (b, n, d), &dev).unwrap();
            let (w, bias) =
                (Tensor::randn(1f32, 0.3, d, &dev).unwrap(), Tensor::randn(0f32, 0.3, d, &dev).unwrap());
            let fast = LayerNorm { weight: w.clone(), bias: bias.clone(), eps: 1e-5 };
            let slow = LayerNorm { weight: tracked(&w), bias, eps: 1e-5 };
            let fused = |n: &LayerNorm| kernels::rows::layer_norm(&x, &n.weight, &n.bias, n.eps).unwrap();
            assert!(fused(&fast).is_some() && fused(&slow).is_none());
            assert!(max_diff(&fast.forward(&x).unwrap(), &slow.forward(&x).unwrap()) < 1e-5);

            // Relative to the largest output: GELU's erf is approximated to 5e-7, scaled by the
            // value and the gate, both up to about 9 here.
            let slow = geglu(&tracked(&x)).unwrap();
            let largest = slow.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(&geglu(&x).unwrap(), &slow) < 1e-6 * (1.0 + largest));
            assert_eq!(slow.dims(), &[b, n, d / 2]);
        }

        // Swapping a map's channels and tokens: small, empty, and large enough to run in parallel.
        for shape in [(2, 3, 5), (1, 0, 4), (2, 300, 257)] {
            let t = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let expected = tracked(&t).transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(
                swap_last_two(&t).unwrap().to_vec3::<f32>().unwrap(),
                expected.to_vec3::<f32>().unwrap()
            );
        }

        let x = Tensor::randn(0.5f32, 2.0, (2, 5, 8), &dev).unwrap();

        let (k, v) = (
            Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap(),
            Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap(),
        );
        assert!(kernels::attention::attention(&x, &k, &v, 2).unwrap().is_some());
        let fast = attention(&x, &k, &v, 2, None).unwrap();
        let slow = attention(&tracked(&x), &k, &v, 2, None).unwrap();
        assert_eq!(fast.dims(), &[2, 5, 8]);
        assert!(max_diff(&fast, &slow) < 1e-5, "{}", max_diff(&fast, &slow));

        // Large enough for heads in parallel.
        let big = |n| Tensor::randn(0f32, 1.0, (1, n, 64), &dev).unwrap();
        let (q, k, v) = (big(512), big(512), big(512));
        let fast = attention(&q, &k, &v, 4, None).unwrap();
        let slow = attention(&tracked(&q), &k, &v, 4, None).unwrap();
        assert!(max_diff(&fast, &slow) < 1e-5, "{}", max_diff(&fast, &slow));
        // More queries than a block of scores holds, the last block partial.
        let (q, k, v) = (big(1200), big(700), big(700));
        let rows = kernels::attention::attention_rows(700);
        assert!(rows < 1200 && 1200 % rows != 0);
        let fast = attention(&q, &k, &v, 4, None).unwrap();
        let slow = attention(&tracked(&q), &k, &v, 4, None).unwrap();
        assert!(max_diff(&fast, &slow) < 1e-5, "{}", max_diff(&fast, &slow));
    }

    /// A 3x3 convolution large enough for the Winograd path (twice, the second with the kernel
    /// kept from the first) and one too small for it, against candle's convolution; sizes not a
    /// multiple of the 4x4 output blocks included.
    #[test]
    fn convolution_paths_match_candles() {
        let dev = Device::Cpu;
        for (b, c, o, h, w, winograd) in
            [(1, 32, 40, 18, 13, true), (2, 48, 32, 16, 8, true), (1, 8, 8, 8, 8, false)]
        {
            assert_eq!(winograd::applies(b, c, o, h, w), winograd, "{:?}", (b, c, o, h, w));
            let weight = Tensor::randn(0f32, 0.1, (o, c, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let cfg = Conv2dConfig { padding: 1, ..Default::default() };
            let layer =
                Conv2d { inner: candle_nn::Conv2d::new(weight, Some(bias), cfg), winograd: Arc::default() };
            for _ in 0..2 {
                let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
                let reference = layer.inner.forward(&x).unwrap();
                let ours = layer.forward(&x).unwrap();
                let diff =
                    (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-4, "max difference {diff} for {:?}", (b, c, o, h, w));
            }
            assert_eq!(layer.winograd.get().is_some(), winograd, "kernel kept for {:?}", (b, c, o, h, w));
        }
    }

    /// Head and group counts come from config files: ones that do not divide the channels are
    /// errors naming the layer, not a division by zero.
    #[test]
    fn impossible_heads_and_groups_are_errors() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        for groups in [0, 4] {
            let err = group_norm(groups, 6, 1e-5, vb.pp("mid").pp("norm")).unwrap_err().to_string();
            assert!(err.contains("mid.norm") && err.contains(&format!("{groups} groups")), "{err}");
        }
        let x = Tensor::zeros((1, 3, 6), DType::F32, &Device::Cpu).unwrap();
        for heads in [0, 4] {
            let err = attention(&x, &x, &x, heads, None).unwrap_err().to_string();
            assert!(err.contains(&format!("{heads} heads")), "{err}");
        }
    }
}
