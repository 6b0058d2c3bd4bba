//! Procedurally generated, captioned landscape scenes: the built-in model's training data and
//! the yardstick its samples are measured against.

pub mod scenes;
pub mod vocabulary;

pub use scenes::{scene, Scene, SceneParams};
