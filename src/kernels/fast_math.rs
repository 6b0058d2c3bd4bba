//! Element-wise math for the inference paths, written so the compiler vectorises the loops that
//! call it: libm's `expf` is a scalar call, and softmax, SiLU and GELU over Stable Diffusion's
//! activations make tens of millions of them per network evaluation.

/// e^x to within 2e-7 relative error for x ≥ −87 (smaller x gives 0 or a tiny normal number
/// where libm would give a subnormal; larger than 88 gives e^88): range reduction to
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-7 Taylor polynomial for e^r (truncation 5e-9),
/// and 2^n assembled in the exponent bits. Branch-free, so loops over slices vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer (to nearest even) held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // The integer n sits in the low bits of `shifted`; moved into the exponent field it is 2^n.
    let two_n = f32::from_bits(((shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    p * two_n
}

/// The error function to within 5e-7 (Abramowitz & Stegun 7.1.26: 1.5e-7, plus f32 rounding):
/// one exponential and a short polynomial, several times faster than a correctly rounded `erff`;
/// GELU's output moves by less than its own f32 rounding near 1.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly =
        t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Lanes of the sums below: independent accumulators the compiler keeps in vector registers
/// instead of one serial chain of additions.
const LANES: usize = 16;

/// The sum of `values`, accumulated in f64 lanes.
#[inline(always)]
pub fn sum(values: &[f32]) -> f64 {
    sum_by(values, f64::from)
}

/// The sum of `f(v)` over `values`, accumulated in f64 lanes.
#[inline(always)]
pub fn sum_by(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// The largest of `values` (−∞ for none).
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// softmax(scale · row) in place, for `scale` > 0.
#[inline(always)]
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let top = max(row);
    for s in row.iter_mut() {
        *s = exp((*s - top) * scale);
    }
    let inverse = (1.0 / sum(row)) as f32;
    row.iter_mut().for_each(|s| *s *= inverse);
}

/// Defines a function whose body runs with the processor's widest vectors. The build targets
/// baseline x86-64, whose SSE2 registers hold 4 floats; where the processor has AVX-512 (16
/// floats) the body runs as a copy compiled for it, with the helpers above inlined into it, so
/// their loops vectorise 16 wide. The results are the same bits either way: Rust never fuses
/// multiplies and adds on its own, and the sums' lanes fix their order.
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor was just checked for the one feature `avx512` needs.
                return unsafe { avx512($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;

wide_fn! {
    /// softmax(scale · row) in place for each `m`-long row of `scores`, for `scale` > 0.
    pub fn softmax_rows(scores: &mut [f32], m: usize, scale: f32) {
        for row in scores.chunks_exact_mut(m) {
            softmax_scaled(row, scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_its_stated_error() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let exact = f64::from(x).exp();
            let err = (f64::from(exp(x)) - exact).abs() / exact;
            assert!(err < 2e-7, "exp({x}) = {} vs {exact}: relative error {err}", exp(x));
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn erf_is_within_its_stated_error() {
        for i in -4000..=4000 {
            let x = i as f32 / 1000.0;
            let exact = candle_core::cpu::erf::erf_f64(f64::from(x));
            assert!((f64::from(erf(x)) - exact).abs() < 5e-7, "erf({x}) = {} vs {exact}", erf(x));
        }
    }

    #[test]
    fn reductions_and_softmax_match_the_definitions() {
        let values: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0).collect();
        let direct: f64 = values.iter().map(|&v| f64::from(v)).sum();
        assert!((sum(&values) - direct).abs() < 1e-9);
        assert_eq!(max(&values), values.iter().copied().fold(f32::MIN, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);

        // Two rows: the values, then the values reversed (the wide kernel handles each alone).
        let mut rows: Vec<f32> = values.iter().chain(values.iter().rev()).copied().collect();
        softmax_rows(&mut rows, values.len(), 0.5);
        let total: f64 = values.iter().map(|&v| (0.5 * f64::from(v)).exp()).sum();
        let expected = values.iter().chain(values.iter().rev());
        for (&p, &v) in rows.iter().zip(expected) {
            let exact = (0.5 * f64::from(v)).exp() / total;
            assert!((f64::from(p) - exact).abs() < 1e-6 * exact.max(1e-3), "{p} vs {exact}");
        }
    }
}
