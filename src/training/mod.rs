//! Training the built-in model from procedurally generated scenes.

pub mod builtin;
pub mod discriminator;
pub mod distill;
pub mod ema;
pub mod train;
pub mod words;
