//! Convolution for inference on the CPU, in tiles of output rows: each tile's input patch is
//! unrolled into a `[C·k·k, rows·W']` matrix (im2col) with whole-row copies, small enough to stay
//! in cache, and one matrix product on top of the pre-filled bias gives the tile's outputs in
//! NCHW order — no transposes, no strided gathers, no image-sized unrolled buffer. Tiles run in
//! parallel when the convolution is large enough to pay for it. 1×1 stride-1 convolutions skip
//! the unrolling: the input already is that matrix. Used where no gradient is needed; candle's own
//! convolution (which has a backward pass) serves training.

use candle_core::{DType, Result, Tensor};
use candle_nn::Conv2dConfig;
use rayon::prelude::*;

use super::fused_applies;
use super::gemm::{add_product, add_product_by_rows, with_f32, zeros, Threads, View, PARALLEL_MACS};

/// Unrolled elements per tile (4 MiB of f32): large enough for efficient products, small enough
/// for the cache.
const TILE_ELEMS: usize = 1 << 20;

/// One convolution's geometry.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ow: usize,
}

impl Geometry {
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
}

/// `x` (`[B, C, H, W]`) convolved with `weight` (`[O, C, k, k]`) plus `bias`, or `None` when
/// this path does not apply (not f32 on the CPU, groups or dilation, gradients tracked).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Option<Tensor>> {
    if !fused_applies(&[x, weight])
        || bias.is_some_and(Tensor::track_op)
        || cfg.groups != 1
        || cfg.dilation != 1
    {
        return Ok(None);
    }
    let (b, c, h, w) = x.dims4()?;
    let (o, wc, kh, kw) = weight.dims4()?;
    if wc != c || o == 0 {
        return Ok(None);
    }
    let (stride, pad) = (cfg.stride, cfg.padding);
    if h + 2 * pad < kh || w + 2 * pad < kw || stride == 0 {
        return Ok(None);
    }
    let (oh, ow) = ((h + 2 * pad - kh) / stride + 1, (w + 2 * pad - kw) / stride + 1);
    let g = Geometry { c, h, w, o, kh, kw, stride, pad, ow };
    let bias = match bias {
        Some(bias) => Some(bias.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        None => None,
    };
    // Enough tiles to bound the unrolled buffer, and for large convolutions a multiple of the
    // tensor threads, so none idles on the last round.
    let mut per_picture = (g.k() * oh * ow).div_ceil(TILE_ELEMS).max(1);
    let pool = candle_core::utils::get_num_threads();
    if b * o * oh * ow * g.k() >= PARALLEL_MACS && pool > 1 && b * per_picture > 1 {
        per_picture = per_picture.div_ceil(pool) * pool;
    }
    let rows_per_tile = oh.div_ceil(per_picture.min(oh)).max(1);
    let tiles: Vec<(usize, usize)> =
        (0..b).flat_map(|bi| (0..oh).step_by(rows_per_tile).map(move |r| (bi, r))).collect();
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let parallel = tiles.len() > 1 && b * o * oh * ow * g.k() >= PARALLEL_MACS;
    let n = oh * ow;
    let mut out = zeros(b * o * n);
    let done = with_f32(&weight, |wd| {
        with_f32(&x, |xd| {
            // Each tile: (picture, first row) → its outputs, `o` rows of `rows · ow`.
            let run = |&(bi, first): &(usize, usize)| -> Result<(usize, usize, Vec<f32>)> {
                let rows = rows_per_tile.min(oh - first);
                let threads = if parallel { Threads::One } else { Threads::Auto };
                let tile = conv_tile(
                    &g,
                    wd,
                    &xd[bi * c * h * w..][..c * h * w],
                    bias.as_deref(),
                    first,
                    rows,
                    threads,
                )?;
                Ok((bi, first, tile))
            };
            let results: Vec<_> = if parallel {
                tiles.par_iter().map(run).collect::<Result<_>>()?
            } else {
                tiles.iter().map(run).collect::<Result<_>>()?
            };
            for (bi, first, tile) in results {
                let len = tile.len() / o;
                for (oc, row) in tile.chunks_exact(len).enumerate() {
                    out[(bi * o + oc) * n + first * ow..][..len].copy_from_slice(row);
                }
            }
            Ok(())
        })
    })?;
    if done.flatten().is_none() {
        return Ok(None);
    }
    Tensor::from_vec(out, (b, o, oh, ow), x.device()).map(Some)
}

/// Output rows `first..first + rows` of one picture (`o × rows·ow`, channel-major).
fn conv_tile(
    g: &Geometry,
    weight: &[f32],
    picture: &[f32],
    bias: Option<&[f32]>,
    first: usize,
    rows: usize,
    threads: Threads,
) -> Result<Vec<f32>> {
    let (k, tn) = (g.k(), rows * g.ow);
    let mut dst = vec![0f32; g.o * tn];
    if let Some(bias) = bias {
        for (row, value) in dst.chunks_exact_mut(tn).zip(bias) {
            row.fill(*value);
        }
    }
    let cols;
    let b = if g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0 {
        View { data: &picture[first * g.w..], shape: (k, tn), strides: (g.h * g.w, 1) }
    } else {
        cols = unroll(g, picture, first, rows);
        View { data: &cols, shape: (k, tn), strides: (tn, 1) }
    };
    let a = View { data: weight, shape: (g.o, k), strides: (k, 1) };
    if threads == Threads::Auto {
        // A large tile alone (the low-resolution levels, where the weights outweigh the pixels):
        // each thread takes a block of output channels.
        add_product_by_rows(&mut dst, a, b)?;
    } else {
        add_product(&mut dst, a, b, threads)?;
    }
    Ok(dst)
}

/// im2col for output rows `first..first + rows`: `[C·kh·kw, rows·ow]`, row `(c·kh + i)·kw + j`
/// holding input plane `c` shifted by (`i`, `j`), zero where it falls in the padding.
fn unroll(g: &Geometry, picture: &[f32], first: usize, rows: usize) -> Vec<f32> {
    let (s, p, w, ow) = (g.stride, g.pad, g.w, g.ow);
    let tn = rows * ow;
    let mut cols = vec![0f32; g.k() * tn];
    for (ci, plane) in picture.chunks_exact(g.h * w).enumerate() {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let out = &mut cols[((ci * g.kh + i) * g.kw + j) * tn..][..tn];
                for r in 0..rows {
                    let oy = first + r;
                    let Some(iy) = (oy * s + i).checked_sub(p).filter(|&y| y < g.h) else { continue };
                    let line = &plane[iy * w..][..w];
                    let dst = &mut out[r * ow..][..ow];
                    if s == 1 {
                        // Output columns whose input column j + ox − p lies inside the row.
                        let lo = p.saturating_sub(j);
                        let hi = (w + p).saturating_sub(j).min(ow);
                        if lo < hi {
                            dst[lo..hi].copy_from_slice(&line[lo + j - p..hi + j - p]);
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
    cols
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
            (1, 3, 4, 6, 5, 5, 1, 2),
            (2, 3, 5, 5, 6, 3, 1, 0),
            // Several tiles of rows, run in parallel; and a tiled 1x1.
            (2, 64, 8, 64, 64, 3, 1, 1),
            (1, 1100, 4, 32, 32, 1, 1, 0),
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
            // Sums of c·k·k products of unit normals: f32 rounding grows with their square root
            // (a fixed 1e-4 failed now and then at 576 terms).
            let tolerance = 1e-5 * ((c * k * k) as f32).sqrt();
            assert!(diff < tolerance, "max difference {diff} for {:?}", (b, c, o, h, w, k, s, p));
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
