//! One-pass row kernels for inference: layer norm, group norm (+SiLU), GEGLU, and the blocked
//! transposition of a feature map's last two dimensions. Each returns `None` where it does not
//! apply ([`super::fused_applies`]), and the layer then runs candle's operations.

use candle_core::{CpuStorage, Result, Storage, Tensor, D};

use super::fast_math::{self, wide_fn};
use super::fused_applies;
use super::gemm::{with_f32, zeros};

/// Row-wise passes over at least this many elements split their rows across the tensor threads:
/// a serial pass between two parallel products leaves the second core idle.
const PARALLEL_ELEMS: usize = 1 << 16;

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

/// Layer normalisation over the last dimension in one pass per row, instead of nine tensor
/// operations.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !fused_applies(&[x, weight, bias]) || x.rank() == 0 {
        return Ok(None);
    }
    let (weight, bias) = (weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    let dim = weight.len();
    let x = x.contiguous()?;
    if x.dim(D::Minus1)? != dim || bias.len() != dim {
        return Ok(None);
    }
    let mut out = zeros(x.elem_count());
    let eps = eps as f32;
    let done = with_f32(&x, |xs| {
        by_row_blocks(xs, dim, &mut out, dim, |_, x, y| layer_norm_rows(x, y, &weight, &bias, eps));
        Ok(())
    })?;
    if done.is_none() {
        return Ok(None);
    }
    Tensor::from_vec(out, x.shape(), x.device()).map(Some)
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

/// `t` (`[B, R, C]`) with its last two dimensions swapped, contiguous, by the blocked, parallel
/// [`super::gemm::transpose`] (candle's strided copy runs on one thread).
pub fn swap_last_two(t: &Tensor) -> Result<Option<Tensor>> {
    let (b, r, c) = t.dims3()?;
    if !fused_applies(&[t]) || r * c == 0 {
        return Ok(None);
    }
    let t = t.contiguous()?;
    let mut out = zeros(t.elem_count());
    let done = with_f32(&t, |ts| {
        for (src, dst) in ts.chunks_exact(r * c).zip(out.chunks_exact_mut(r * c)) {
            super::gemm::transpose(src, r, c, dst);
        }
        Ok(())
    })?;
    done.map(|()| Tensor::from_vec(out, (b, c, r), t.device())).transpose()
}

/// GEGLU's gate in one pass: the first half of the last dimension times GELU (erf form) of the
/// second half.
pub fn geglu(h: &Tensor) -> Result<Option<Tensor>> {
    let last = h.dim(D::Minus1)?;
    let half = last / 2;
    if !fused_applies(&[h]) || last % 2 != 0 || last == 0 {
        return Ok(None);
    }
    let h = h.contiguous()?;
    let mut out = zeros(h.elem_count() / 2);
    let done = with_f32(&h, |hs| {
        by_row_blocks(hs, last, &mut out, half, |_, x, y| geglu_rows(x, y, half));
        Ok(())
    })?;
    if done.is_none() {
        return Ok(None);
    }
    let mut shape = h.dims().to_vec();
    let end = shape.len() - 1;
    shape[end] = half;
    Tensor::from_vec(out, shape, h.device()).map(Some)
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

/// Group normalisation of `x` (`[B, C, ...]`, `groups` dividing C), then SiLU if asked, in one
/// pass over the data instead of a dozen tensor operations with a buffer each.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !fused_applies(&[x, weight, bias]) || x.rank() < 3 || groups == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    let plane = x.elem_count() / (b * c).max(1);
    if c % groups != 0 || c != weight.elem_count() || c != bias.elem_count() {
        return Ok(None);
    }
    let per_group = c / groups * plane;
    if per_group == 0 {
        return Ok(None);
    }
    let (weight, bias) = (weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else { return Ok(None) };
    let src = &data[layout.start_offset()..layout.start_offset() + x.elem_count()];
    let mut out = zeros(src.len());
    let per_channel = c / groups;
    // Each group (of each picture) is a row; large maps spread their groups over the threads.
    by_row_blocks(src, per_group, &mut out, per_group, |first, inputs, outputs| {
        let rows = inputs.chunks_exact(per_group).zip(outputs.chunks_exact_mut(per_group));
        for (g, (input, output)) in (first..).zip(rows) {
            let channel = (g % groups) * per_channel;
            let channels = channel..channel + per_channel;
            normalise_group(input, output, &weight[channels.clone()], &bias[channels], eps, silu);
        }
    });
    drop(storage);
    Tensor::from_vec(out, x.shape(), x.device()).map(Some)
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
