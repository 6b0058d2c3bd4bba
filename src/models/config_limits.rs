//! Bounds on what a network's `config.json` may ask for, checked before anything is built: a
//! hostile file (huge or zero widths, thousands of levels) must end in an error naming the
//! field, not in an arithmetic overflow or an allocation the size of the address space.

use candle_core::{Error, Result};

/// The widest channel count a config may ask for: beyond any released network (SDXL's widest
/// UNet level is 1280), and small enough that no size computed from it overflows.
pub const MAX_CHANNELS: usize = 1 << 14;
/// The most resolution levels, and residual blocks per level, a config may ask for.
pub const MAX_LEVELS: usize = 8;
/// The largest latent side a UNet's `sample_size` may name (SD 1.5's is 64).
pub const MAX_LATENT_SIDE: usize = 1 << 12;

/// Refuses `value` of `component`'s field `name` unless it lies in `1..=max`.
pub fn within(component: &str, name: &str, value: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::Msg(format!("{component} config: {name} {value} is outside 1..={max}")))
    }
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn a_value_outside_its_range_is_refused_with_the_component_and_field_named() {
        assert!(within("UNet", "in_channels", 4, 16).is_ok());
        assert!(within("UNet", "in_channels", 16, 16).is_ok());
        let zero = within("UNet", "in_channels", 0, 16).unwrap_err().to_string();
        assert!(zero.contains("UNet config: in_channels 0 is outside 1..=16"), "{zero}");
        assert!(within("VAE", "latent_channels", 17, 16).is_err());
    }
}
