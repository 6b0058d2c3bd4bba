//! 3×3 stride-1 convolutions by Winograd's minimal filtering, F(4×4, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016): each 4×4 block of outputs comes from a
//! 6×6 input patch with 36 multiplications per channel pair instead of 144. The work becomes 36
//! independent matrix products `[O, C] · [C, tiles]`, one per position of the transformed patch,
//! so a convolution costs a quarter of the multiply-adds of im2col, plus linear-time transforms.
//! The numbers equal the direct convolution's to f32 rounding (the transforms' constants are
//! small: 4, 5, 1/6, 1/24).
//!
//! Only worth it where the products stay large: with few tiles the transformed weights (four
//! times the size of the kernel) are read for little arithmetic, so [`applies`] keeps the
//! low-resolution levels on the im2col path.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use candle_core::{Result, Tensor};
use candle_nn::Conv2dConfig;
use rayon::prelude::*;

use super::fast_math::wide_fn;
use super::fused_applies;
use super::gemm::{set_product, with_f32, zeros, Threads, View};

/// Output block side and input patch side.
const M: usize = 4;
const P: usize = M + 2;
/// Positions of a transformed patch.
const POS: usize = P * P;

/// Fewest tiles (4×4 output blocks, over the batch) for which the transform pays.
const MIN_TILES: usize = 16;
/// Fewest input and output channels: below, the products are too thin for it to pay.
const MIN_CHANNELS: usize = 32;

/// Whether a 3×3, stride-1, padding-1 convolution of `b` pictures of `c` channels at `h`×`w` into
/// `o` channels takes this path.
pub fn applies(b: usize, c: usize, o: usize, h: usize, w: usize) -> bool {
    c >= MIN_CHANNELS && o >= MIN_CHANNELS && b * h.div_ceil(M) * w.div_ceil(M) >= MIN_TILES
}

/// `G`, which maps a kernel side of 3 to a transformed side of 6.
const G: [[f32; 3]; P] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Tiles transformed together, one per SIMD lane: the transforms' per-tile arithmetic (fully
/// unrolled) sits in a loop over the lanes, which the compiler turns into vector instructions.
const LANES: usize = 16;

/// One value for each of [`LANES`] tiles.
type Lanes = [f32; LANES];

/// Bytes of transformed kernels alive in this process. They are four times the size of the
/// 3×3 weights they come from (1.27 GB for Stable Diffusion 1.5's UNet at 256×256, measured; more
/// at larger sizes, where more levels qualify), so they are kept only within [`kernel_budget`]; a
/// layer past it keeps the im2col path.
static KEPT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A quarter of the memory this process may use: the machine's (Linux's `MemTotal`) or its
/// cgroup's limit if lower; 2 GiB where neither is known.
fn kernel_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
            info.lines().find_map(|line| {
                let kib: usize =
                    line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok()?;
                kib.checked_mul(1024)
            })
        });
        // cgroup v2 writes "max" when unlimited, which does not parse and so does not count.
        let limit =
            std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|l| l.trim().parse().ok());
        [total, limit].into_iter().flatten().min().map_or(2 << 30, |bytes: usize| bytes / 4)
    })
}

/// Adds `bytes` to `kept` if the sum stays within `budget`; whether it did.
fn reserve(kept: &AtomicUsize, bytes: usize, budget: usize) -> bool {
    kept.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        now.checked_add(bytes).filter(|&sum| sum <= budget)
    })
    .is_ok()
}

/// A 3×3 kernel transformed once, `G g Gᵀ` for each channel pair: `[36][O][C]`.
#[derive(Debug)]
pub struct Kernel {
    data: Vec<f32>,
    o: usize,
    c: usize,
}

