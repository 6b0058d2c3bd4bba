//! A tiny Stable Diffusion pipeline with random weights, saved by diffusers itself
//! (`tests/fixtures/tiny_sd/make_fixture.py`): our loader, tokenizer, text encoder, UNet,
//! samplers and VAE must give diffusers' images from the same starting latents, and
//! transformers' token ids in both tokenizer layouts.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::Device;
use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::core::PredictionType;
use latent_studio::models::clip_tokenizer::ClipTokenizer;
use latent_studio::models::pipeline::{LoadOptions, Pipeline};
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sd")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

#[test]
fn token_ids_equal_transformers_in_both_layouts() {
    let _kernels = common::fused_kernels();
    for case in cases()["tokens"].as_array().unwrap() {
        // Entries without a layout hold for both layouts of the SD 1.x-style tokenizer.
        let layouts = match case.get("layout").and_then(Value::as_str) {
            Some(layout) => vec![fixture().join(layout)],
            None => vec![fixture().join("model/tokenizer"), fixture().join("tokenizer_json")],
        };
        for dir in &layouts {
            let tokenizer = ClipTokenizer::from_dir(dir, 77).unwrap();
            let prompt = case["prompt"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            let got = tokenizer.encode(prompt);
            assert_eq!(got.ids, want, "{} / {prompt:?}", dir.display());
            assert_eq!(got.truncated, prompt.len() > 200, "{prompt:?}");
        }
    }
}

#[test]
fn renders_match_diffusers_pixels() {
    common::on_both_kernels(|| {
        for case in cases()["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let prediction_type =
                case.get("prediction_type").map(|p| PredictionType::parse(p.as_str().unwrap()).unwrap());
            let model = case.get("model").and_then(Value::as_str).unwrap_or("model");
            let pipeline = Pipeline::load(
                &fixture().join(model),
                &LoadOptions { prediction_type, ..LoadOptions::default() },
            )
            .unwrap();
            let latent = common::saved_latent(&fixture().join(format!("renders/{name}.safetensors")));
            let sampler = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
            let request = common::case_request(case, sampler, latent);
            let ours = pipeline
                .render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(()))
                .unwrap()
                .unwrap();
            common::assert_matches_png(
                name,
                &ours.rgb,
                (ours.width, ours.height),
                &fixture().join(format!("renders/{name}.png")),
            );
        }
    });
}

#[test]
fn an_sdedit_start_is_encoded_once_and_the_cached_latent_is_the_same() {
    let _kernels = common::fused_kernels();
    let pipeline = Pipeline::load(&fixture().join("model"), &LoadOptions::default()).unwrap();
    let size = pipeline.image_size();
    let picture = |seed| {
        latent_studio::core::SeededNoise::new(seed)
            .tensor(&[1, 3, size, size], candle_core::DType::F32, &Device::Cpu)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap()
    };
    let first = pipeline.encode_image(&picture(1)).unwrap();
    assert_eq!(pipeline.cached_images(), 1);
    let again = pipeline.encode_image(&picture(1)).unwrap();
    assert_eq!(pipeline.cached_images(), 1, "the same pixels hit the cache");
    let fresh = Pipeline::load(&fixture().join("model"), &LoadOptions::default())
        .unwrap()
        .encode_image(&picture(1))
        .unwrap();
    let diff = (&again - &fresh).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0, "the cached latent equals a fresh encoding");
    assert_eq!(first.dims(), again.dims());
    pipeline.encode_image(&picture(2)).unwrap();
    assert_eq!(pipeline.cached_images(), 2, "other pixels are encoded anew");
}
