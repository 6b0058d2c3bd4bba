//! The training command writes a loadable diffusers-layout folder and resumes where it stopped.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::ops::ControlFlow;

use latent_studio::core::samplers::{SamplerKind, StepView};
use latent_studio::core::Guidance;
use latent_studio::models::autoencoder::{Autoencoder, AutoencoderConfig};
use latent_studio::models::pipeline::{LoadOptions, Pipeline, Request};
use latent_studio::models::unet::{UNet, UNetConfig};
use latent_studio::training::train::{train, TrainOptions};

fn read<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_short_run_writes_a_loadable_folder_and_resumes() {
    let dir = std::env::temp_dir().join(format!("latent-studio-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = TrainOptions {
        out: dir.clone(),
        resume: false,
        vae_steps: 2,
        vae_learning_rate: 5e-4,
        unet_steps: 2,
        stroke_steps: 0,
        words_steps: 0,
        stroke_learning_rate: 3e-4,
        decoder_steps: 0,
        decoder_learning_rate: 5e-4,
        gan_weight: 0.1,
        batch: 2,
        learning_rate: 1e-3,
        checkpoint_every: 1,
        uncond_share: 0.5,
        half: false,
    };
    let mut reports = 0;
    let state = train(&opts, &mut |_| reports += 1).unwrap();
    assert_eq!((state.vae_step, state.unet_step, reports), (2, 2, 4));
    let scaling = state.scaling_factor.unwrap();
    assert!(scaling.is_finite() && scaling > 0.0);

    let vae_config = AutoencoderConfig::from_json(read(&dir.join("vae/config.json"))).unwrap();
    assert!(matches!(vae_config, AutoencoderConfig::Tiny(_)), "{vae_config:?}");
    assert!((vae_config.scaling_factor() - scaling).abs() <= 1e-12 * scaling);
    let unet_config: UNetConfig = read(&dir.join("unet/config.json"));
    let dev = Device::Cpu;
    let load = |rel: &str| unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join(rel)], DType::F32, &dev).unwrap()
    };
    Autoencoder::new(&vae_config, load("vae/diffusion_pytorch_model.safetensors")).unwrap();
    UNet::new(&unet_config, load("unet/diffusion_pytorch_model.safetensors")).unwrap();

    opts.resume = true;
    opts.unet_steps = 3;
    let state = train(&opts, &mut |_| {}).unwrap();
    assert_eq!((state.vae_step, state.unet_step), (2, 3));
    assert_eq!(state.scaling_factor, Some(scaling), "the latent scale is kept on resume");
    let log = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 5);

    // The stroke stage goes on from the UNet stage's weights and logs under its own name.
    opts.stroke_steps = 2;
    let state = train(&opts, &mut |_| {}).unwrap();
    assert_eq!((state.unet_step, state.stroke_step), (3, 2));
    let log = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    let last: Vec<&str> = log.lines().skip(5).collect();
    assert!(
        last.len() == 2 && last[0].starts_with("strokes,1,") && last[1].starts_with("strokes,2,"),
        "{last:?}"
    );

    // Decoder fine-tuning changes the decoder alone: the encoder, and so the latent space the UNet
    // learnt, stays as it was.
    let vae_file = dir.join("vae/diffusion_pytorch_model.safetensors");
    let before = candle_core::safetensors::load(&vae_file, &dev).unwrap();
    opts.decoder_steps = 2;
    assert_eq!(train(&opts, &mut |_| {}).unwrap().decoder_step, 2);
    let after = candle_core::safetensors::load(&vae_file, &dev).unwrap();
    for (name, old) in &before {
        let moved =
            (old - &after[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let decoder = name.starts_with("decoder.");
        assert_eq!(moved > 0.0, decoder, "{name} moved by {moved}");
    }

    // The f16 export halves the weight files, and a later resume reads them back.
    let unet_file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let f32_bytes = std::fs::metadata(&unet_file).unwrap().len();
    opts.half = true;
    train(&opts, &mut |_| {}).unwrap();
    let f16_bytes = std::fs::metadata(&unet_file).unwrap().len();
    assert!(f16_bytes * 10 < f32_bytes * 6, "{f16_bytes} bytes in f16 vs {f32_bytes} in f32");
    let tensors = candle_core::safetensors::load(&unet_file, &dev).unwrap();
    assert!(tensors.values().all(|t| t.dtype() == DType::F16));
    opts.half = false;
    opts.unet_steps = 4;
    assert_eq!(train(&opts, &mut |_| {}).unwrap().unet_step, 4);

    // The folder renders through the pipeline, reporting unknown words.
    let pipeline = Pipeline::load(&dir, &LoadOptions::default()).unwrap();
    let request = Request {
        prompt: "sunset over zebra mountains".into(),
        negative: String::new(),
        sampler: SamplerKind::Ddim,
        options: Default::default(),
        steps: 3,
        guidance: Guidance { scale: 4.0, ..Guidance::default() },
        seed: 7,
        size: None,
        init_latent: None,
        init_image: None,
        prompt_to: None,
        regions: Vec::new(),
    };
    let mut steps = 0;
    let image = pipeline
        .render(&request, &mut |_: &StepView<'_>| {
            steps += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    assert_eq!((image.width, image.height, image.rgb.len(), steps), (128, 128, 128 * 128 * 3, 3));
    assert_eq!(image.unknown_words, vec!["zebra".to_string()]);

    // A missing weights file is reported with its path.
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let err = Pipeline::load(&dir, &LoadOptions::default()).err().unwrap().to_string();
    assert!(err.contains("unet/diffusion_pytorch_model.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Distillation starts the student as the teacher (the guidance projection at zero): one step at
/// learning rate 0 leaves a folder in diffusers' LCM layout whose UNet, at any guidance, predicts
/// what the teacher's does.
#[test]
fn distillation_writes_an_lcm_folder_whose_untrained_student_is_the_teacher() {
    use latent_studio::models::unet::guidance_embedding;
    use latent_studio::training::distill::{distill, DistillOptions};
    let teacher = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/builtin");
    let dir = std::env::temp_dir().join(format!("latent-studio-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = DistillOptions {
        teacher: teacher.clone(),
        out: dir.clone(),
        resume: false,
        steps: 1,
        batch: 2,
        learning_rate: 0.0,
        checkpoint_every: 1,
        half: false,
        words: true,
    };
    assert_eq!(distill(&opts, &mut |_| {}).unwrap().step, 1);
    let pipeline = Pipeline::load(&dir, &LoadOptions::default()).unwrap();
    assert!(pipeline.guidance_embedded(), "the student takes the guidance scale as an input");
    assert_eq!(pipeline.default_sampler().0, SamplerKind::Lcm);
    let index: serde_json::Value = read(&dir.join("model_index.json"));
    assert_eq!(index["_class_name"], "LatentConsistencyModelPipeline");

    let unet = |folder: &std::path::Path| {
        let config: UNetConfig = read(&folder.join("unet/config.json"));
        let weights = folder.join("unet/diffusion_pytorch_model.safetensors");
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }.unwrap();
        (UNet::new(&config, vb).unwrap(), config)
    };
    let ((student, config), (teacher_unet, _)) = (unet(&dir), unet(&teacher));
    let dim = config.time_cond_proj_dim.expect("a guidance embedding");
    let noise = |seed| {
        latent_studio::core::SeededNoise::new(seed)
            .tensor(
                &[1, config.in_channels, config.sample_size, config.sample_size],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
    };
    let (x, context) = (
        noise(1),
        latent_studio::core::SeededNoise::new(2)
            .tensor(&[1, 16, config.cross_attention_dim], DType::F32, &Device::Cpu)
            .unwrap(),
    );
    let t = candle_core::Tensor::new(&[499f32], &Device::Cpu).unwrap();
    let plain = teacher_unet.forward(&x, &t, &context).unwrap();
    for scale in [1.0, 5.0, 8.0] {
        let w = guidance_embedding(&[scale], dim, &Device::Cpu).unwrap();
        let ours = student.forward_guided(&x, &t, &context, Some(&w)).unwrap();
        let diff = (&ours - &plain).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "guidance {scale}: the untrained student differs from the teacher by {diff}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