impl Kernel {
    /// Transforms `weight` (`[O, C, 3, 3]`, row-major), one position per task; `None` when the
    /// kernels already kept leave no room for it.
    pub fn new(weight: &[f32], o: usize, c: usize) -> Result<Option<Self>> {
        if o == 0 || c == 0 || weight.len() != o * c * 9 {
            candle_core::bail!(
                "a 3x3 kernel of {o}x{c} channels needs {} elements, got {}",
                o * c * 9,
                weight.len()
            )
        }
        if !reserve(&KEPT_BYTES, POS * o * c * size_of::<f32>(), kernel_budget()) {
            return Ok(None);
        }
        let mut data = vec![0f32; POS * o * c];
        data.par_chunks_mut(o * c).enumerate().for_each(|(pos, dst)| {
            let (row, col) = (G[pos / P], G[pos % P]);
            let coef: [f32; 9] = std::array::from_fn(|k| row[k / 3] * col[k % 3]);
            for (value, g) in dst.iter_mut().zip(weight.chunks_exact(9)) {
                *value = coef.iter().zip(g).map(|(a, b)| a * b).sum();
            }
        });
        Ok(Some(Self { data, o, c }))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        KEPT_BYTES.fetch_sub(self.data.len() * size_of::<f32>(), Ordering::Relaxed);
    }
}

/// `Bᵀ d` for one side of a 6-element input patch.
#[inline(always)]
fn input_side(d: [f32; P]) -> [f32; P] {
    [
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * (d[1] + d[2]) + d[3] + d[4],
        4.0 * (d[1] - d[2]) - d[3] + d[4],
        2.0 * (d[3] - d[1]) - d[2] + d[4],
        2.0 * (d[1] - d[3]) - d[2] + d[4],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    ]
}

/// `Aᵀ m` for one side of a transformed 6-element block.
#[inline(always)]
fn output_side(m: [f32; P]) -> [f32; M] {
    let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
    let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
    [m[0] + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + m[5]]
}

/// A convolution layer's Winograd path: `x` convolved with `weight` (3×3, stride 1, padding 1,
/// no groups or dilation) plus `bias`, its kernel transformed on first use into `kept` (the
/// weights of an inference model do not change), or `None` where the kernels do not apply
/// ([`super::fused_applies`]) or Winograd does not pay at this size.
pub fn conv_layer(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
    kept: &OnceLock<Kernel>,
) -> Result<Option<Tensor>> {
    if !fused_applies(&[x, weight]) || bias.is_some_and(|b| !fused_applies(&[b])) {
        return Ok(None);
    }
    let ((b, c, h, w), (o, wc, kh, kw)) = (x.dims4()?, weight.dims4()?);
    let square = (kh, kw, cfg.stride, cfg.padding, cfg.dilation, cfg.groups) == (3, 3, 1, 1, 1, 1);
    if !square || wc != c || !applies(b, c, o, h, w) {
        return Ok(None);
    }
    let kernel = match kept.get() {
        Some(kernel) => kernel,
        None => {
            // Not when the weights are not plain f32, nor past the budget for kept kernels.
            // Built outside the `OnceLock`: the transform runs on the thread pool, where a stolen
            // job for this same layer (the other half of a guided batch) would wait on the lock
            // forever. Two halves may both build it the first time; one is dropped, releasing its
            // share of the budget.
            let made = with_f32(&weight.contiguous()?, |g| Kernel::new(g, o, c))?;
            let Some(Some(kernel)) = made else { return Ok(None) };
            kept.get_or_init(|| kernel)
        }
    };
    let bias = match bias {
        Some(bias) => Some(bias.to_vec1::<f32>()?),
        None => None,
    };
    let x = x.contiguous()?;
    let out = with_f32(&x, |xd| conv3x3(xd, (b, h, w), kernel, bias.as_deref()))?;
    out.map(|out| Tensor::from_vec(out, (b, o, h, w), x.device())).transpose()
}

/// Transformed inputs or products of one chunk of tiles, at most (elements; 64 MiB of f32):
/// bounds the buffers at large sizes (a 512×512 VAE decoder's last level has 16384 tiles).
/// Smaller chunks make thinner products: 16 MiB cost 8% on SD 1.5's VAE decode at 256×256. At
/// Stable Diffusion's 32×32 and 16×16 latents a convolution is one chunk.
const CHUNK_ELEMS: usize = 1 << 24;

