//! Broken or unsupported models give an error that says what is wrong and where, never a panic.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::core::Guidance;
use latent_studio::models::pipeline::{LoadOptions, Pipeline, PipelineError, Request};

mod common;
use common::copy_dir;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sd/model")
}

/// A private copy of the tiny model to break.
fn copy_model(name: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("latent-studio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&fixture(), &dst);
    dst
}

fn load_error(dir: &Path) -> String {
    match Pipeline::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn a_missing_component_folder_is_named() {
    let dir = copy_model("missing");
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("vae") && err.contains("missing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_truncated_weights_file_is_named() {
    let dir = copy_model("truncated");
    let file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("unet/diffusion_pytorch_model.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let dir = copy_model("shape");
    let file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    tensors.insert("conv_in.weight".into(), Tensor::zeros((32, 4, 1, 1), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("conv_in.weight") && err.contains("[32, 4, 3, 3]") && err.contains("[32, 4, 1, 1]"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A change to a UNet config.
type ConfigEdit = fn(&mut serde_json::Value);

#[test]
fn unknown_sdxl_and_instruct_pix2pix_unets_are_refused_by_name() {
    let cases: [(&str, ConfigEdit, &str); 4] = [
        (
            "arch",
            |v| v["_class_name"] = "UNet3DConditionModel".into(),
            "unknown architecture UNet3DConditionModel",
        ),
        ("block", |v| v["down_block_types"][0] = "CrossAttnDownBlock3D".into(), "CrossAttnDownBlock3D"),
        ("sdxl", |v| v["addition_embed_type"] = "text_time".into(), "SDXL"),
        ("pix2pix", |v| v["in_channels"] = 8.into(), "takes 8 input channels for 4 latent ones"),
    ];
    for (name, edit, want) in cases {
        let dir = copy_model(name);
        edit_json(&dir.join("unet/config.json"), edit);
        let err = load_error(&dir);
        assert!(err.contains(want), "{name}: {err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn pickles_are_refused_with_the_reason_and_the_way_out() {
    let ckpt = std::env::temp_dir().join(format!("latent-studio-{}.ckpt", std::process::id()));
    std::fs::write(&ckpt, b"not really a pickle").unwrap();
    let err = load_error(&ckpt);
    assert!(err.contains("arbitrary code") && err.contains("safetensors"), "{err}");
    std::fs::remove_file(ckpt).unwrap();

    let dir = copy_model("bin");
    let unet = dir.join("unet");
    std::fs::rename(
        unet.join("diffusion_pytorch_model.safetensors"),
        unet.join("diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(err.contains("diffusion_pytorch_model.bin") && err.contains("arbitrary code"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A two-step request at `width × height`.
fn sized_request(width: usize, height: usize) -> Request {
    Request {
        prompt: "a cat".into(),
        negative: String::new(),
        sampler: SamplerKind::Ddim,
        options: Default::default(),
        steps: 2,
        guidance: Guidance::default(),
        seed: 0,
        size: Some((width, height)),
        init_latent: None,
        init_image: None,
        prompt_to: None,
        regions: Vec::new(),
    }
}

#[test]
fn a_size_that_is_not_a_multiple_of_the_vae_factor_is_refused() {
    let pipeline = Pipeline::load(&fixture(), &LoadOptions::default()).unwrap();
    let request = sized_request(15, 16);
    let err = pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).err().unwrap();
    assert!(matches!(err, PipelineError::Invalid { name: "width", .. }), "{err}");
    assert!(err.to_string().contains("multiple of 2"), "{err}");
}

#[test]
fn a_size_too_large_for_memory_is_an_error_naming_the_need() {
    let pipeline = Pipeline::load(&fixture(), &LoadOptions::default()).unwrap();
    // 16384x16384 pixels is a 8192x8192 latent here: its attention scores alone need petabytes.
    let request = sized_request(16384, 16384);
    let err = pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).err().unwrap();
    assert!(matches!(err, PipelineError::Invalid { name: "size", .. }), "{err}");
    assert!(err.to_string().contains("GiB of memory is free"), "{err}");
}

#[test]
fn an_fp16_variant_is_used_when_it_is_the_only_weights() {
    let dir = copy_model("fp16");
    let vae = dir.join("vae");
    let file = vae.join("diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let half: std::collections::HashMap<_, _> =
        tensors.into_iter().map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap())).collect();
    candle_core::safetensors::save(&half, vae.join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    std::fs::remove_file(file).unwrap();
    assert!(Pipeline::load(&dir, &LoadOptions::default()).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}
