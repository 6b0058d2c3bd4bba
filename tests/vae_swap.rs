//! The tiny SD fixture with its autoencoder replaced by a TAESD-architecture `AutoencoderTiny`
//! (`tests/fixtures/vae_swap/make_fixture.py`, diffusers' own renders): text-to-image and img2img
//! through the swapped autoencoder give diffusers' pixels, and autoencoders that do not fit are
//! refused naming the file.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::engine::spec::rgb_tensor;
use latent_studio::imageio::read_png;
use latent_studio::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};
use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn renders_through_a_swapped_taesd_match_diffusers_pixels() {
    let here = fixtures().join("vae_swap");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(here.join("cases.json")).unwrap()).unwrap();
    let mut pipeline = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
    pipeline.swap_vae(&here.join("taesd")).unwrap();
    let init = rgb_tensor(&read_png(&here.join("renders/init.png")).unwrap()).unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let latent = common::saved_latent(&here.join(format!("renders/{name}.safetensors")));
        let init_image =
            case["strength"].as_f64().map(|strength| InitImage { image: init.clone(), strength, mask: None });
        let request = Request { init_image, ..common::case_request(case, SamplerKind::Ddim, latent) };
        let ours =
            pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap();
        common::assert_matches_png(
            name,
            &ours.rgb,
            (ours.width, ours.height),
            &here.join(format!("renders/{name}.png")),
        );
    }
}

#[test]
fn an_autoencoder_for_other_latents_or_a_single_file_is_refused_naming_it() {
    let mut pipeline = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
    // The built-in model's autoencoder has 8 latent channels and scales 8x; the tiny UNet takes 4.
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/builtin");
    let err = pipeline.swap_vae(&builtin).unwrap_err().to_string();
    assert!(err.contains("vae/config.json") && err.contains("8 latent channels"), "{err}");
    let file = fixtures().join("vae_swap/taesd/diffusion_pytorch_model.safetensors");
    let err = pipeline.swap_vae(&file).unwrap_err().to_string();
    assert!(err.contains("diffusion_pytorch_model.safetensors") && err.contains("folder"), "{err}");
    // The model still renders with its own autoencoder after the refusals.
    assert_eq!(pipeline.latent_channels(), 4);
}
