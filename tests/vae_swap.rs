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
    common::on_both_kernels(|| {
        let here = fixtures().join("vae_swap");
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(here.join("cases.json")).unwrap()).unwrap();
        let mut pipeline =
            Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
        pipeline.swap_vae(&here.join("taesd")).unwrap();
        let init = rgb_tensor(&read_png(&here.join("renders/init.png")).unwrap()).unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let latent = common::saved_latent(&here.join(format!("renders/{name}.safetensors")));
            let init_image = case["strength"].as_f64().map(|strength| InitImage {
                image: init.clone(),
                strength,
                mask: None,
            });
            let request = Request { init_image, ..common::case_request(case, SamplerKind::Ddim, latent) };
            let ours = pipeline
                .render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(()))
                .unwrap()
                .unwrap();
            common::assert_matches_png(
                name,
                &ours.rgb,
                (ours.width, ours.height),
                &here.join(format!("renders/{name}.png")),
            );
        }
    });
}

#[test]
fn single_autoencoder_files_render_as_their_folders_do() {
    let _kernels = common::fused_kernels();
    let here = fixtures().join("vae_swap");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(here.join("cases.json")).unwrap()).unwrap();
    let case = &cases["cases"][0];
    let name = case["name"].as_str().unwrap();
    let latent = common::saved_latent(&here.join(format!("renders/{name}.safetensors")));
    let request = common::case_request(case, SamplerKind::Ddim, latent);
    // madebyollin's raw halves (either one named), and diffusers' own weights file of the folder.
    for file in [
        "files/taesd_decoder.safetensors",
        "files/taesd_encoder.safetensors",
        "taesd/diffusion_pytorch_model.safetensors",
    ] {
        let mut pipeline =
            Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
        pipeline.swap_vae(&here.join(file)).unwrap();
        let ours =
            pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap();
        common::assert_matches_png(file, &ours.rgb, (16, 16), &here.join(format!("renders/{name}.png")));
    }
    // A KL VAE file under LDM or diffusers names, on the single-file model it came from: the
    // model's own pictures (diffusers' `from_single_file` renders).
    let single: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("single_file/cases.json")).unwrap())
            .unwrap();
    let case = &single["cases"][0];
    let latent = common::saved_latent(&fixtures().join("single_file/case0.safetensors"));
    let request = Request { size: Some((16, 16)), ..common::case_request(case, SamplerKind::Ddim, latent) };
    for file in ["files/vae_ldm.safetensors", "files/vae_diffusers.safetensors"] {
        let model = fixtures().join("single_file/tiny_sd1.safetensors");
        let mut pipeline = Pipeline::load(&model, &LoadOptions::default()).unwrap();
        pipeline.swap_vae(&here.join(file)).unwrap();
        let ours =
            pipeline.render(&request, &mut |_: &StepView<'_>| ControlFlow::Continue(())).unwrap().unwrap();
        common::assert_matches_png(file, &ours.rgb, (16, 16), &fixtures().join("single_file/case0.png"));
    }
}

#[test]
fn an_autoencoder_for_other_latents_a_lonely_taesd_half_or_a_pickle_is_refused_naming_it() {
    let _kernels = common::fused_kernels();
    let mut pipeline = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
    // The built-in model's autoencoder has 8 latent channels and scales 8x; the tiny UNet takes 4.
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/builtin");
    let err = pipeline.swap_vae(&builtin).unwrap_err().to_string();
    assert!(err.contains("vae/config.json") && err.contains("8 latent channels"), "{err}");
    let builtin_file = builtin.join("vae/diffusion_pytorch_model.safetensors");
    let err = pipeline.swap_vae(&builtin_file).unwrap_err().to_string();
    assert!(
        err.contains("diffusion_pytorch_model.safetensors") && err.contains("8 latent channels"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("latent-studio-vae-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lonely = dir.join("taesd_decoder.safetensors");
    std::fs::copy(fixtures().join("vae_swap/files/taesd_decoder.safetensors"), &lonely).unwrap();
    let err = pipeline.swap_vae(&lonely).unwrap_err().to_string();
    assert!(err.contains("taesd_decoder.safetensors") && err.contains("needs its encoder"), "{err}");
    let pickle = dir.join("taesd_decoder.pth");
    std::fs::write(&pickle, b"not read").unwrap();
    let err = pipeline.swap_vae(&pickle).unwrap_err().to_string();
    assert!(
        err.contains("taesd_decoder.pth") && err.contains("pickles") && err.contains("save_file"),
        "{err}"
    );
    let unet = fixtures().join("tiny_sd/model/unet/diffusion_pytorch_model.safetensors");
    let err = pipeline.swap_vae(&unet).unwrap_err().to_string();
    assert!(err.contains("not an autoencoder file"), "{err}");
    let err = pipeline.swap_vae(&dir.join("missing")).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("no such file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    // The model still renders with its own autoencoder after the refusals.
    assert_eq!(pipeline.latent_channels(), 4);
}

#[test]
fn step_previews_decode_through_a_taesd_and_a_kl_one_is_refused_for_them() {
    let _kernels = common::fused_kernels();
    let here = fixtures().join("vae_swap");
    let mut pipeline = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
    let latent = common::saved_latent(&here.join("renders/taesd_txt2img.safetensors"));
    assert!(pipeline.decode_preview(&latent).unwrap().is_none(), "no preview decoder yet");
    pipeline.set_preview_decoder(Some(&here.join("files/taesd_decoder.safetensors"))).unwrap();
    assert!(pipeline.decodes_previews());
    let preview = pipeline.decode_preview(&latent).unwrap().unwrap();
    assert_eq!(preview.dims(), &[1, 3, 16, 16]);
    // The same picture the TAESD makes as the model's autoencoder (whose pixels match diffusers').
    let own = pipeline.decode(&latent).unwrap();
    let mut swapped = Pipeline::load(&fixtures().join("tiny_sd/model"), &LoadOptions::default()).unwrap();
    swapped.swap_vae(&here.join("taesd")).unwrap();
    let through_taesd = swapped.decode(&latent).unwrap();
    let preview: Vec<u8> = (preview.squeeze(0).unwrap().permute((1, 2, 0)).unwrap() * 255.0)
        .unwrap()
        .round()
        .unwrap()
        .to_dtype(candle_core::DType::U8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(preview, through_taesd);
    assert_ne!(own, through_taesd, "the model's own VAE still makes the pictures");
    let kl = fixtures().join("vae_swap/files/vae_ldm.safetensors");
    let err = pipeline.set_preview_decoder(Some(&kl)).unwrap_err().to_string();
    assert!(err.contains("vae_ldm.safetensors") && err.contains("TAESD"), "{err}");
    pipeline.set_preview_decoder(None).unwrap();
    assert!(!pipeline.decodes_previews());
}
