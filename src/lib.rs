//! Latent Studio: a desktop studio for working with diffusion models interactively.
//! See `ARCHITECTURE.md` for the module map.

pub mod cache;
pub mod cli;
pub mod core;
pub mod dataset;
pub mod engine;
pub mod imageio;
pub mod models;
pub mod training;
