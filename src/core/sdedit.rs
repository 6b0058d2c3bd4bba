//! SDEdit (Meng, Song et al., ICLR 2022): noise a guide image to an intermediate level t0 and
//! denoise it back, so rough strokes become a realistic picture. Computed as diffusers' img2img:
//! with N steps and strength s, the last int(N·s) steps of the schedule run, starting from the
//! clean latent noised to the first of them (LCM places its steps itself: `Sampler::for_strength`).
//! A mask limits the change to a region.

use candle_core::Tensor;

use super::error::{CoreError, Result};
use super::samplers::{Inpaint, Outcome, SampleContext, Sampler};
use super::tensor_ops::check_same_shape;

/// An SDEdit request.
#[derive(Debug, Clone)]
pub struct SdEdit<'a> {
    /// The clean guide latent (the encoded strokes).
    pub guide: &'a Tensor,
    /// Unit-variance noise of the guide's shape.
    pub noise: &'a Tensor,
    /// Strength in (0, 1]: 1 starts from pure noise, small values stay close to the guide.
    pub strength: f64,
    /// 1 where the picture may change, 0 where the guide is kept; broadcastable to the guide.
    pub mask: Option<&'a Tensor>,
}

/// The first step that runs for `strength` out of `steps` (diffusers' `t_start`).
pub fn start_step(steps: usize, strength: f64) -> Result<usize> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(CoreError::invalid("strength", strength, "must lie in (0, 1]"));
    }
    let run = ((steps as f64 * strength) as usize).min(steps);
    if run == 0 {
        return Err(CoreError::invalid(
            "strength",
            strength,
            format!("with {steps} steps it runs none; raise the strength or the steps"),
        ));
    }
    Ok(steps - run)
}

/// Runs SDEdit with `sampler`. The context's own inpainting setting is replaced by the request's
/// mask.
pub fn sdedit(sampler: &dyn Sampler, ctx: &mut SampleContext<'_>, request: &SdEdit<'_>) -> Result<Outcome> {
    check_same_shape("SDEdit noise", request.guide, request.noise)?;
    if !(request.strength > 0.0 && request.strength <= 1.0) {
        return Err(CoreError::invalid("strength", request.strength, "must lie in (0, 1]"));
    }
    let own = sampler.for_strength(request.strength)?;
    let (sampler, start) = match &own {
        Some(own) => (own.as_ref(), 0),
        None => (sampler, start_step(sampler.steps(), request.strength)?),
    };
    ctx.inpaint = match request.mask {
        Some(mask) => {
            if mask.broadcast_as(request.guide.shape()).is_err() {
                return Err(CoreError::ShapeMismatch {
                    what: "SDEdit mask",
                    expected: request.guide.dims().to_vec(),
                    found: mask.dims().to_vec(),
                });
            }
            let mask = mask.to_dtype(request.guide.dtype())?;
            Some(Inpaint { known: request.guide.clone(), noise: request.noise.clone(), mask })
        }
        None => None,
    };
    let x = sampler.add_noise(request.guide, request.noise, start)?;
    sampler.run(x, start, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_picks_the_last_steps_as_diffusers() {
        assert_eq!(start_step(50, 1.0).unwrap(), 0);
        assert_eq!(start_step(50, 0.5).unwrap(), 25);
        assert_eq!(start_step(10, 0.75).unwrap(), 3); // int(7.5) = 7 steps run
        assert_eq!(start_step(4, 0.3).unwrap(), 3);
    }

    #[test]
    fn strength_outside_the_range_or_running_nothing_is_refused() {
        for bad in [0.0, -0.1, 1.01, f64::NAN] {
            let err = start_step(10, bad).unwrap_err();
            assert!(err.to_string().contains("strength"), "{err}");
        }
        let err = start_step(4, 0.2).unwrap_err();
        assert!(err.to_string().contains("runs none"), "{err}");
    }
}
