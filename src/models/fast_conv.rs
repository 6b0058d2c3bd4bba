//! Convolution for inference on the CPU: the input unrolled into a `[C·k·k, H'·W']` matrix
//! (im2col) with whole-row copies, then one matrix product per picture that lands straight in
//! NCHW order on top of the pre-filled bias — no transposes of the output, no strided gathers. 1×1 stride-1 convolutions skip
//! the unrolling: the input already is that matrix. Used where no gradient is needed; candle's
//! own convolution (which has a backward pass) serves training.

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};

use super::gemm::{add_product, with_f32, View};
use candle_nn::Conv2dConfig;

/// `x` (`[B, C, H, W]`) convolved with `weight` (`[O, C, k, k]`) plus `bias`, or `None` when
/// this path does not apply (not f32 on the CPU, groups or dilation, gradients tracked).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Option<Tensor>> {
    let applies = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.device().is_cpu()
        && cfg.groups == 1
        && cfg.dilation == 1
        && !x.track_op()
        && !weight.track_op();
    if !applies {
        return Ok(None);
    }
    let (b, c, h, w) = x.dims4()?;
    let (o, _, kh, kw) = weight.dims4()?;
    let (s, p) = (cfg.stride, cfg.padding);
    if h + 2 * p < kh || w + 2 * p < kw {
        return Ok(None);
    }
    let (oh, ow) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
    let k = c * kh * kw;
    let n = oh * ow;
    // Each picture's output rows start as the bias, and the product adds onto them.
    let mut out = vec![0f32; b * o * n];
    if let Some(bias) = bias {
        let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        for (row, value) in out.chunks_exact_mut(n).zip(bias.iter().cycle()) {
            row.fill(*value);
        }
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
    let cols = if direct { x.clone() } else { unroll(&x, kh, kw, s, p, (oh, ow))? };
    let done = with_f32(&weight, |w| {
        with_f32(&cols, |cols| {
            for (picture, dst) in cols.chunks_exact(k * n).zip(out.chunks_exact_mut(o * n)) {
                let a = View { data: w, shape: (o, k), strides: (k, 1) };
                add_product(dst, a, View { data: picture, shape: (k, n), strides: (n, 1) })?;
            }
            Ok(())
        })
    })?;
    if done.flatten().is_none() {
        return Ok(None);
    }
    Tensor::from_vec(out, (b, o, oh, ow), x.device()).map(Some)
}

/// im2col: `[B, C·kh·kw, oh·ow]`, row `(c·kh + i)·kw + j` holding input plane `c` shifted by
/// (`i`, `j`), zero where it falls in the padding.
fn unroll(x: &Tensor, kh: usize, kw: usize, s: usize, p: usize, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("fast conv: expected f32 CPU storage")
    };
    let src = &data[layout.start_offset()..layout.start_offset() + b * c * h * w];
    let k = c * kh * kw;
    let mut cols = vec![0f32; b * k * oh * ow];
    for (plane_index, plane) in src.chunks_exact(h * w).enumerate() {
        let (bi, ci) = (plane_index / c, plane_index % c);
        for i in 0..kh {
            for j in 0..kw {
                let row = (ci * kh + i) * kw + j;
                let out = &mut cols[(bi * k + row) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let Some(iy) = (oy * s + i).checked_sub(p).filter(|&y| y < h) else { continue };
                    let line = &plane[iy * w..][..w];
                    let dst = &mut out[oy * ow..][..ow];
                    if s == 1 {
                        // Output columns whose input column j + ox − p lies inside the row.
                        let first = p.saturating_sub(j);
                        let last = (w + p - j).min(ow);
                        if first < last {
                            dst[first..last].copy_from_slice(&line[first + j - p..last + j - p]);
                        }
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            if let Some(ix) = (ox * s + j).checked_sub(p).filter(|&x| x < w) {
                                *d = line[ix];
                            }
                        }
                    }
                }
            }
        }
    }
    drop(storage);
    Tensor::from_vec(cols, (b, k, oh * ow), x.device())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module};

    use super::*;

    /// The fast path against candle's convolution, on random values, for the shapes the networks use.
    #[test]
    fn matches_candles_convolution() {
        let dev = Device::Cpu;
        for (b, c, o, h, w, k, s, p) in [
            (1, 3, 8, 9, 7, 3, 1, 1),
            (2, 5, 4, 8, 8, 3, 2, 1),
            (2, 4, 6, 8, 8, 1, 1, 0),
            (1, 4, 4, 7, 7, 3, 2, 0),
            (2, 3, 5, 5, 6, 3, 1, 0),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let weight = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let cfg = Conv2dConfig { padding: p, stride: s, ..Default::default() };
            let reference =
                candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), cfg).forward(&x).unwrap();
            let fast = conv2d(&x, &weight, Some(&bias), &cfg).unwrap().expect("the fast path applies");
            assert_eq!(fast.dims(), reference.dims(), "shape for {:?}", (b, c, o, h, w, k, s, p));
            let diff =
                (fast - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "max difference {diff} for {:?}", (b, c, o, h, w, k, s, p));
        }
    }

    #[test]
    fn tracked_weights_take_candles_path() {
        let dev = Device::Cpu;
        let var = candle_core::Var::zeros((2, 2, 3, 3), DType::F32, &dev).unwrap();
        let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, var.as_tensor(), None, &Conv2dConfig::default()).unwrap().is_none());
    }
}