/// `x` (`b` pictures `[C, H, W]`, row-major) convolved with `kernel`, zero padding 1, plus `bias`:
/// `[B, O, H, W]`.
pub fn conv3x3(
    x: &[f32],
    (b, h, w): (usize, usize, usize),
    kernel: &Kernel,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let (c, o) = (kernel.c, kernel.o);
    if x.len() != b * c * h * w || bias.is_some_and(|bias| bias.len() != o) {
        candle_core::bail!(
            "a 3x3 convolution of {c} into {o} channels got {} inputs for {b}x{h}x{w}",
            x.len()
        )
    }
    let grid = Grid { b, h, w, th: h.div_ceil(M), tw: w.div_ceil(M) };
    let mut out = zeros(b * o * h * w);
    if out.is_empty() {
        return Ok(out);
    }
    // Whole lanes of tiles per chunk; the last chunk's extra lanes are zero tiles.
    let chunk = (CHUNK_ELEMS / (POS * c.max(o))).max(LANES) / LANES * LANES;
    run_chunks(x, &grid, kernel, bias, chunk, &mut out)?;
    Ok(out)
}

/// [`conv3x3`]'s work, `chunk` tiles (a multiple of [`LANES`]) at a time, into `out`.
fn run_chunks(
    x: &[f32],
    grid: &Grid,
    kernel: &Kernel,
    bias: Option<&[f32]>,
    chunk: usize,
    out: &mut [f32],
) -> Result<()> {
    let (c, o) = (kernel.c, kernel.o);
    let real = grid.b * grid.th * grid.tw;
    // Taken out of the list for the call: a convolution running meanwhile (the other half of a
    // guided batch, on another thread or on this one while it waits for the parallel parts)
    // takes another pair or allocates its own.
    let (mut planes, mut products) = SCRATCH.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_default();
    for start in (0..real).step_by(chunk) {
        let span = start..real.min(start + chunk);
        let tiles = span.len().next_multiple_of(LANES);
        // Every element is written below, so only newly grown room is ever cleared.
        planes.resize(c * POS * tiles, 0.0);
        products.resize(POS * o * tiles, 0.0);
        transform_input(x, c, grid, span.clone(), &mut planes);
        // The 36 products, in parallel: each reads its own slice of the kernel and of the planes.
        products.par_chunks_mut(o * tiles).enumerate().try_for_each(|(pos, dst)| {
            let a = View { data: &kernel.data[pos * o * c..][..o * c], shape: (o, c), strides: (c, 1) };
            let v = View { data: &planes[pos * tiles..], shape: (c, tiles), strides: (POS * tiles, 1) };
            set_product(dst, a, v, Threads::One)
        })?;
        transform_output(&products, o, grid, span, bias, out);
    }
    if let Ok(mut kept) = SCRATCH.lock() {
        kept.push((planes, products));
    }
    Ok(())
}

/// The transformed inputs and the products of finished convolutions (one chunk each, about
/// 64 MiB at most), kept so that they are neither allocated nor cleared per call: one pair per
/// convolution that ran at the same time, however many threads the pool has (a network's
/// evaluations run on whichever pool thread is free, so per-thread buffers would multiply).
static SCRATCH: Mutex<Vec<(Vec<f32>, Vec<f32>)>> = Mutex::new(Vec::new());

