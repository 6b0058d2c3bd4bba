//! Measuring the built-in model against its own data generator: an attribute classifier trained
//! on generator scenes scores prompt adherence, a Fréchet distance in that classifier's feature
//! space scores how close generated pictures are to real scenes, and flat-colour stroke pictures
//! made from scenes, and flat-colour paintings whose elements are known, stand in for a user's
//! sketch when measuring SDEdit.

pub mod classifier;
pub mod frechet;
pub mod paintings;
pub mod regions;
pub mod sharpness;
pub mod strokes;
