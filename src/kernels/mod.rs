//! The hand-written CPU kernels under the networks (Winograd and im2col convolutions, fused
//! norms, GEGLU and attention, the gemm products) and the one place that decides whether they
//! run. They read raw f32 CPU memory, so they apply only to plain f32 CPU tensors; everywhere
//! else — a GPU tensor, half precision, a tracked gradient, or `--kernels generic` — the networks
//! take candle's device-generic operations, which is what a GPU runs. Every kernel entry point
//! returns `None` where it does not apply, and the caller falls back to candle.

pub mod attention;
pub mod conv_train;
pub mod fast_conv;
pub mod fast_math;
pub mod gemm;
pub mod linear;
pub mod pool;
pub mod rows;
pub mod winograd;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};

/// Which implementation the networks use (`--kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fused CPU kernels wherever they apply (the default).
    #[default]
    Fused,
    /// candle's device-generic operations everywhere, as on a GPU: for testing that path here.
    Generic,
}

impl Kernels {
    /// Parses the command line's name (`fused` or `generic`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fused" => Some(Self::Fused),
            "generic" => Some(Self::Generic),
            _ => None,
        }
    }

    /// The command line's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fused => "fused",
            Self::Generic => "generic",
        }
    }
}

/// Set once by `--kernels` before any network runs (tests switch it between whole renders).
static GENERIC: AtomicBool = AtomicBool::new(false);

/// Chooses the implementation for every network evaluation that starts from now on.
pub fn set(kernels: Kernels) {
    GENERIC.store(kernels == Kernels::Generic, Ordering::Relaxed);
}

/// The implementation in use.
pub fn current() -> Kernels {
    if GENERIC.load(Ordering::Relaxed) {
        Kernels::Generic
    } else {
        Kernels::Fused
    }
}

/// The dispatch point of the inference kernels: whether they apply to these operands — fused
/// kernels chosen, and every tensor f32 on the CPU with no gradient tracked (training keeps
/// candle's differentiable operations).
pub fn fused_applies(tensors: &[&Tensor]) -> bool {
    current() == Kernels::Fused && tensors.iter().all(|t| cpu_f32(t) && !t.track_op())
}

/// The dispatch point of the differentiable training kernels (`conv_train`): fused kernels
/// chosen and every tensor f32 on the CPU, gradients tracked or not.
pub fn training_applies(tensors: &[&Tensor]) -> bool {
    current() == Kernels::Fused && tensors.iter().all(|t| cpu_f32(t))
}

fn cpu_f32(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn kernels_apply_to_plain_f32_cpu_tensors_only() {
        let plain = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let half = Tensor::zeros(4, DType::F16, &Device::Cpu).unwrap();
        let tracked = Var::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(fused_applies(&[&plain]));
        assert!(!fused_applies(&[&plain, &half]));
        assert!(!fused_applies(&[tracked.as_tensor()]));
        assert!(training_applies(&[tracked.as_tensor()]));
        assert!(!training_applies(&[&half]));
        assert_eq!(Kernels::parse("generic"), Some(Kernels::Generic));
        assert_eq!(Kernels::parse("fast"), None);
        assert_eq!(Kernels::Fused.name(), "fused");
    }
}
