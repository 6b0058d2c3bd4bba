//! LoRA files on the tiny SD fixture, against diffusers' renders with the same files
//! (`tests/fixtures/lora/make_fixture.py`): a PEFT file diffusers saved itself (every Linear and
//! Conv2d of both networks, alphas in the metadata), a kohya-ss file (3×3 LoCon convolutions,
//! `.alpha`, one layer without), the same under LDM names, and two files at once with their own
//! strengths. Files of other kinds are refused by name.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::models::lora::LoraFile;
use latent_studio::models::pipeline::{LoadOptions, Pipeline};
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora")
}

fn tiny_sd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sd/model")
}

fn render(pipeline: &Pipeline, case: &Value) -> Vec<u8> {
    let name = case["name"].as_str().unwrap();
    let latent = common::saved_latent(&fixture().join(format!("renders/{name}.safetensors")));
    let sampler = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
    let request = common::case_request(case, sampler, latent);
    pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap().rgb
}

fn loras(case: &Value) -> Vec<(Arc<LoraFile>, f64)> {
    case["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = LoraFile::read(&fixture().join(l[0].as_str().unwrap())).unwrap();
            (Arc::new(file), l[1].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn lora_renders_match_diffusers_pixels() {
    common::on_both_kernels(|| {
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap();
        // One model for every case: each strength change rebuilds from the weights kept at load.
        let mut pipeline = Pipeline::load(&tiny_sd(), &LoadOptions::default()).unwrap();
        let mut rendered = HashMap::new();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let reports = pipeline.set_loras(&loras(case)).unwrap();
            for report in &reports {
                assert!(report.unmatched.is_empty(), "{name}: {:?}", report.unmatched);
                assert!(report.matched > 0, "{name}");
            }
            let rgb = render(&pipeline, case);
            common::assert_matches_png(name, &rgb, (16, 16), &fixture().join(format!("renders/{name}.png")));
            rendered.insert(name.to_string(), rgb);
        }
        // The fixture is sensitive: the two LoRAs move the same seed's picture well past rounding.
        let (both, none) = (&rendered["both"], &rendered["none"]);
        let moved = both.iter().zip(none).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).sum::<f64>()
            / both.len() as f64;
        assert!(moved > 5.0, "the LoRAs changed the picture by only {moved} levels on average");
        // Strength 0 is the base model again, exactly.
        let first = &cases["cases"][0];
        let off: Vec<_> = loras(first).into_iter().map(|(f, _)| (f, 0.0)).collect();
        pipeline.set_loras(&off).unwrap();
        let none_case = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == "none").unwrap();
        assert_eq!(render(&pipeline, none_case), rendered["none"]);
    });
}

/// Named tensors of a file to write.
type Tensors<'a> = Vec<(&'a str, Tensor)>;

fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join(name);
    let map: HashMap<String, Tensor> = tensors.iter().map(|(k, t)| (k.to_string(), t.clone())).collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap()
}

