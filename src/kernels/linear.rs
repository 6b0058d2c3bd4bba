//! The inference linear layer: `x · Wᵀ + b` straight through [`super::gemm`], the bias
//! pre-filled and the weight read transposed in place.

use candle_core::{DType, Result, Tensor};

use super::fused_applies;
use super::gemm::{add_product, add_product_by_rows, transpose, with_f32, zeros, Threads, View};

/// `x · Wᵀ + b` for `x` `[..., in]` and `weight` `[out, in]`, or `None` where the kernels do not
/// apply ([`super::fused_applies`]) or the shapes do not fit.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !fused_applies(&[x, weight]) || bias.is_some_and(Tensor::track_op) || x.rank() == 0 {
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
                // tokens): yᵀ = W · xᵀ, output channels split across the threads, so the weights
                // stream through once in their stored order. Read transposed, as below, gemm
                // gathers them column by column: 1.5-5 times slower here, while with many tokens
                // the transposed output would cost more than it saves. The input is transposed
                // once here: read strided, gemm gathered it on each thread (a quarter slower).
                let mut x_t = vec![0f32; rows * in_dim];
                transpose(xs, rows, in_dim, &mut x_t);
                let xt = View { data: &x_t, shape: (in_dim, rows), strides: (rows, 1) };
                let mut yt = vec![0f32; out_dim * rows];
                if let Some(bias) = &bias {
                    for (row, value) in yt.chunks_exact_mut(rows).zip(bias) {
                        row.fill(*value);
                    }
                }
                add_product_by_rows(&mut yt, w, xt)?;
                transpose(&yt, out_dim, rows, &mut out);
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
