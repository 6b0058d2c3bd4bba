//! Paint with words on the tiny SD fixture against diffusers with eDiff-I's rule in an attention
//! processor (`tests/fixtures/regions/make_fixture.py`): a phrase of the prompt on half the
//! picture, and a new (appended) phrase overlapping another region. Bad regions are notes, not
//! failures.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::engine::spec::{region, RegionMask, RegionSpec};
use latent_studio::models::pipeline::{LoadOptions, Pipeline, Rendered, Request};
use latent_studio::models::regions::Region;
use serde_json::Value;

mod common;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regions")
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("cases.json")).unwrap()).unwrap()
}

fn tiny_sd() -> Pipeline {
    Pipeline::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sd/model"),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn regions(case: &Value) -> Vec<Region> {
    case["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let file = fixture().join(format!("mask_{}.png", r["mask"].as_str().unwrap()));
            let spec = RegionSpec {
                mask: RegionMask::File(file),
                phrase: r["phrase"].as_str().unwrap().into(),
                weight: r["weight"].as_f64().unwrap(),
            };
            region(&spec, 16, 16).unwrap()
        })
        .collect()
}

fn render(pipeline: &Pipeline, request: &Request) -> Rendered {
    pipeline.render(request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap()
}

fn case_request(case: &Value) -> Request {
    let name = case["name"].as_str().unwrap();
    let latent = common::saved_latent(&fixture().join(format!("renders/{name}.safetensors")));
    Request { regions: regions(case), ..common::case_request(case, SamplerKind::Ddim, latent) }
}

#[test]
fn region_renders_match_diffusers_with_the_ediff_i_rule() {
    common::on_both_kernels(|| {
        let cases = cases();
        let pipeline = tiny_sd();
        let mut rendered = Vec::new();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let image = render(&pipeline, &case_request(case));
            assert!(image.notes.is_empty(), "{name}: {:?}", image.notes);
            common::assert_matches_png(
                name,
                &image.rgb,
                (16, 16),
                &fixture().join(format!("renders/{name}.png")),
            );
            rendered.push(image.rgb);
        }
        // The regions move the picture well past rounding: the test would see a missing bias.
        for moved in &rendered[1..] {
            let diff = moved
                .iter()
                .zip(&rendered[0])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .sum::<f64>()
                / moved.len() as f64;
            assert!(diff > 2.0, "the regions changed the picture by only {diff} levels on average");
        }
    });
}

#[test]
fn empty_regions_and_phrases_are_ignored_with_a_note_and_cut_phrases_are_reported() {
    let _kernels = common::fused_kernels();
    let cases = cases();
    let none = &cases["cases"][0];
    let pipeline = tiny_sd();
    let plain = render(&pipeline, &case_request(none));
    let full = vec![1.0; 16 * 16];
    let region = |coverage: Vec<f32>, phrase: &str| Region {
        width: 16,
        height: 16,
        coverage,
        phrase: phrase.into(),
        weight: 5.0,
    };
    let mut request = case_request(none);
    request.regions = vec![region(vec![0.0; 256], "a lake"), region(full.clone(), "  ")];
    let ignored = render(&pipeline, &request);
    assert_eq!(ignored.rgb, plain.rgb, "ignored regions change nothing");
    assert_eq!(ignored.notes.len(), 2, "{:?}", ignored.notes);
    assert!(
        ignored.notes[0].contains("region 1") && ignored.notes[0].contains("ignored"),
        "{:?}",
        ignored.notes
    );
    assert!(
        ignored.notes[1].contains("region 2") && ignored.notes[1].contains("no phrase"),
        "{:?}",
        ignored.notes
    );
    // A phrase past the encoder's 75 tokens of text is cut, and says so.
    request.regions = vec![region(full, &"lake ".repeat(100))];
    let cut = render(&pipeline, &request);
    assert!(cut.notes.iter().any(|n| n.contains("cut to") && n.contains("75")), "{:?}", cut.notes);
}

#[test]
fn a_mask_of_another_size_is_resampled() {
    let _kernels = common::fused_kernels();
    // The fixture's left-half mask at 4x4 (each cell a 4x4 block of the 16x16 one) renders as
    // the 16x16 one does: both average to the same cells.
    let cases = cases();
    let case = &cases["cases"][1];
    let pipeline = tiny_sd();
    let mut request = case_request(case);
    let full = render(&pipeline, &request);
    let small: Vec<f32> = (0..16).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect();
    request.regions[0] = Region { width: 4, height: 4, coverage: small, ..request.regions[0].clone() };
    assert_eq!(render(&pipeline, &request).rgb, full.rgb);
}
