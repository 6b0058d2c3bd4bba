//! Building blocks shared by the networks, written from primitive tensor operations so that
//! they also train (candle's fused layer-norm kernel has no backward pass).

use std::cell::Cell;

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

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
        let fast = super::fast_conv::conv2d(x, self.0.weight(), self.0.bias(), self.0.config())?;
        let y = match fast {
            Some(y) => y,
            None => self.0.forward(x)?,
        };
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
        if let Some(y) = self.fused(x, silu)? {
            return Ok(y);
        }
        let y = self.inner.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    /// The one-pass version, or `None` where it does not apply.
    fn fused(&self, x: &Tensor, silu: bool) -> Result<Option<Tensor>> {
        let tensors = [x, &self.weight, &self.bias];
        if tensors.iter().any(|t| t.dtype() != DType::F32 || !t.device().is_cpu() || t.track_op())
            || x.rank() < 3
        {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let plane = x.elem_count() / (b * c).max(1);
        if c % self.groups != 0 {
            return Ok(None);
        }
        let per_group = c / self.groups * plane;
        let (weight, bias) = (self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?);
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { return Ok(None) };
        let src = &data[layout.start_offset()..layout.start_offset() + x.elem_count()];
        let mut out = vec![0f32; src.len()];
        for (g, (input, output)) in
            src.chunks_exact(per_group).zip(out.chunks_exact_mut(per_group)).enumerate()
        {
            let n = per_group as f64;
            let mean = input.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = input.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let (mean, rstd) = (mean as f32, (1.0 / (var + self.eps).sqrt()) as f32);
            let first_channel = (g % self.groups) * (c / self.groups);
            for (k, (xs, ys)) in input.chunks_exact(plane).zip(output.chunks_exact_mut(plane)).enumerate() {
                let (scale, shift) = (
                    rstd * weight[first_channel + k],
                    bias[first_channel + k] - mean * rstd * weight[first_channel + k],
                );
                for (y, &v) in ys.iter_mut().zip(xs) {
                    let h = v * scale + shift;
                    *y = if silu { h / (1.0 + (-h).exp()) } else { h };
                }
            }
        }
        drop(storage);
        Tensor::from_vec(out, x.shape(), x.device()).map(Some)
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

    /// The one-pass group norm (+ SiLU) against candle's, with tracked weights forcing candle's path.
    #[test]
    fn fused_group_norm_matches_candles() {
        let dev = Device::Cpu;
        let weight = Tensor::randn(1f32, 0.5, 6, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.5, 6, &dev).unwrap();
        let x = Tensor::randn(1f32, 3.0, (2, 6, 5, 3), &dev).unwrap();
        let plain = |w: Tensor, b: Tensor| {
            let inner = candle_nn::GroupNorm::new(w.clone(), b.clone(), 6, 3, 1e-5).unwrap();
            GroupNorm { inner, weight: w, bias: b, groups: 3, eps: 1e-5 }
        };
        let fast = plain(weight.clone(), bias.clone());
        let reference = plain(
            Var::from_tensor(&weight).unwrap().as_tensor().clone(),
            Var::from_tensor(&bias).unwrap().as_tensor().clone(),
        );
        assert!(fast.fused(&x, true).unwrap().is_some());
        assert!(reference.fused(&x, true).unwrap().is_none());
        for silu in [false, true] {
            let (a, b) = (fast.run(&x, silu).unwrap(), reference.run(&x, silu).unwrap());
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "silu {silu}: max difference {diff}");
        }
    }
}
