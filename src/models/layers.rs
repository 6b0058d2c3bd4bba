//! Building blocks shared by the networks. Each has two paths: where a gradient is tracked
//! (training), candle's primitive, differentiable operations (its fused layer-norm kernel has no
//! backward pass); otherwise one-pass inference kernels on raw f32 slices, which give the same
//! numbers to rounding and are tested against the first path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::fast_math::{self, wide_fn};
use super::gemm::{add_product, add_product_by_rows, plain_f32, set_product, with_f32, zeros, Threads, View};
use super::winograd;

/// Row-wise passes (layer norm, GEGLU, group norm) over at least this many elements split their
/// rows across the tensor threads: a serial pass between two parallel products leaves the
/// second core idle.
const PARALLEL_ELEMS: usize = 1 << 16;

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
    /// The Winograd path, or `None` where it does not apply.
    fn winograd(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (weight, cfg) = (self.inner.weight(), self.inner.config());
        let bias = self.inner.bias();
        if !plain_f32(&[x, weight]) || bias.is_some_and(|b| !plain_f32(&[b])) {
            return Ok(None);
        }
        let ((b, c, h, w), (o, wc, kh, kw)) = (x.dims4()?, weight.dims4()?);
        let square = (kh, kw, cfg.stride, cfg.padding, cfg.dilation, cfg.groups) == (3, 3, 1, 1, 1, 1);
        if !square || wc != c || !winograd::applies(b, c, o, h, w) {
            return Ok(None);
        }
        let kernel = match self.winograd.get() {
            Some(kernel) => kernel,
            None => {
                // Not when the weights are not plain f32, nor past the budget for kept kernels.
                // Built outside the `OnceLock`: the transform runs on the thread pool, where a
                // stolen job for this same layer (the other half of a guided batch) would wait on
                // the lock forever. Two halves may both build it the first time; one is dropped,
                // releasing its share of the budget.
                let made = with_f32(&weight.contiguous()?, |g| winograd::Kernel::new(g, o, c))?;
                let Some(Some(kernel)) = made else { return Ok(None) };
                self.winograd.get_or_init(|| kernel)
            }
        };
        let bias = match bias {
            Some(bias) => Some(bias.to_vec1::<f32>()?),
            None => None,
        };
        let x = x.contiguous()?;
        let out = with_f32(&x, |xd| winograd::conv3x3(xd, (b, h, w), kernel, bias.as_deref()))?;
        out.map(|out| Tensor::from_vec(out, (b, o, h, w), x.device())).transpose()
    }
}

