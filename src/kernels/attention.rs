//! Unmasked multi-head attention for inference, head by head on strided views of q, k and v: no
//! split into heads, no transposes, the softmax in place, the scores a cache-sized block.

use candle_core::{Result, Tensor};

use super::fast_math;
use super::fused_applies;
use super::gemm::{add_product, set_product, with_f32, zeros, Threads, View, PARALLEL_MACS};

/// Query rows per block of attention scores over `keys` keys: about 1 MiB of scores (at least 16
/// rows), which stays in cache between the two products.
pub(crate) fn attention_rows(keys: usize) -> usize {
    ((1 << 18) / keys.max(1)).max(16)
}

/// softmax(q kᵀ / √d) v for `[batch, tokens, heads · d]` inputs, `heads` dividing the channels,
/// or `None` where the kernels do not apply ([`super::fused_applies`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    if !fused_applies(&[q, k, v]) || heads == 0 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    if k.dims3()? != (b, m, dim) || v.dims3()? != (b, m, dim) || dim % heads != 0 {
        return Ok(None);
    }
    let d = dim / heads;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    // Large attention (Stable Diffusion's 1024-token maps) runs its heads in parallel, each on
    // one thread; small attention stays on the calling thread.
    let parallel = b * heads > 1 && b * heads * n * m * d >= PARALLEL_MACS;
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
