//! The Turbo and Hyper presets against diffusers run as SD-Turbo's and Hyper-SD's examples run it
//! (`tests/fixtures/presets/make_fixture.py`): Euler ancestral on trailing timesteps without
//! guidance (one step, and img2img at strength 0.5 with two), DDIM on trailing timesteps without
//! guidance (8 steps). diffusers' `guidance_scale=0.0` is one conditional pass: the presets'
//! guidance 1.

use std::path::{Path, PathBuf};

use latent_studio::core::presets::Preset;
use latent_studio::core::samplers::SamplerOptions;
use latent_studio::core::Guidance;
use latent_studio::engine::spec::rgb_tensor;
use latent_studio::imageio::read_png;
use latent_studio::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};
use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn turbo_and_hyper_presets_render_as_diffusers_runs_those_models() {
    common::on_both_kernels(|| {
        let here = fixtures().join("presets");
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(here.join("cases.json")).unwrap()).unwrap();
        let pipeline = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
        let init = rgb_tensor(&read_png(&fixtures().join("inpaint/renders/init.png")).unwrap()).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let preset = Preset::parse(case["preset"].as_str().unwrap()).unwrap().settings();
            let latent = common::saved_latent(&here.join(format!("renders/{name}.safetensors")));
            let init_image = case["strength"].as_f64().map(|strength| InitImage {
                image: init.clone(),
                strength,
                mask: None,
            });
            let request = Request {
                sampler: preset.sampler,
                options: SamplerOptions { spacing: preset.spacing, ..Default::default() },
                steps: case["steps"].as_u64().unwrap() as usize,
                guidance: Guidance { scale: preset.guidance, ..Guidance::none() },
                init_image,
                ..common::case_request(case, preset.sampler, latent)
            };
            let (ours, evaluations) = common::render_counting(&pipeline, &request);
            common::assert_matches_png(name, &ours.rgb, (16, 16), &here.join(format!("renders/{name}.png")));
            let runs = if case["strength"].is_null() { request.steps } else { 1 };
            assert_eq!(evaluations, runs, "{name}: the steps that run");
        }
    });
}
