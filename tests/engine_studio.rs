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
