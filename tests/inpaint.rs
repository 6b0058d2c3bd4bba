//! Inpainting and img2img against diffusers' own renders (`tests/fixtures/inpaint/make_fixture.py`):
//! a tiny inpainting UNet (9 input channels) through `StableDiffusionInpaintPipeline` at full
//! strength from a given latent (DDIM, Euler) and at 0.6 from given noise, with a mask whose edge
//! cuts through latent cells; masked SDEdit on the ordinary tiny model (the known part blended
//! back); and img2img whose given latent is the noise added to the encoded picture.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::edit_mask::{CellRule, EditMask};
use latent_studio::engine::spec::rgb_tensor;
use latent_studio::imageio::read_png;
use latent_studio::models::pipeline::{InitImage, LoadOptions, Pipeline, Request};
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inpaint")
}

fn mask(name: &str) -> EditMask {
    let png = read_png(&fixture().join("renders").join(name)).unwrap();
    let coverage: Vec<f32> = png.data.chunks_exact(3).map(|p| f32::from(p[0]) / 255.0).collect();
    EditMask::new(&coverage, png.width, png.height, 2, 0.0, CellRule::Majority).unwrap()
}

fn render(pipeline: &Pipeline, request: &Request) -> (Vec<u8>, Vec<String>) {
    let r = pipeline.render(request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap();
    (r.rgb, r.notes)
}

#[test]
fn inpainting_masked_sdedit_and_img2img_match_diffusers_pixels() {
    common::on_both_kernels(|| {
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap();
        let inpainting = Pipeline::load(&fixture().join("model"), &LoadOptions::default()).unwrap();
        let ordinary = Pipeline::load(&fixture().join("../tiny_sd/model"), &LoadOptions::default()).unwrap();
        assert!(inpainting.inpainting() && !ordinary.inpainting());
        assert_eq!(inpainting.latent_channels(), 4);
        let init = rgb_tensor(&read_png(&fixture().join("renders/init.png")).unwrap()).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let pipeline = if case["model"] == "model" { &inpainting } else { &ordinary };
            let latent = common::saved_latent(&fixture().join(format!("renders/{name}.safetensors")));
            let sampler = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
            let init_image = InitImage {
                image: init.clone(),
                strength: case["strength"].as_f64().unwrap(),
                mask: case["mask"].as_str().map(mask),
            };
            let request =
                Request { init_image: Some(init_image), ..common::case_request(case, sampler, latent) };
            let (rgb, notes) = render(pipeline, &request);
            assert!(notes.is_empty(), "{name}: {notes:?}");
            common::assert_matches_png(name, &rgb, (16, 16), &fixture().join(format!("renders/{name}.png")));
        }
    });
}

#[test]
fn an_inpainting_model_without_a_mask_repaints_everything_with_a_note_and_cannot_invert() {
    let _kernels = common::fused_kernels();
    let pipeline = Pipeline::load(&fixture().join("model"), &LoadOptions::default()).unwrap();
    let init = rgb_tensor(&read_png(&fixture().join("renders/init.png")).unwrap()).unwrap();
    let latent = common::saved_latent(&fixture().join("renders/inpaint_full.safetensors"));
    let case = serde_json::json!({"prompt": "a lake", "steps": 4, "guidance": 3.0});
    let base = common::case_request(&case, SamplerKind::Ddim, latent);
    let unmasked = Request {
        init_image: Some(InitImage { image: init.clone(), strength: 1.0, mask: None }),
        ..base.clone()
    };
    let (unmasked_rgb, notes) = render(&pipeline, &unmasked);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("whole picture"), "{notes:?}");
    // A mask of every pixel is the same render.
    let everything = EditMask::new(&[1.0; 256], 16, 16, 2, 0.0, CellRule::Majority).unwrap();
    let full = Request {
        init_image: Some(InitImage { image: init.clone(), strength: 1.0, mask: Some(everything) }),
        ..base.clone()
    };
    assert_eq!(render(&pipeline, &full).0, unmasked_rgb);
    // Text to image: a blank picture, all of it repainted, no note.
    let (_, notes) = render(&pipeline, &base);
    assert!(notes.is_empty());
    let latent = pipeline.encode_image(&init).unwrap();
    let err = pipeline
        .invert(&latent, "a lake", Default::default(), 4, &mut |_: &StepView<'_>| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("inversion needs an ordinary model"), "{err}");
}
