//! The networks build from their configs, run, and train: every weight gets a gradient.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use latent_studio::models::clip::{ClipTextConfig, ClipTextModel};
use latent_studio::models::tiny_vae::{TinyVae, TinyVaeConfig};
use latent_studio::models::unet::{HeadCount, UNet, UNetConfig};
use latent_studio::models::vae::{Vae, VaeConfig};

fn tiny_unet() -> UNetConfig {
    UNetConfig {
        block_out_channels: vec![8, 16],
        down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
        up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
        layers_per_block: 1,
        attention_head_dim: HeadCount::PerLevel(vec![2, 4]),
        cross_attention_dim: 12,
        norm_num_groups: 4,
        ..UNetConfig::default()
    }
}

#[test]
fn unet_keeps_the_shape_takes_per_item_timesteps_and_trains() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let unet = UNet::new(&tiny_unet(), VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (2, 5, 12), &dev).unwrap();
    let t = Tensor::new(&[10f32, 900.0], &dev).unwrap();
    let out = unet.forward(&x, &t, &ctx).unwrap();
    assert_eq!(out.dims(), &[2, 4, 8, 8]);
    // Item 0 at another timestep changes item 0 only.
    let t2 = Tensor::new(&[500f32, 900.0], &dev).unwrap();
    let out2 = unet.forward(&x, &t2, &ctx).unwrap();
    let diff = (&out - &out2).unwrap().abs().unwrap().sum((1, 2, 3)).unwrap().to_vec1::<f32>().unwrap();
    assert!(diff[0] > 0.0 && diff[1] == 0.0, "{diff:?}");
    let grads = out.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let missing: Vec<_> = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| grads.get(v).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

/// Configs the fuzz campaign made (seeds 2^32+27424, +19074, +19981 of `model_json`): each
/// overflowed a size in debug builds before it was refused by name.
#[test]
fn a_hostile_unet_config_is_refused_naming_the_field() {
    let dev = Device::Cpu;
    let cases: [(&str, UNetConfig); 6] = [
        ("block_out_channels", UNetConfig { block_out_channels: vec![1 << 62, 16], ..tiny_unet() }),
        ("downsample_padding", UNetConfig { downsample_padding: 1 << 62, ..tiny_unet() }),
        ("cross_attention_dim", UNetConfig { cross_attention_dim: 0, ..tiny_unet() }),
        ("attention_head_dim", UNetConfig { attention_head_dim: HeadCount::One(0), ..tiny_unet() }),
        ("layers_per_block", UNetConfig { layers_per_block: 1 << 40, ..tiny_unet() }),
        // Seed 2^32+42789: the default size, sample_size times the VAE factor, overflowed.
        ("sample_size", UNetConfig { sample_size: 1 << 62, ..tiny_unet() }),
    ];
    for (field, config) in cases {
        let map = VarMap::new();
        let err = UNet::new(&config, VarBuilder::from_varmap(&map, DType::F32, &dev)).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(field), "{field}: {message:?}");
    }
}

/// Autoencoder configs of the same class (seed 2^32+35164 of `model_json`: a huge
/// `latent_channels` overflowed `2 * latent_channels` building the encoder's last convolution).
#[test]
fn a_hostile_autoencoder_config_is_refused_naming_the_field() {
    let dev = Device::Cpu;
    let kl = [
        ("latent_channels", VaeConfig { latent_channels: 1 << 62, ..VaeConfig::default() }),
        ("block_out_channels", VaeConfig { block_out_channels: vec![], ..VaeConfig::default() }),
        ("layers_per_block", VaeConfig { layers_per_block: 1 << 40, ..VaeConfig::default() }),
        ("norm_num_groups", VaeConfig { norm_num_groups: 0, ..VaeConfig::default() }),
    ];
    for (field, config) in kl {
        let map = VarMap::new();
        let err = Vae::new(&config, VarBuilder::from_varmap(&map, DType::F32, &dev)).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("VAE config") && message.contains(field), "{field}: {message:?}");
    }
    let tiny = [
        ("latent_channels", TinyVaeConfig { latent_channels: 1 << 62, ..TinyVaeConfig::default() }),
        (
            "encoder_block_out_channels",
            TinyVaeConfig {
                encoder_block_out_channels: vec![64, 64, 64, 1 << 50],
                ..TinyVaeConfig::default()
            },
        ),
        (
            "num_decoder_blocks",
            TinyVaeConfig { num_decoder_blocks: vec![3, 3, 3, 1 << 40], ..TinyVaeConfig::default() },
        ),
    ];
    for (field, config) in tiny {
        let map = VarMap::new();
        let err = TinyVae::new(&config, VarBuilder::from_varmap(&map, DType::F32, &dev)).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("AutoencoderTiny config") && message.contains(field),
            "{field}: {message:?}"
        );
    }
}

#[test]
fn vae_downscales_by_its_factor_and_trains() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let config = VaeConfig {
        block_out_channels: vec![8, 16, 16],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..VaeConfig::default()
    };
    assert_eq!(config.downscale(), 4);
    let vae = Vae::new(&config, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    let img = Tensor::randn(0f32, 1.0, (1, 3, 16, 16), &dev).unwrap();
    let (mean, logvar) = vae.encode(&img).unwrap();
    assert_eq!(mean.dims(), &[1, 4, 4, 4]);
    assert_eq!(logvar.dims(), &[1, 4, 4, 4]);
    let out = vae.decode(&mean).unwrap();
    assert_eq!(out.dims(), &[1, 3, 16, 16]);
    let grads = (&out - &img).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let missing = map.data().lock().unwrap().iter().filter(|(_, v)| grads.get(v).is_none()).count();
    // Only the log-variance half of quant_conv feeds nothing when decoding the mean.
    assert!(missing <= 2, "{missing} tensors without gradient");
}

#[test]
fn text_encoder_is_causal() {
    let dev = Device::Cpu;
    let map = VarMap::new();
    let config = ClipTextConfig {
        vocab_size: 10,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        max_position_embeddings: 6,
        ..ClipTextConfig::default()
    };
    let model = ClipTextModel::new(&config, VarBuilder::from_varmap(&map, DType::F32, &dev)).unwrap();
    let a = model.forward(&Tensor::new(&[[1u32, 2, 3, 4]], &dev).unwrap()).unwrap();
    let b = model.forward(&Tensor::new(&[[1u32, 2, 9, 9]], &dev).unwrap()).unwrap();
    assert_eq!(a.dims(), &[1, 4, 8]);
    let first_two =
        (a.narrow(1, 0, 2).unwrap() - b.narrow(1, 0, 2).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(first_two.to_scalar::<f32>().unwrap(), 0.0, "earlier tokens must not see later ones");
}
