//! The tensors a network was built from, kept by name as it took them, so the same network can be
//! built again with some of them replaced (a LoRA's strength changed) without reading the
//! checkpoint again: the kept tensors share their storage with the network, so keeping them
//! costs no memory until one is replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// Tensors by their full name (`down_blocks.0.resnets.0.conv1.weight`).
pub type Weights = HashMap<String, Tensor>;

/// A weights backend that serves another and keeps what it served.
struct Keeping<'a> {
    inner: VarBuilder<'a>,
    kept: Arc<Mutex<Weights>>,
}

impl Keeping<'_> {
    fn keep(&self, name: &str, t: Tensor) -> Tensor {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(name.to_string(), t.clone());
        }
        t
    }
}

impl SimpleBackend for Keeping<'_> {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, _: &Device) -> Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        Ok(self.keep(name, t))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        Ok(self.keep(name, t))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Builds a network from `vb` and returns it with the tensors it took.
pub fn build_keeping<'a, T>(
    vb: VarBuilder<'a>,
    build: impl FnOnce(VarBuilder<'a>) -> Result<T>,
) -> Result<(T, Weights)> {
    let (dtype, device) = (vb.dtype(), vb.device().clone());
    let kept = Arc::new(Mutex::new(Weights::new()));
    let backend = Keeping { inner: vb, kept: kept.clone() };
    let network = build(VarBuilder::from_backend(Box::new(backend), dtype, device))?;
    let weights = match kept.lock() {
        Ok(mut kept) => std::mem::take(&mut *kept),
        Err(_) => return Err(candle_core::Error::Msg("the kept weights' lock is poisoned".into())),
    };
    Ok((network, weights))
}

/// A `VarBuilder` over kept tensors (shared, not copied).
pub fn var_builder(weights: &Weights, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_tensors(weights.clone(), dtype, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_the_network_took_and_rebuilds_from_it() {
        let dev = Device::Cpu;
        let mut source = Weights::new();
        source.insert("a.weight".into(), Tensor::new(&[[1f32, 2.0]], &dev).unwrap());
        source.insert("unused".into(), Tensor::new(&[3f32], &dev).unwrap());
        let vb = VarBuilder::from_tensors(source, DType::F32, &dev);
        let (w, kept) = build_keeping(vb, |vb| vb.pp("a").get((1, 2), "weight")).unwrap();
        assert_eq!(kept.len(), 1, "only what was taken is kept");
        assert_eq!(kept["a.weight"].to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let again = var_builder(&kept, DType::F32, &dev).get((1, 2), "a.weight").unwrap();
        assert_eq!(again.to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0]]);
    }
}