impl Conv2d {
    /// The differentiable path: our im2col convolution where it applies (its backward pass is
    /// several times faster than candle's), candle's otherwise.
    fn trainable(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.inner.config();
        let ours = if cfg.groups == 1 && cfg.dilation == 1 {
            super::conv_train::conv2d(x, self.inner.weight(), cfg.stride, cfg.padding)?
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
        let fast = match self.winograd(x)? {
            Some(y) => Some(y),
            None => super::fast_conv::conv2d(x, self.inner.weight(), self.inner.bias(), self.inner.config())?,
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
        let y = match self.fast(x)? {
            Some(y) => y,
            None => self.0.forward(x)?,
        };
        add_flops(self.0.weight().elem_count(), self.0.weight().dim(0)?, y.elem_count());
        Ok(y)
    }
}

impl Linear {
    /// `x · Wᵀ + b` through [`super::gemm`] (bias pre-filled, the weight read transposed in
    /// place), or `None` where gradients are tracked or the tensors are not f32 on the CPU.
    fn fast(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (weight, bias) = (self.0.weight(), self.0.bias());
        if !plain_f32(&[x, weight]) || bias.is_some_and(Tensor::track_op) || x.rank() == 0 {
            return Ok(None);
        }
        let (out_dim, in_dim) = weight.dims2()?;
        let dims = x.dims();
        let rows = x.elem_count() / in_dim.max(1);
        if dims[dims.len() - 1] != in_dim {
            return Ok(None);
        }
        let bias = match bias {
            Some(bias) => Some(bias.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let mut out = zeros(rows * out_dim);
        let x = x.contiguous()?;
        let done = with_f32(&x, |xs| {
            with_f32(weight, |w| {
                let w = View { data: w, shape: (out_dim, in_dim), strides: (in_dim, 1) };
                if rows * 4 <= in_dim {
                    // Few tokens for the width (Stable Diffusion's low-resolution levels, text
                    // tokens): yᵀ = W · xᵀ, output channels split across the threads, so the
                    // weights stream through once in their stored order. Read transposed, as
                    // below, gemm gathers them column by column: 1.5-5 times slower here, while
                    // with many tokens the transposed output would cost more than it saves. The
                    // input is transposed once here: read strided, gemm gathered it on each
                    // thread (a quarter slower).
                    let mut x_t = vec![0f32; rows * in_dim];
                    super::gemm::transpose(xs, rows, in_dim, &mut x_t);
                    let xt = View { data: &x_t, shape: (in_dim, rows), strides: (rows, 1) };
                    let mut yt = vec![0f32; out_dim * rows];
                    if let Some(bias) = &bias {
                        for (row, value) in yt.chunks_exact_mut(rows).zip(bias) {
                            row.fill(*value);
                        }
                    }
                    add_product_by_rows(&mut yt, w, xt)?;
                    super::gemm::transpose(&yt, out_dim, rows, &mut out);
                    Ok(())
                } else {
                    if let Some(bias) = &bias {
                        for row in out.chunks_exact_mut(out_dim) {
                            row.copy_from_slice(bias);
                        }
                    }
                    let a = View { data: xs, shape: (rows, in_dim), strides: (in_dim, 1) };
                    let wt = View { data: w.data, shape: (in_dim, out_dim), strides: (1, in_dim) };
                    add_product(&mut out, a, wt, Threads::Auto)
                }
            })
        })?;
        if done.flatten().is_none() {
            return Ok(None);
        }
        let mut shape = dims.to_vec();
        let last = shape.len() - 1;
        shape[last] = out_dim;
        Tensor::from_vec(out, shape, x.device()).map(Some)
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
        if let Some(y) = self.fused(x)? {
            return Ok(y);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

impl LayerNorm {
    /// One pass per row where no gradient is tracked, instead of nine tensor operations.
    fn fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !plain_f32(&[x, &self.weight, &self.bias]) || x.rank() == 0 {
            return Ok(None);
        }
        let (weight, bias) = (self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?);
        let dim = weight.len();
        let x = x.contiguous()?;
        if x.dim(D::Minus1)? != dim {
            return Ok(None);
        }
        let mut out = zeros(x.elem_count());
        let eps = self.eps as f32;
        let done = with_f32(&x, |xs| {
            by_row_blocks(xs, dim, &mut out, dim, |_, x, y| layer_norm_rows(x, y, &weight, &bias, eps));
            Ok(())
        })?;
        if done.is_none() {
            return Ok(None);
        }
        Tensor::from_vec(out, x.shape(), x.device()).map(Some)
    }
}

/// `f(first_row, rows_in, rows_out)` over blocks of whole rows (`xs` rows of `x_len`, `out` rows
/// of `out_len`), one block per tensor thread from [`PARALLEL_ELEMS`] on.
fn by_row_blocks(
    xs: &[f32],
    x_len: usize,
    out: &mut [f32],
    out_len: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    let rows = out.len() / out_len.max(1);
    let pool = candle_core::utils::get_num_threads();
    if pool < 2 || xs.len() < PARALLEL_ELEMS || rows < 2 {
        return f(0, xs, out);
    }
    use rayon::prelude::*;
    let block = rows.div_ceil(pool);
    out.par_chunks_mut(block * out_len)
        .zip(xs.par_chunks(block * x_len))
        .enumerate()
        .for_each(|(i, (y, x))| f(i * block, x, y));
}

wide_fn! {
    /// Layer normalisation of each `weight.len()`-long row of `xs` into `out`.
    fn layer_norm_rows(xs: &[f32], out: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let dim = weight.len();
        for (row, dst) in xs.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let mean = row.iter().sum::<f32>() / dim as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for (((y, v), w), b) in dst.iter_mut().zip(row).zip(weight).zip(bias) {
                *y = (v - mean) * rstd * w + b;
            }
        }
    }
}

/// `t` (`[B, R, C]`) with its last two dimensions swapped, contiguous: `[B, C, R]` (a feature
/// map's channels to tokens and back). Plain f32 goes through the blocked, parallel
/// [`super::gemm::transpose`] instead of candle's strided copy, which runs on one thread.
pub fn swap_last_two(t: &Tensor) -> Result<Tensor> {
    let (b, r, c) = t.dims3()?;
    if plain_f32(&[t]) && r * c > 0 {
        let t = t.contiguous()?;
        let mut out = zeros(t.elem_count());
        let done = with_f32(&t, |ts| {
            for (src, dst) in ts.chunks_exact(r * c).zip(out.chunks_exact_mut(r * c)) {
                super::gemm::transpose(src, r, c, dst);
            }
            Ok(())
        })?;
        if done.is_some() {
            return Tensor::from_vec(out, (b, c, r), t.device());
        }
    }
    t.transpose(1, 2)?.contiguous()
}

/// GEGLU's gate: the first half of the last dimension times GELU (erf form) of the second half,
/// in one pass where no gradient is tracked.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    let last = h.dim(D::Minus1)?;
    let half = last / 2;
    if plain_f32(&[h]) && last % 2 == 0 && last > 0 {
        let h = h.contiguous()?;
        let mut out = zeros(h.elem_count() / 2);
        let done = with_f32(&h, |hs| {
            by_row_blocks(hs, last, &mut out, half, |_, x, y| geglu_rows(x, y, half));
            Ok(())
        })?;
        if done.is_some() {
            let mut shape = h.dims().to_vec();
            let last = shape.len() - 1;
            shape[last] = half;
            return Tensor::from_vec(out, shape, h.device());
        }
    }
    let (value, gate) = (h.narrow(D::Minus1, 0, half)?, h.narrow(D::Minus1, half, half)?);
    value * gate.gelu_erf()?
}

wide_fn! {
    /// GEGLU over rows of `2 · half` values (value, then gate) into rows of `half`.
    fn geglu_rows(hs: &[f32], out: &mut [f32], half: usize) {
        for (row, dst) in hs.chunks_exact(2 * half).zip(out.chunks_exact_mut(half)) {
            let (value, gate) = row.split_at(half);
            for ((y, v), g) in dst.iter_mut().zip(value).zip(gate) {
                // GELU's erf form, as candle's `gelu_erf` (erf to 5e-7).
                let gelu = (fast_math::erf(g * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * g;
                *y = v * gelu;
            }
        }
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
        if !plain_f32(&tensors) || x.rank() < 3 {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let plane = x.elem_count() / (b * c).max(1);
        if c % self.groups != 0 || c != self.weight.elem_count() {
            return Ok(None);
        }
        let per_group = c / self.groups * plane;
        if per_group == 0 {
            return Ok(None);
        }
        let (weight, bias) = (self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?);
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { return Ok(None) };
        let src = &data[layout.start_offset()..layout.start_offset() + x.elem_count()];
        let mut out = zeros(src.len());
        let per_channel = c / self.groups;
        // Each group (of each picture) is a row; large maps spread their groups over the threads.
        by_row_blocks(src, per_group, &mut out, per_group, |first, inputs, outputs| {
            let groups = inputs.chunks_exact(per_group).zip(outputs.chunks_exact_mut(per_group));
            for (g, (input, output)) in (first..).zip(groups) {
                let channel = (g % self.groups) * per_channel;
                let channels = channel..channel + per_channel;
                normalise_group(input, output, &weight[channels.clone()], &bias[channels], self.eps, silu);
            }
        });
        drop(storage);
        Tensor::from_vec(out, x.shape(), x.device()).map(Some)
    }
}

wide_fn! {
    /// Normalises one group (`weight.len()` channels of equal planes) of `input` into `output`
    /// with that group's statistics and its channels' scale and shift, then SiLU if asked.
    fn normalise_group(input: &[f32], output: &mut [f32], weight: &[f32], bias: &[f32], eps: f64, silu: bool) {
        let n = input.len() as f64;
        let plane = input.len() / weight.len().max(1);
        let mean = fast_math::sum(input) / n;
        let var = fast_math::sum_by(input, |v| (f64::from(v) - mean).powi(2)) / n;
        let (mean, rstd) = (mean as f32, (1.0 / (var + eps).sqrt()) as f32);
        for (k, (xs, ys)) in input.chunks_exact(plane).zip(output.chunks_exact_mut(plane)).enumerate() {
            let (scale, shift) = (rstd * weight[k], bias[k] - mean * rstd * weight[k]);
            if silu {
                for (y, &v) in ys.iter_mut().zip(xs) {
                    let h = v * scale + shift;
                    *y = h / (1.0 + fast_math::exp(-h));
                }
            } else {
                for (y, &v) in ys.iter_mut().zip(xs) {
                    *y = v * scale + shift;
                }
            }
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
        if let Some(out) = attention_fused(q, k, v, heads)? {
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

/// Query rows per block of attention scores over `keys` keys: about 1 MiB of scores (at least 16
/// rows), which stays in cache between the two products.
fn attention_rows(keys: usize) -> usize {
    ((1 << 18) / keys.max(1)).max(16)
}

/// Unmasked attention head by head on strided views of q, k and v — no split into heads, no
/// transposes, the softmax in place — where no gradient is tracked; `None` elsewhere. `heads`
/// divides the channels (`attention` checks it).
fn attention_fused(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    if !plain_f32(&[q, k, v]) {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    if k.dims3()? != (b, m, dim) || v.dims3()? != (b, m, dim) {
        return Ok(None);
    }
    let d = dim / heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    // Large attention (Stable Diffusion's 1024-token maps) runs its heads in parallel, each on
    // one thread; small attention stays on the calling thread.
    let parallel = b * heads > 1 && b * heads * n * m * d >= super::gemm::PARALLEL_MACS;
    let threads = if parallel { Threads::One } else { Threads::Auto };
    let mut out = zeros(b * n * dim);
    let done = with_f32(&q, |qs| {
        with_f32(&k, |ks| {
            with_f32(&v, |vs| {
                // One head of one picture: its `n × d` outputs, a block of query rows at a time,
                // so the scores stay a cache-sized buffer reused by every block (all `n × m` of
                // them at 512x512's 4096 tokens were 64 MiB a head, freshly faulted in).
                let head = |index: usize| -> Result<Vec<f32>> {
                    let (bi, h) = (index / heads, index % heads);
                    let (qo, ko) = (bi * n * dim + h * d, bi * m * dim + h * d);
                    let block = attention_rows(m).min(n);
                    let mut scores = vec![0f32; block * m];
                    let kt = View { data: &ks[ko..], shape: (d, m), strides: (1, dim) };
                    let vv = View { data: &vs[ko..], shape: (m, d), strides: (dim, 1) };
                    let mut result = vec![0f32; n * d];
                    for start in (0..n).step_by(block.max(1)) {
                        let rows = block.min(n - start);
                        let s = &mut scores[..rows * m];
                        let qv = View { data: &qs[qo + start * dim..], shape: (rows, d), strides: (dim, 1) };
                        set_product(s, qv, kt, threads)?;
                        fast_math::softmax_rows(s, m, scale);
                        let p = View { data: s, shape: (rows, m), strides: (m, 1) };
                        add_product(&mut result[start * d..(start + rows) * d], p, vv, threads)?;
                    }
                    Ok(result)
                };
                let results: Vec<Vec<f32>> = if parallel {
                    use rayon::prelude::*;
                    (0..b * heads).into_par_iter().map(head).collect::<Result<_>>()?
                } else {
                    (0..b * heads).map(head).collect::<Result<_>>()?
                };
                for (index, result) in results.iter().enumerate() {
                    let (bi, h) = (index / heads, index % heads);
                    for (i, row) in result.chunks_exact(d).enumerate() {
                        out[bi * n * dim + i * dim + h * d..][..d].copy_from_slice(row);
                    }
                }
                Ok(())
            })
        })
    })?;
    if done.flatten().flatten().is_none() {
        return Ok(None);
    }
    Tensor::from_vec(out, (b, n, dim), q.device()).map(Some)
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
        assert!(fast.fused(&x, true).unwrap().is_some());
        assert!(reference.fused(&x, true).unwrap().is_none());
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
            assert!(reference.fast(&x).unwrap().is_none());
            let (a, b) = (fast.fast(&x).unwrap().expect("fast path"), reference.forward(&x).unwrap());
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
            assert!(fast.fused(&x).unwrap().is_some() && slow.fused(&x).unwrap().is_none());
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
        assert!(attention_fused(&x, &k, &v, 2).unwrap().is_some());
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
        assert!(attention_rows(700) < 1200 && 1200 % attention_rows(700) != 0);
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