fn error(path: &Path) -> String {
    let file = match LoraFile::read(path) {
        Ok(file) => file,
        Err(e) => return e.to_string(),
    };
    let mut pipeline = Pipeline::load(&tiny_sd(), &LoadOptions::default()).unwrap();
    match pipeline.set_loras(&[(Arc::new(file), 1.0)]) {
        Ok(reports) => panic!("{} was accepted: {reports:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unmatched_layers_are_reported_and_other_kinds_of_file_refused_by_name() {
    let _kernels = common::fused_kernels();
    let dir = std::env::temp_dir().join(format!("latent-studio-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let good = [
        (format!("{q}.lora_down.weight"), zeros(&[2, 32])),
        (format!("{q}.lora_up.weight"), zeros(&[32, 2])),
    ];
    let mut tensors: Vec<(&str, Tensor)> = good.iter().map(|(k, t)| (k.as_str(), t.clone())).collect();
    tensors.push(("lora_unet_no_such_block_proj.lora_down.weight", zeros(&[2, 32])));
    tensors.push(("lora_unet_no_such_block_proj.lora_up.weight", zeros(&[32, 2])));
    tensors.push(("some_stray_tensor", zeros(&[1])));
    let partial = write(d, "partial.safetensors", &tensors);
    let mut pipeline = Pipeline::load(&tiny_sd(), &LoadOptions::default()).unwrap();
    let reports = pipeline.set_loras(&[(Arc::new(LoraFile::read(&partial).unwrap()), 0.8)]).unwrap();
    assert_eq!(reports[0].matched, 1);
    assert_eq!(
        reports[0].unmatched,
        vec!["some_stray_tensor".to_string(), "lora_unet_no_such_block_proj".into()]
    );

    // (file, its tensors, what the refusal says)
    let cases: Vec<(&str, Tensors<'_>, &str)> = vec![
        (
            "loha.safetensors",
            vec![("lora_unet_x.hada_w1_a", zeros(&[2, 2])), ("lora_unet_x.hada_w1_b", zeros(&[2, 2]))],
            "LoHa",
        ),
        ("lokr.safetensors", vec![("lora_unet_x.lokr_w1", zeros(&[2, 2]))], "LoKr"),
        (
            "dora.safetensors",
            vec![
                ("lora_unet_x.lora_down.weight", zeros(&[2, 2])),
                ("lora_unet_x.lora_up.weight", zeros(&[2, 2])),
                ("lora_unet_x.dora_scale", zeros(&[2, 1])),
            ],
            "DoRA",
        ),
        (
            "sdxl.safetensors",
            vec![
                ("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", zeros(&[2, 2])),
                ("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", zeros(&[2, 2])),
            ],
            "SDXL",
        ),
        (
            "elsewhere.safetensors",
            vec![
                ("lora_unet_label_emb_0_0.lora_down.weight", zeros(&[2, 8])),
                ("lora_unet_label_emb_0_0.lora_up.weight", zeros(&[8, 2])),
            ],
            "none of its layers is in this model",
        ),
        (
            "wide.safetensors",
            vec![(good[0].0.as_str(), zeros(&[2, 48])), (good[1].0.as_str(), zeros(&[32, 2]))],
            "another architecture",
        ),
        ("checkpoint.safetensors", vec![("conv_in.weight", zeros(&[4, 4, 3, 3]))], "no LoRA layers"),
        ("half.safetensors", vec![(good[0].0.as_str(), zeros(&[2, 32]))], "lacks its down (A) or up (B)"),
        ("model.pt", vec![(good[0].0.as_str(), zeros(&[2, 32]))], "pickles"),
    ];
    for (name, tensors, want) in cases {
        let path = write(d, name, &tensors);
        let e = error(&path);
        assert!(e.contains(want) && e.contains(name), "{name}: {e}");
    }
    std::fs::write(d.join("garbage.safetensors"), b"not a safetensors file at all").unwrap();
    assert!(error(&d.join("garbage.safetensors")).contains("garbage.safetensors"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_strength_does_not_read_the_checkpoint_again() {
    let _kernels = common::fused_kernels();
    let dir = std::env::temp_dir().join(format!("latent-studio-lora-model-{}", std::process::id()));
    common::copy_dir(&tiny_sd(), &dir);
    let mut pipeline = Pipeline::load(&dir, &LoadOptions::default()).unwrap();
    // The weight files are gone: whatever follows works from the weights kept at load.
    std::fs::remove_dir_all(&dir).unwrap();
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap();
    let case = &cases["cases"][0];
    let file = loras(case).remove(0).0;
    for strength in [0.3, -1.0, 1.0] {
        pipeline.set_loras(&[(file.clone(), strength)]).unwrap();
    }
    let rgb = render(&pipeline, case);
    common::assert_matches_png(
        "peft after strength changes",
        &rgb,
        (16, 16),
        &fixture().join("renders/peft.png"),
    );
}
