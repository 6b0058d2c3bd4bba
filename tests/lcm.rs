//! A tiny latent-consistency pipeline saved by diffusers itself
//! (`tests/fixtures/tiny_lcm/make_fixture.py`): a UNet with a guidance embedding
//! (`time_cond_proj_dim`) and an `LCMScheduler`. Our guidance embedding, LCM img2img timesteps
//! and renders (text-to-image and img2img, one network pass per step) must equal diffusers'.

use std::path::{Path, PathBuf};

use candle_core::Device;
use latent_studio::core::samplers::SamplerKind;
use latent_studio::core::SchedulerConfig;
use latent_studio::engine::spec::rgb_tensor;
use latent_studio::imageio::read_png;
use latent_studio::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};
use latent_studio::models::unet::guidance_embedding;
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_lcm")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

fn scheduler() -> SchedulerConfig {
    SchedulerConfig::from_json(
        &std::fs::read_to_string(fixture().join("model/scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_guidance_embedding_equals_diffusers() {
    let _kernels = common::fused_kernels();
    for case in cases()["guidance_embeddings"].as_array().unwrap() {
        let scale = case["guidance"].as_f64().unwrap();
        let dim = case["dim"].as_u64().unwrap() as usize;
        let want: Vec<f64> = serde_json::from_value(case["embedding"].clone()).unwrap();
        let got: Vec<f32> = guidance_embedding(&[scale], dim, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*g) - w).abs() < 2e-6, "guidance {scale}, element {i}: {g} vs {w}");
        }
    }
}

#[test]
fn lcm_img2img_timesteps_equal_diffusers_for_every_strength() {
    let _kernels = common::fused_kernels();
    let config = scheduler();
    for case in cases()["timesteps"].as_array().unwrap() {
        let steps = case["steps"].as_u64().unwrap() as usize;
        let strength = case["strength"].as_f64().unwrap();
        let want: Vec<f64> = serde_json::from_value(case["timesteps"].clone()).unwrap();
        let lcm = SamplerKind::Lcm.build(&config, steps, &Default::default()).unwrap();
        let placed = lcm.for_strength(strength).unwrap().expect("LCM places its own img2img steps");
        let got: Vec<f64> = (0..placed.steps()).map(|i| placed.timestep_at(i)).collect();
        assert_eq!(got, want, "{steps} steps at strength {strength}");
    }
    for case in cases()["refused_timesteps"].as_array().unwrap() {
        let steps = case["steps"].as_u64().unwrap() as usize;
        let strength = case["strength"].as_f64().unwrap();
        let lcm = SamplerKind::Lcm.build(&config, steps, &Default::default()).unwrap();
        let err = lcm.for_strength(strength).err().expect("diffusers refuses this too");
        assert!(err.to_string().contains("strength"), "{err}");
    }
}

#[test]
fn lcm_renders_match_diffusers_pixels() {
    common::on_both_kernels(|| {
        let pipeline = Pipeline::load(&fixture().join("model"), &LoadOptions::default()).unwrap();
        assert!(pipeline.guidance_embedded());
        assert_eq!(pipeline.default_sampler().0, SamplerKind::Lcm);
        let init = rgb_tensor(&read_png(&fixture().join("renders/init.png")).unwrap()).unwrap();
        for case in cases()["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let latent = common::saved_latent(&fixture().join(format!("renders/{name}.safetensors")));
            let init_image = case["strength"].as_f64().map(|strength| InitImage {
                image: init.clone(),
                strength,
                mask: None,
            });
            let request = Request { init_image, ..common::case_request(case, SamplerKind::Lcm, latent) };
            let (ours, evaluations) = common::render_counting(&pipeline, &request);
            assert_eq!(evaluations, request.steps, "{name}: one network pass per step");
            common::assert_matches_png(
                name,
                &ours.rgb,
                (ours.width, ours.height),
                &fixture().join(format!("renders/{name}.png")),
            );
        }
    });
}
