//! Small tensor helpers the samplers share.

use candle_core::Tensor;

use super::error::{CoreError, Result};

/// `sum(coef * tensor)`: the linear combinations every sampler step is made of.
pub fn lincomb(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut iter = terms.iter();
    let Some((c0, t0)) = iter.next() else {
        return Err(CoreError::Model("empty linear combination".into()));
    };
    let mut acc = t0.affine(*c0, 0.0)?;
    for (c, t) in iter {
        acc = (acc + t.affine(*c, 0.0)?)?;
    }
    Ok(acc)
}

/// Fails unless `found` has the shape of `expected`.
pub fn check_same_shape(what: &'static str, expected: &Tensor, found: &Tensor) -> Result<()> {
    if expected.dims() != found.dims() {
        return Err(CoreError::ShapeMismatch {
            what,
            expected: expected.dims().to_vec(),
            found: found.dims().to_vec(),
        });
    }
    Ok(())
}
