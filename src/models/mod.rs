//! Networks and their loaders: candle modules whose paths mirror diffusers' weight names.

pub mod autoencoder;
pub mod clip;
pub mod clip_tokenizer;
pub mod config_limits;
pub mod device;
pub mod kept_weights;
pub mod layers;
pub mod lora;
pub mod pipeline;
pub mod preview;
pub mod regions;
pub mod single_file;
pub mod tiny_vae;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod vae_files;