/// Pictures, their size and their tiles down and across.
struct Grid {
    b: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

/// `S x Sᵀ` of [`LANES`] 6×6 blocks (`x[i·6 + j]` the blocks' values at row `i`, column `j`), `side`
/// being `S` applied to 6 values: along the columns, then the rows; `out` row-major `N×N`.
#[inline(always)]
fn both_sides<const N: usize>(x: &[Lanes; POS], out: &mut [Lanes], side: impl Fn([f32; P]) -> [f32; N]) {
    for l in 0..LANES {
        let mut cols = [[0f32; N]; P];
        for (j, col) in cols.iter_mut().enumerate() {
            *col = side(std::array::from_fn(|i| x[i * P + j][l]));
        }
        for i in 0..N {
            let row = side(std::array::from_fn(|j| cols[j][i]));
            for (j, value) in row.into_iter().enumerate() {
                out[i * N + j][l] = value;
            }
        }
    }
}

wide_fn! {
    /// `Bᵀ d B` of [`LANES`] input patches.
    fn input_block(d: &[Lanes; POS], out: &mut [Lanes; POS]) {
        both_sides(d, out, input_side);
    }
}

wide_fn! {
    /// `Aᵀ m A` of [`LANES`] transformed blocks into their 4×4 outputs, row-major.
    fn output_block(m: &[Lanes; POS], out: &mut [Lanes; M * M]) {
        both_sides(m, out, output_side);
    }
}

/// `Bᵀ d B` of the 6×6 input patches of the tiles in `span` (ordered picture, row, column):
/// `planes` is `[C][36][tiles]`, tiles counted from the span's start and rounded up to lanes.
fn transform_input(x: &[f32], c: usize, g: &Grid, span: Range<usize>, planes: &mut [f32]) {
    let tiles = planes.len() / (c * POS);
    // Each picture's plane padded with one zero row and column before and enough after to cover
    // the last patch; a tile's patch starts at its origin there.
    let (ph, pw) = (g.th * M + 2, g.tw * M + 2);
    let origins: Vec<usize> = span
        .clone()
        .map(|t| {
            let (bi, ty, tx) = (t / (g.th * g.tw), t / g.tw % g.th, t % g.tw);
            bi * ph * pw + ty * M * pw + tx * M
        })
        .collect();
    // Per picture the span touches, the input rows its patches read.
    let per_picture = g.th * g.tw;
    let rows: Vec<(usize, Range<usize>)> = (span.start / per_picture..span.end.div_ceil(per_picture))
        .map(|bi| {
            let first = span.start.max(bi * per_picture) - bi * per_picture;
            let last = span.end.min((bi + 1) * per_picture) - 1 - bi * per_picture;
            let (top, bottom) = (first / g.tw * M, last / g.tw * M + P);
            (bi, top.saturating_sub(1)..(bottom - 1).min(g.h))
        })
        .collect();
    planes.par_chunks_mut(POS * tiles).enumerate().for_each_init(
        || vec![0f32; g.b * ph * pw],
        |padded, (ci, out)| {
            // Only the input rows the span's patches cover (padded rows 4·first tile row to
            // 4·last tile row + 6); rows never written stay zero.
            for (bi, rows) in &rows {
                let plane = &x[(bi * c + ci) * g.h * g.w..][..g.h * g.w];
                for y in rows.clone() {
                    padded[bi * ph * pw + (y + 1) * pw + 1..][..g.w]
                        .copy_from_slice(&plane[y * g.w..][..g.w]);
                }
            }
            let mut d = [[0f32; LANES]; POS];
            let mut v = [[0f32; LANES]; POS];
            for (block, block_origins) in origins.chunks(LANES).enumerate() {
                if block_origins.len() < LANES {
                    // The last, partial block: its extra lanes are zero tiles.
                    d = [[0f32; LANES]; POS];
                }
                for (l, &origin) in block_origins.iter().enumerate() {
                    for (i, patch_row) in d.chunks_exact_mut(P).enumerate() {
                        let line = &padded[origin + i * pw..][..P];
                        for (lanes, value) in patch_row.iter_mut().zip(line) {
                            lanes[l] = *value;
                        }
                    }
                }
                input_block(&d, &mut v);
                for (pos, lanes) in v.iter().enumerate() {
                    out[pos * tiles + block * LANES..][..LANES].copy_from_slice(lanes);
                }
            }
        },
    );
}

/// `Aᵀ m A` of the transformed blocks of the tiles in `span` (`products`: `[36][O][tiles]`), plus
/// the bias, written cropped into `out` (`[B, O, H, W]`).
fn transform_output(
    products: &[f32],
    o: usize,
    g: &Grid,
    span: Range<usize>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let tiles = products.len() / (POS * o);
    let per_picture = g.th * g.tw;
    // Output channel `oc` of picture `bi` is one contiguous plane; its tiles in the span, counted
    // from the span's start, are `first..end`.
    out.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane_index, plane)| {
        let (bi, oc) = (plane_index / o, plane_index % o);
        let first = (bi * per_picture).max(span.start) - span.start;
        let end = ((bi + 1) * per_picture).min(span.end).saturating_sub(span.start);
        let base = bias.map_or(0.0, |bias| bias[oc]);
        let mut m = [[0f32; LANES]; POS];
        let mut y = [[0f32; LANES]; M * M];
        for t0 in (first / LANES * LANES..end).step_by(LANES) {
            for (pos, lanes) in m.iter_mut().enumerate() {
                lanes.copy_from_slice(&products[(pos * o + oc) * tiles + t0..][..LANES]);
            }
            output_block(&m, &mut y);
            for l in (first.max(t0) - t0)..(end - t0).min(LANES) {
                let local = span.start + t0 + l - bi * per_picture;
                let (ty, tx) = (local / g.tw, local % g.tw);
                for (k, lanes) in y.iter().enumerate() {
                    let (row, col) = (ty * M + k / M, tx * M + k % M);
                    if row < g.h && col < g.w {
                        plane[row * g.w + col] = base + lanes[l];
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct definition: `y[o][y][x] = bias[o] + Σ x[c][y+i-1][x+j-1] · g[o][c][i][j]`.
    fn direct(
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        (b, c, o, h, w): (usize, usize, usize, usize, usize),
    ) -> Vec<f32> {
        let mut out = vec![0f32; b * o * h * w];
        for bi in 0..b {
            for oc in 0..o {
                for y in 0..h {
                    for xx in 0..w {
                        let mut sum = bias[oc] as f64;
                        for ci in 0..c {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (iy, ix) = ((y + i) as isize - 1, (xx + j) as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v = x[((bi * c + ci) * h + iy as usize) * w + ix as usize];
                                    sum += (v * weight[((oc * c + ci) * 3 + i) * 3 + j]) as f64;
                                }
                            }
                        }
                        out[((bi * o + oc) * h + y) * w + xx] = sum as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 1009) as f32 / 1009.0 - 0.5) * 2.0).collect()
    }

    #[test]
    fn matches_the_direct_convolution_including_partial_tiles() {
        for (b, c, o, h, w) in
            [(1, 3, 2, 4, 4), (2, 5, 3, 8, 12), (1, 4, 6, 7, 9), (1, 2, 2, 1, 5), (2, 16, 8, 13, 6)]
        {
            let (x, weight, bias) = (values(b * c * h * w, 1), values(o * c * 9, 2), values(o, 3));
            let kernel = Kernel::new(&weight, o, c).unwrap().expect("room for a small kernel");
            let fast = conv3x3(&x, (b, h, w), &kernel, Some(&bias)).unwrap();
            let want = direct(&x, &weight, &bias, (b, c, o, h, w));
            let worst = fast.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // f32 rounding grows with the terms summed (c·9, each at most 1 here); an error in
            // a transform would be of the order of the values themselves.
            assert!(worst < 2e-6 * (c as f32 * 9.0), "{worst} for {:?}", (b, c, o, h, w));
        }
    }

    /// Chunks of tiles smaller than a picture, and chunks spanning two pictures.
    #[test]
    fn chunks_of_tiles_give_the_same_convolution() {
        let (b, c, o, h, w) = (2, 3, 4, 13, 18);
        let (x, weight, bias) = (values(b * c * h * w, 4), values(o * c * 9, 5), values(o, 6));
        let kernel = Kernel::new(&weight, o, c).unwrap().expect("room for a small kernel");
        let grid = Grid { b, h, w, th: h.div_ceil(M), tw: w.div_ceil(M) };
        let want = direct(&x, &weight, &bias, (b, c, o, h, w));
        for chunk in [16, 32, 48] {
            let mut out = vec![f32::NAN; b * o * h * w];
            run_chunks(&x, &grid, &kernel, Some(&bias), chunk, &mut out).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "every output written with chunks of {chunk}");
            let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 2e-6 * (c as f32 * 9.0), "{worst} with chunks of {chunk}");
        }
    }

    #[test]
    fn refuses_mismatched_sizes() {
        let kernel = Kernel::new(&values(2 * 3 * 9, 0), 2, 3).unwrap().expect("room for a small kernel");
        assert!(conv3x3(&values(3 * 16, 0), (1, 4, 5), &kernel, None).is_err());
        assert!(conv3x3(&values(3 * 16, 0), (1, 4, 4), &kernel, Some(&[0.0; 3])).is_err());
        assert!(Kernel::new(&values(17, 0), 2, 1).is_err());
    }

    #[test]
    fn kernels_are_kept_only_within_the_budget() {
        let kept = AtomicUsize::new(0);
        assert!(reserve(&kept, 600, 1000));
        assert!(!reserve(&kept, 500, 1000), "1100 bytes would pass the budget");
        assert!(reserve(&kept, 400, 1000));
        assert_eq!(kept.load(Ordering::Relaxed), 1000);
        assert!(!reserve(&kept, usize::MAX, usize::MAX), "no overflow");
        assert!(kernel_budget() > 0);
    }
}
