//! Single-file LDM checkpoints: a tiny SD 1.x checkpoint in the original key layout
//! (`tests/fixtures/single_file/make_fixture.py`) renders as diffusers' `from_single_file` does,
//! a tiny SD 2.x one (OpenCLIP text encoder, v-prediction) as the same weights in a diffusers folder,
//! the shipped CLIP vocabulary tokenizes as transformers does, and SDXL and instruct-pix2pix files are
//! refused by name.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::models::clip_tokenizer::ClipTokenizer;
use latent_studio::models::pipeline::{LoadOptions, Pipeline, Request};
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single_file")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

#[test]
fn the_shipped_clip_vocabulary_matches_transformers() {
    let _kernels = common::fused_kernels();
    let tokenizer = ClipTokenizer::openai("<|endoftext|>", 77).unwrap();
    for case in cases()["tokens"].as_array().unwrap() {
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(case["prompt"].as_str().unwrap()).ids, want, "{}", case["prompt"]);
    }
}

#[test]
fn single_file_checkpoints_render_as_diffusers() {
    common::on_both_kernels(|| {
        for case in cases()["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let file = fixture().join(case["file"].as_str().unwrap());
            let pipeline = Pipeline::load(&file, &LoadOptions::default()).unwrap();
            let latent = common::saved_latent(&fixture().join(format!("{name}.safetensors")));
            let request =
                Request { size: Some((16, 16)), ..common::case_request(case, SamplerKind::Ddim, latent) };
            let ours = pipeline
                .render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(()))
                .unwrap()
                .unwrap();
            common::assert_matches_png(
                name,
                &ours.rgb,
                (ours.width, ours.height),
                &fixture().join(format!("{name}.png")),
            );
        }
    });
}

fn write_checkpoint(name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("latent-studio-{name}-{}.safetensors", std::process::id()));
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, shape)| (k.to_string(), Tensor::zeros(*shape, DType::F16, &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    let err = Pipeline::load(path, &LoadOptions::default()).err().expect("loaded").to_string();
    std::fs::remove_file(path).unwrap();
    err
}

#[test]
fn sdxl_instruct_pix2pix_and_foreign_files_are_refused_by_name() {
    let _kernels = common::fused_kernels();
    let sdxl = write_checkpoint(
        "sdxl",
        &[
            ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", &[8, 4]),
            ("model.diffusion_model.input_blocks.0.0.weight", &[8, 4, 3, 3]),
        ],
    );
    assert!(load_error(&sdxl).contains("SDXL"));
    let pix2pix =
        write_checkpoint("pix2pix", &[("model.diffusion_model.input_blocks.0.0.weight", &[8, 8, 3, 3])]);
    assert!(load_error(&pix2pix).contains("takes 8 input channels"));
    let other = write_checkpoint("other", &[("encoder.weight", &[2, 2])]);
    let err = load_error(&other);
    assert!(err.contains("not a Stable Diffusion checkpoint"), "{err}");
}
