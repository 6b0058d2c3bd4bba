//! Which device runs the networks: `auto` (the default: a CUDA GPU, else Metal, else the CPU),
//! `cpu`, `cuda:N` or `metal`. A device asked for by name that this build or machine lacks is an
//! error saying why; `auto` falls back to the CPU, with a notice where the build has a GPU
//! backend that found no GPU.

use std::sync::OnceLock;

use candle_core::Device;

/// The device `--device` chose for this process (the CPU until it is set).
static CHOSEN: OnceLock<Device> = OnceLock::new();

/// Makes `device` the one every model of this process loads onto (set once, at start-up; a
/// second call is ignored).
pub fn set_default(device: Device) {
    let _ = CHOSEN.set(device);
}

/// The device models load onto: the one `--device` chose, else the CPU.
pub fn default_device() -> Device {
    CHOSEN.get().cloned().unwrap_or(Device::Cpu)
}

/// A device choice that cannot be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {asked}: {reason}")]
pub struct DeviceError {
    /// What was asked for.
    pub asked: String,
    /// Why it cannot be used.
    pub reason: String,
}

/// The device `spec` names, and a notice for the user when `auto` fell back to the CPU.
pub fn choose(spec: &str) -> Result<(Device, Option<String>), DeviceError> {
    let error = |reason: String| DeviceError { asked: spec.to_string(), reason };
    match spec {
        "cpu" => Ok((Device::Cpu, None)),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok((device, None));
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(device) = Device::new_metal(0) {
                    return Ok((device, None));
                }
            }
            let gpu_build = cfg!(feature = "cuda") || cfg!(feature = "metal");
            let notice = gpu_build.then(|| "no GPU was found: running on the CPU".to_string());
            Ok((Device::Cpu, notice))
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(error("this build has no Metal support: build with --features metal".into()));
            }
            Device::new_metal(0)
                .map(|d| (d, None))
                .map_err(|e| error(format!("no Metal device: {}", words(e))))
        }
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => {
                if !cfg!(feature = "cuda") {
                    return Err(error("this build has no CUDA support: build with --features cuda".into()));
                }
                Device::new_cuda(n)
                    .map(|d| (d, None))
                    .map_err(|e| error(format!("no CUDA device {n}: {}", words(e))))
            }
            _ => Err(error("expected auto, cpu, cuda:N or metal".into())),
        },
    }
}

/// What the driver said, without the backtrace candle attaches where `RUST_BACKTRACE` is set.
fn words(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => words(*inner),
        other => other.to_string(),
    }
}

/// The device's name for the user.
pub fn name(device: &Device) -> String {
    match device {
        Device::Cpu => "CPU".into(),
        Device::Cuda(_) => "CUDA GPU".into(),
        Device::Metal(_) => "Metal GPU".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_by_name_and_what_a_cpu_build_says() {
        assert!(matches!(choose("cpu"), Ok((Device::Cpu, None))));
        // This build (the tests') has no GPU backend: auto is the CPU, quietly.
        if !cfg!(feature = "cuda") && !cfg!(feature = "metal") {
            assert!(matches!(choose("auto"), Ok((Device::Cpu, None))));
            let err = choose("cuda:0").unwrap_err().to_string();
            assert_eq!(err, "device cuda:0: this build has no CUDA support: build with --features cuda");
            assert!(choose("metal").unwrap_err().to_string().contains("--features metal"));
        }
        assert!(choose("gpu").unwrap_err().to_string().contains("expected auto, cpu, cuda:N or metal"));
        assert!(choose("cuda:x").is_err());
        assert_eq!(name(&Device::Cpu), "CPU");
        let traced = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("CUDA_ERROR_NO_DEVICE".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(words(traced), "CUDA_ERROR_NO_DEVICE");
    }
}
