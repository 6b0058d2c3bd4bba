//! Latent Studio: a desktop studio for working with diffusion models interactively.
//! See `ARCHITECTURE.md` for the module map.

pub mod app;
pub mod background;
pub mod cache;
pub mod cli;
pub mod core;
pub mod dataset;
pub mod edit_mask;
pub mod engine;
pub mod evaluation;
pub mod graph;
pub mod imageio;
pub mod kernels;
pub mod models;
pub mod sketch;
pub mod training;
pub mod ui;
