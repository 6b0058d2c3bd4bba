//! Procedurally generated, captioned landscape scenes: the training set of the built-in
//! text-to-image model. Deterministic per seed, pure std, no files: the same seed gives the same
//! picture and caption on every machine, so a training run or a test names its data by seeds.

pub mod scenes;
pub mod vocabulary;

pub use scenes::{
    caption, render, scene, stated_labels, BodyKind, CelestialBody, Mountains, Scene, SceneParams, TimeOfDay,
    Trees, Water,
};
pub use vocabulary::{words, MAX_WORDS, WORDS};
