//! A differentiable CPU convolution for training: im2col and one matrix product per picture in
//! both passes, pictures spread over the tensor threads. candle's own backward pass runs a direct
//! transposed convolution (a dot product per output pixel and tap) for the input's gradient,
//! which took two thirds of an autoencoder training step; this one gets the input's gradient as
//! `Wᵀ · G` scattered back (col2im) and the kernel's as `G · colsᵀ`, summed over pictures.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{add_product, with_f32, Threads, View};

/// One convolution's geometry (square kernel, equal stride and padding on both axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Rows of the unrolled matrix: `C·k·k`.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output pixels per picture.
    fn n(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1 stride-1 convolution reads the picture itself as its unrolled matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The input row and column a tap reads for an output position, if not in the padding.
    fn source(&self, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride + i).checked_sub(self.pad).filter(|&y| y < self.h)?;
        let x = (ox * self.stride + j).checked_sub(self.pad).filter(|&x| x < self.w)?;
        Some((y, x))
    }

    /// `[C·k·k, oh·ow]` for one picture, row `(c·k + i)·k + j` holding plane `c` shifted by
    /// (`i`, `j`), zero in the padding.
    fn unroll(&self, picture: &[f32], cols: &mut [f32]) {
        let n = self.n();
        for (ci, plane) in picture.chunks_exact(self.h * self.w).enumerate() {
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = &mut cols[((ci * self.k + i) * self.k + j) * n..][..n];
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            row[oy * self.ow + ox] = match self.source(oy, ox, i, j) {
                                Some((y, x)) => plane[y * self.w + x],
                                None => 0.0,
                            };
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::unroll`]: adds each unrolled value back to the pixel it came from.
    fn roll_back(&self, cols: &[f32], picture: &mut [f32]) {
        let n = self.n();
        for (ci, plane) in picture.chunks_exact_mut(self.h * self.w).enumerate() {
            for i in 0..self.k {
                for j in 0..self.k {
                    let row = &cols[((ci * self.k + i) * self.k + j) * n..][..n];
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            if let Some((y, x)) = self.source(oy, ox, i, j) {
                                plane[y * self.w + x] += row[oy * self.ow + ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The operation candle records: the convolution without bias (candle adds the bias, and
/// differentiates that itself).
#[derive(Debug, Clone, Copy)]
struct TrainConv {
    stride: usize,
    pad: usize,
}

fn geometry(x: &[usize], weight: &[usize], stride: usize, pad: usize) -> Result<Geometry> {
    let (&[b, c, h, w], &[o, wc, k, k2]) = (x, weight) else {
        return Err(candle_core::Error::Msg("convolution: expected 4-D input and kernel".into()));
    };
    if wc != c || k != k2 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
        return Err(candle_core::Error::Msg(format!(
            "convolution: input {x:?} and kernel {weight:?} (stride {stride}, padding {pad}) do not fit"
        )));
    }
    let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    Ok(Geometry { b, c, h, w, o, k, stride, pad, oh, ow })
}

/// The contiguous f32 elements of a storage, or an error naming the operation.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(candle_core::Error::Msg("training convolution: f32 only".into()));
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::Msg("training convolution: contiguous tensors only".into())),
    }
}

/// Runs `f` on the elements of a contiguous f32 CPU tensor.
fn on_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    with_f32(t, f)?.ok_or_else(|| candle_core::Error::Msg("training convolution: f32 on the CPU only".into()))
}

impl CustomOp2 for TrainConv {
    fn name(&self) -> &'static str {
        "train-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geometry(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let (x, weight) = (slice(s1, l1)?, slice(s2, l2)?);
        let (n, rows) = (g.n(), g.rows());
        let mut out = vec![0f32; g.b * g.o * n];
        let a = View { data: weight, shape: (g.o, rows), strides: (rows, 1) };
        out.par_chunks_mut(g.o * n).zip(x.par_chunks(g.c * g.h * g.w)).try_for_each(|(dst, picture)| {
            let cols;
            let b = if g.pointwise() {
                View { data: picture, shape: (rows, n), strides: (n, 1) }
            } else {
                let mut c = vec![0f32; rows * n];
                g.unroll(picture, &mut c);
                cols = c;
                View { data: &cols, shape: (rows, n), strides: (n, 1) }
            };
            add_product(dst, a, b, Threads::One)
        })?;
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = geometry(x.dims(), weight.dims(), self.stride, self.pad)?;
        let (n, rows, plane) = (g.n(), g.rows(), g.c * g.h * g.w);
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let (x, weight) = (x.contiguous()?, weight.contiguous()?);
        let (dx, dw) = on_f32(&grad, |gd| {
            on_f32(&x, |xd| {
                on_f32(&weight, |wd| {
                    let wt = View { data: wd, shape: (rows, g.o), strides: (1, rows) };
                    let mut dx = vec![0f32; g.b * plane];
                    // Per picture: its input gradient, and its share of the kernel's, summed after.
                    let dw = dx
                        .par_chunks_mut(plane)
                        .zip(gd.par_chunks(g.o * n))
                        .zip(xd.par_chunks(plane))
                        .try_fold(
                            || vec![0f32; g.o * rows],
                            |mut dw, ((dx, gp), picture)| -> Result<Vec<f32>> {
                                let gv = View { data: gp, shape: (g.o, n), strides: (n, 1) };
                                let mut cols = vec![0f32; rows * n];
                                if g.pointwise() {
                                    add_product(dx, wt, gv, Threads::One)?;
                                    cols.copy_from_slice(picture);
                                } else {
                                    add_product(&mut cols, wt, gv, Threads::One)?;
                                    g.roll_back(&cols, dx);
                                    g.unroll(picture, &mut cols);
                                }
                                let ct = View { data: &cols, shape: (n, rows), strides: (1, n) };
                                add_product(&mut dw, gv, ct, Threads::One)?;
                                Ok(dw)
                            },
                        )
                        .try_reduce(
                            || vec![0f32; g.o * rows],
                            |mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                                Ok(a)
                            },
                        )?;
                    Ok((dx, dw))
                })
            })
        })?;
        let dx = Tensor::from_vec(dx, (g.b, g.c, g.h, g.w), x.device())?.to_dtype(x.dtype())?;
        let dw = Tensor::from_vec(dw, (g.o, g.c, g.k, g.k), weight.device())?.to_dtype(weight.dtype())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `x` convolved with `weight` (`[O, C, k, k]`), differentiable in both, or `None` where this
/// path does not apply (not f32 on the CPU, a non-square kernel): candle's convolution then.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Option<Tensor>> {
    let square = weight.rank() == 4 && weight.dim(2)? == weight.dim(3)?;
    if !super::training_applies(&[x, weight]) || !square || x.rank() != 4 {
        return Ok(None);
    }
    geometry(x.dims(), weight.dims(), stride, pad)?;
    x.contiguous()?.apply_op2(&weight.contiguous()?, TrainConv { stride, pad }).map(Some)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Values and all three gradients against candle's convolution on random data, for the
    /// shapes the networks train with (3x3 at strides 1 and 2, 1x1, padding 0 and 1).
    #[test]
    fn values_and_gradients_match_candles_convolution() {
        let dev = Device::Cpu;
        for (b, c, o, h, w, k, s, p) in [
            (3, 4, 5, 7, 6, 3, 1, 1),
            (2, 3, 4, 8, 8, 3, 2, 1),
            (2, 5, 3, 6, 6, 1, 1, 0),
            (1, 2, 3, 7, 5, 3, 2, 0),
            (2, 3, 2, 5, 5, 5, 1, 2),
        ] {
            let x = Var::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let weight = Var::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
            let mix =
                Tensor::randn(0f32, 1.0, (b, o, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1), &dev)
                    .unwrap();
            let ours = conv2d(x.as_tensor(), weight.as_tensor(), s, p).unwrap().expect("applies");
            let theirs = x.as_tensor().conv2d(weight.as_tensor(), p, s, 1, 1).unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d <= 1e-5 * scale, "{what}: {d} (scale {scale}) for {:?}", (b, c, o, h, w, k, s, p));
            };
            close(&ours, &theirs, "value");
            // A loss that weights every output differently, so a misplaced gradient shows.
            let g1 = (&ours * &mix).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&theirs * &mix).unwrap().sum_all().unwrap().backward().unwrap();
            close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), "input gradient");
            close(g1.get(&weight).unwrap(), g2.get(&weight).unwrap(), "kernel gradient");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 1).is_err());
        let w = Tensor::zeros((4, 3, 5, 5), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 0).is_err());
    }
}
