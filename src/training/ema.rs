//! An exponential moving average of a network's weights while it trains (diffusers'
//! `EMAModel`): the average samples better than the last weights, whose noise from the last
//! few hundred steps it smooths out.

use std::path::Path;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

/// The average's decay once warmed up.
pub const DECAY: f64 = 0.999;

/// The averaged copy of a [`VarMap`]'s variables.
pub struct Ema {
    /// Each variable's name, the variable, and its average.
    entries: Vec<(String, Var, Tensor)>,
    /// Updates so far (sets the warm-up).
    step: usize,
    /// A decay used from the first update on instead of the warm-up (a distillation target).
    fixed: Option<f64>,
}

impl Ema {
    /// Starts the average at the variables' current values; `step` is how many training steps
    /// they already had (a resumed run keeps its decay).
    pub fn new(map: &VarMap, step: usize) -> candle_core::Result<Self> {
        let data = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the weight map's lock is poisoned".into()))?;
        let mut entries: Vec<_> = data
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.clone(), var.as_tensor().detach().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { entries, step, fixed: None })
    }

    /// An average with the constant `decay` (no warm-up): the slowly following target network
    /// of consistency distillation (diffusers' LCM script: 0.95).
    pub fn fixed(map: &VarMap, decay: f64) -> candle_core::Result<Self> {
        Ok(Self { fixed: Some(decay), ..Self::new(map, 0)? })
    }

    /// The averaged weights by name, to build a network that runs on them.
    pub fn tensors(&self) -> std::collections::HashMap<String, Tensor> {
        self.entries.iter().map(|(name, _, avg)| (name.clone(), avg.clone())).collect()
    }

    /// The decay of update number `step`: diffusers' warm-up `(1 + step) / (10 + step)`, capped
    /// at [`DECAY`], so early averages follow the fast-changing weights.
    pub fn decay(step: usize) -> f64 {
        ((1 + step) as f64 / (10 + step) as f64).min(DECAY)
    }

    /// Moves the average toward the variables' current values.
    pub fn update(&mut self) -> candle_core::Result<()> {
        let d = self.fixed.unwrap_or_else(|| Self::decay(self.step));
        for (_, var, avg) in &mut self.entries {
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
        }
        self.step += 1;
        Ok(())
    }

    /// Replaces the average by a saved one (resuming); names missing from the file keep theirs.
    pub fn load(&mut self, path: &Path) -> candle_core::Result<()> {
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        for (name, var, avg) in &mut self.entries {
            if let Some(t) = tensors.get(name.as_str()) {
                if t.dims() != var.dims() {
                    return Err(candle_core::Error::Msg(format!(
                        "{}: tensor `{name}` has shape {:?}, expected {:?}",
                        path.display(),
                        t.dims(),
                        var.dims()
                    )));
                }
                *avg = t.to_dtype(var.dtype())?.to_device(var.device())?;
            }
        }
        Ok(())
    }

    /// Writes the average in `dtype` under the variables' names, atomically.
    pub fn save(&self, path: &Path, dtype: DType) -> candle_core::Result<()> {
        let tensors = self
            .entries
            .iter()
            .map(|(name, _, avg)| Ok((name.clone(), avg.to_dtype(dtype)?)))
            .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::{Init, VarMap};

    use super::*;

    #[test]
    fn the_average_follows_the_closed_form() {
        let map = VarMap::new();
        let var = map.get(2, "w", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let mut ema = Ema::new(&map, 0).unwrap();
        let weights = map.all_vars();
        // Weights jump to 1 and stay: after n updates the average is 1 - Π(decay_i).
        weights[0].set(&Tensor::ones(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let mut remaining = 1.0;
        for step in 0..30 {
            ema.update().unwrap();
            remaining *= Ema::decay(step);
        }
        let dir = std::env::temp_dir().join(format!("ema-test-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        ema.save(&path, DType::F32).unwrap();
        let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let avg = saved["w"].to_vec1::<f32>().unwrap();
        assert!((f64::from(avg[0]) - (1.0 - remaining)).abs() < 1e-5, "{avg:?} vs {}", 1.0 - remaining);
        // The closed form of the first decays: 1/10, 2/11, 3/12.
        assert!((Ema::decay(0) - 0.1).abs() < 1e-12 && (Ema::decay(2) - 0.25).abs() < 1e-12);
        assert_eq!(Ema::decay(1_000_000), DECAY);
        drop(var);
        let _ = std::fs::remove_dir_all(dir);
    }
}
