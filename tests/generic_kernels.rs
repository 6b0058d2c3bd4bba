//! The generic path (`--kernels generic`: candle's device-generic operations, what a GPU runs)
//! renders the built-in model and its live student as the fused CPU kernels do, and the command
//! line's flag reaches it. (The diffusers-parity tests run on both paths themselves.)

mod common;

use std::ops::ControlFlow;
use std::process::Command;

use latent_studio::core::samplers::SamplerKind;
use latent_studio::core::Guidance;
use latent_studio::engine::spec::ModelSource;
use latent_studio::models::pipeline::{LoadOptions, Pipeline, Request};

/// The same pictures: 8-bit pixels within the bounds the diffusers-parity tests allow.
fn assert_same_pictures(what: &str, fused: &[u8], generic: &[u8]) {
    assert_eq!(fused.len(), generic.len(), "{what}: picture sizes");
    let diffs: Vec<u8> = fused.iter().zip(generic).map(|(a, b)| a.abs_diff(*b)).collect();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    let max = diffs.iter().copied().max().unwrap_or(0);
    println!("{what}: generic vs fused mean abs diff {mean:.3}, max {max}");
    assert!(mean <= 0.5 && max <= 4, "{what}: generic vs fused mean abs diff {mean}, max {max}");
}

#[test]
fn the_builtin_model_and_its_student_render_the_same_on_both_paths() {
    for source in [ModelSource::Builtin, ModelSource::BuiltinLive] {
        let pipeline = Pipeline::load(&source.path(), &LoadOptions::default()).unwrap();
        let defaults = pipeline.defaults().clone();
        let request = Request {
            prompt: "a snowy mountain lake at dusk with pine trees".into(),
            negative: String::new(),
            sampler: SamplerKind::Ddim,
            options: Default::default(),
            steps: defaults.steps.min(12),
            guidance: Guidance { scale: defaults.guidance, ..Guidance::none() },
            seed: 7,
            size: None,
            init_latent: None,
            init_image: None,
            prompt_to: None,
            regions: Vec::new(),
        };
        let mut renders = Vec::new();
        common::on_both_kernels(|| {
            // The dispatch point follows the choice.
            let plain =
                candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            let fused = latent_studio::kernels::current() == latent_studio::kernels::Kernels::Fused;
            assert_eq!(latent_studio::kernels::fused_applies(&[&plain]), fused);
            let rendered = pipeline.render(&request, &mut |_| ControlFlow::Continue(())).unwrap().unwrap();
            renders.push(rendered.rgb);
        });
        assert_same_pictures(&source.name(), &renders[0], &renders[1]);
    }
}

#[test]
fn the_command_lines_kernels_flag_picks_the_path() {
    let dir = std::env::temp_dir().join(format!("latent-studio-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let render = |kernels: &str| {
        let out = dir.join(format!("{kernels}.png"));
        let status = Command::new(env!("CARGO_BIN_EXE_latent-studio"))
            .args(["render", "--prompt", "a calm lake at noon", "--steps", "4", "--seed", "3"])
            .args(["--kernels", kernels, "--threads", "1", "-o"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "render --kernels {kernels}");
        latent_studio::imageio::read_png(&out).unwrap().data
    };
    assert_same_pictures("render --kernels", &render("fused"), &render("generic"));
    // The flag reaches the dispatch point: the parity figures say which kernels ran.
    let parity = Command::new(env!("CARGO_BIN_EXE_latent-studio"))
        .args(["--kernels", "generic", "--threads", "1", "bench", "--only", "device_parity"])
        .output()
        .unwrap();
    assert!(parity.status.success(), "{}", String::from_utf8_lossy(&parity.stderr));
    let lines = String::from_utf8_lossy(&parity.stdout).into_owned();
    assert!(lines.contains("CPU (F32, generic kernels) vs CPU (F32, fused kernels)"), "{lines}");
    for line in lines.lines() {
        let figure: serde_json::Value = serde_json::from_str(line).unwrap();
        let levels = figure["value"].as_f64().unwrap();
        assert!(levels <= 4.0, "{line}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_latent-studio"))
        .args(["render", "--kernels", "fast", "--prompt", "x", "-o", "x.png"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fused"));
    std::fs::remove_dir_all(&dir).ok();
}
