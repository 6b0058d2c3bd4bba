//! The studio backend on the engine thread, with the tiny diffusers fixture: a model loads with
//! its preview map, renders stream a preview latent per step, and a render without a model is a
//! readable failure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use latent_studio::core::samplers::SamplerKind;
use latent_studio::core::Guidance;
use latent_studio::engine::studio::{StudioBackend, StudioJob, Task};
use latent_studio::engine::{Engine, EventKind, Finished, OutputKey, Urgency};
use latent_studio::models::pipeline::{LoadOptions, Request};

fn next_terminal(engine: &Engine<StudioJob>, previews: &mut Vec<(usize, Vec<usize>)>) -> EventKind {
    loop {
        let e = engine.events().recv_timeout(Duration::from_secs(60)).expect("engine stalled");
        match e.kind {
            EventKind::Progress { step, preview, .. } => {
                previews.push((step, preview.map(|p| p.dims().to_vec()).unwrap_or_default()))
            }
            EventKind::Started => {}
            other => return other,
        }
    }
}

fn render(prompt: &str) -> StudioJob {
    StudioJob {
        output: OutputKey("output".into()),
        task: Task::Render(Box::new(Request {
            prompt: prompt.into(),
            negative: String::new(),
            sampler: SamplerKind::Ddim,
            options: Default::default(),
            steps: 4,
            guidance: Guidance { scale: 5.0, ..Guidance::none() },
            seed: 3,
            size: None,
            init_latent: None,
            init_image: None,
            prompt_to: None,
            regions: Vec::new(),
        })),
    }
}

#[test]
fn load_then_render_with_previews_every_step() {
    let engine = Engine::spawn(StudioBackend::default(), Arc::new(|| {})).unwrap();
    engine.submit(render("a cat"), Urgency::Discrete);
    let mut previews = Vec::new();
    let EventKind::Failed { error } = next_terminal(&engine, &mut previews) else {
        panic!("rendered without a model")
    };
    assert!(error.contains("no model"), "{error}");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_sd/model");
    let load = StudioJob {
        output: OutputKey("model".into()),
        task: Task::LoadModel { path, options: LoadOptions::default() },
    };
    engine.submit(load, Urgency::Discrete);
    let EventKind::Done { result: Finished::ModelLoaded { name, preview }, .. } =
        next_terminal(&engine, &mut previews)
    else {
        panic!("the model did not load")
    };
    assert_eq!((name.as_str(), preview.weights.len()), ("model", 4));

    engine.submit(render("a cat"), Urgency::Discrete);
    let EventKind::Done { result: Finished::Image { rgb, width, height, .. }, .. } =
        next_terminal(&engine, &mut previews)
    else {
        panic!("the render failed")
    };
    assert_eq!((width, height, rgb.len()), (16, 16, 16 * 16 * 3));
    assert_eq!(previews, (1..=4).map(|s| (s, vec![1, 4, 8, 8])).collect::<Vec<_>>());
}

/// Live mode's stream: a stroke growing by a point per job, submitted as drag-urgency SDEdit
/// specs on an LCM model. Frames arrive in the order the stroke grew (never an older stroke after
/// a newer one), and the last frame is the whole stroke's.
#[test]
fn live_frames_of_a_growing_stroke_arrive_in_painting_order_and_end_with_the_whole_stroke() {
    use latent_studio::engine::spec::{ImageSpec, InitSpec, ModelSource, NoiseSpec, RenderSpec};
    use latent_studio::sketch::Canvas;
    let engine = Engine::spawn(StudioBackend::default(), Arc::new(|| {})).unwrap();
    let model =
        ModelSource::Path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_lcm/model"));
    let canvas = Canvas::default();
    let mut stroke = canvas.brush.clone();
    let mut ids = Vec::new();
    for i in 0..40 {
        stroke.points.push([0.1 + 0.02 * i as f32, 0.5, 1.0]);
        let mut painted = canvas.clone();
        painted.push(stroke.clone());
        let spec = RenderSpec {
            model: model.clone(),
            loras: Vec::new(),
            vae: None,
            prompt: "a lake".into(),
            negative: String::new(),
            prompt_to: None,
            regions: Vec::new(),
            sampler: SamplerKind::Lcm,
            steps: Some(1),
            spacing: None,
            karras: None,
            eta: 0.0,
            guidance: 4.0,
            rescale: 0.0,
            noise: NoiseSpec::Seed(5),
            init: Some(InitSpec {
                image: ImageSpec::Canvas { canvas: painted, base: None },
                strength: 0.5,
                mask: None,
            }),
        };
        let job = StudioJob { output: OutputKey("output".into()), task: Task::Spec(Box::new(spec)) };
        ids.push(engine.submit(job, Urgency::Drag));
        std::thread::sleep(Duration::from_millis(2));
    }
    let last = *ids.last().unwrap();
    let mut done = Vec::new();
    loop {
        let e = engine.events().recv_timeout(Duration::from_secs(60)).expect("engine stalled");
        match e.kind {
            EventKind::Done { result: Finished::Image { .. }, .. } => done.push(e.job),
            EventKind::Failed { error } => panic!("a live frame failed: {error}"),
            _ => {}
        }
        if done.last() == Some(&last) {
            break;
        }
    }
    assert!(done.windows(2).all(|w| w[0] < w[1]), "frames out of painting order: {done:?}");
    assert!(done.len() >= 2, "only {} frame(s) of a 40-point stroke", done.len());
}

#[test]
fn a_taesd_for_previews_streams_pictures_and_leaves_the_models_own_vae_for_the_picture() {
    use latent_studio::engine::spec::{ModelSource, NoiseSpec, RenderSpec, VaeSpec};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let engine = Engine::spawn(StudioBackend::default(), Arc::new(|| {})).unwrap();
    let spec = |vae: Option<VaeSpec>| RenderSpec {
        model: ModelSource::Path(fixtures.join("tiny_sd/model")),
        loras: Vec::new(),
        vae,
        prompt: "a lake".into(),
        negative: String::new(),
        prompt_to: None,
        regions: Vec::new(),
        sampler: SamplerKind::Ddim,
        steps: Some(3),
        spacing: None,
        karras: None,
        eta: 0.0,
        guidance: 5.0,
        rescale: 0.0,
        noise: NoiseSpec::Seed(4),
        init: None,
    };
    let mut pictures = Vec::new();
    for vae in [
        None,
        Some(VaeSpec { path: fixtures.join("vae_swap/files/taesd_decoder.safetensors"), finals: false }),
    ] {
        let job = StudioJob { output: OutputKey("output".into()), task: Task::Spec(Box::new(spec(vae))) };
        engine.submit(job, Urgency::Discrete);
        let mut previews = Vec::new();
        let EventKind::Done { result: Finished::Image { rgb, .. }, .. } =
            next_terminal(&engine, &mut previews)
        else {
            panic!("the render failed")
        };
        pictures.push((rgb, previews));
    }
    // The model's linear map reads latents; the TAESD's previews are pictures.
    assert_eq!(pictures[0].1, (1..=3).map(|s| (s, vec![1, 4, 8, 8])).collect::<Vec<_>>());
    assert_eq!(pictures[1].1, (1..=3).map(|s| (s, vec![1, 3, 16, 16])).collect::<Vec<_>>());
    assert_eq!(pictures[0].0, pictures[1].0, "the model's own VAE still makes the picture");
}
