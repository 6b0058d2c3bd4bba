//! Building blocks shared by the networks, written from primitive tensor operations so that
//! they also train (candle's fused layer-norm kernel has no backward pass).

use std::cell::Cell;

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, GroupNorm, VarBuilder};

thread_local! {
    /// Floating-point operations of the convolutions, linear layers and attention products run
    /// on this thread since the last [`count_flops`] began.
    static FLOPS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` and returns what it returned with the floating-point operations (2 per multiply-add)
/// of the convolutions, linear layers and attention products it ran on this thread: the
/// arithmetic that `bench` compares with the machine's matrix-multiply rate.
pub fn count_flops<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = FLOPS.with(Cell::get);
    let out = f();
    (out, FLOPS.with(Cell::get) - before)
}

/// Adds the multiply-adds of a layer whose weight has `weight_elems` elements and `outputs`
/// output features, for an output of `output_elems` elements.
fn add_flops(weight_elems: usize, outputs: usize, output_elems: usize) {
    let flops = 2 * weight_elems as u64 * (output_elems / outputs.max(1)) as u64;
    FLOPS.with(|c| c.set(c.get() + flops));
}

/// A 2-D convolution (`torch.nn.Conv2d`) that counts its arithmetic.
#[derive(Debug, Clone)]
pub struct Conv2d(candle_nn::Conv2d);

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.0.forward(x)?;
        add_flops(self.0.weight().elem_count(), self.0.weight().dim(0)?, y.elem_count());
        Ok(y)
    }
}

/// A linear layer (`torch.nn.Linear`) that counts its arithmetic.
#[derive(Debug, Clone)]
pub struct Linear(candle_nn::Linear);

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.0.forward(x)?;
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
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Multi-head attention core: softmax(q kᵀ / sqrt(d)) v for `[batch, tokens, heads · d]` inputs.
/// `mask` (broadcast to `[batch, heads, q, k]`) is added to the scores.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    let d = dim / heads;
    let split = |t: &Tensor, len: usize| t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let mut scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    // Two products of b · heads · n · m · d multiply-adds each.
    FLOPS.with(|c| c.set(c.get() + 4 * (b * heads * n * m * d) as u64));
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
    candle_nn::conv2d(in_c, out_c, k, Conv2dConfig { padding, stride, ..Default::default() }, vb).map(Conv2d)
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
            norm1: candle_nn::group_norm(groups, in_c, eps, vb.pp("norm1"))?,
            conv1: conv(in_c, out_c, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: candle_nn::group_norm(groups, out_c, eps, vb.pp("norm2"))?,
            conv2: conv(out_c, out_c, 3, 1, 1, vb.pp("conv2"))?,
            shortcut,
        })
    }

    /// `temb` is the SiLU of the time embedding, `[batch, width]`, for blocks that take one.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h.broadcast_add(&proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}
