//! The properties panel: every setting of the selected node, with tooltips and accessible labels.

use egui::Ui;

use crate::core::presets::Preset;
use crate::core::SamplerKind;
use crate::graph::node::{ModelSource, Sigmas, Spacing};
use crate::graph::Node;

/// What the panel asks the app to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PropertiesOutput {
    /// A control is being dragged (renders are "latest wins while dragging").
    pub dragging: bool,
    /// Open a native dialog to choose a model folder (true) or file (false).
    pub choose_model: Option<bool>,
    /// Open a native dialog to choose a picture.
    pub choose_image: bool,
    /// Open a native dialog to choose a LoRA file.
    pub choose_lora: bool,
    /// Open a native dialog to choose an autoencoder folder (true) or file (false).
    pub choose_vae: Option<bool>,
    /// Apply a few-step model's preset to the Sampler node and its schedule.
    pub preset: Option<Preset>,
}

/// Shows the settings of `node`. `notes` lists what the last render found: prompt words the
/// model does not know (Prompt), layers that matched nothing (LoRA).
pub fn properties_ui(ui: &mut Ui, node: &mut Node, notes: &[String]) -> PropertiesOutput {
    let mut out = PropertiesOutput::default();
    let mut track = |r: egui::Response| {
        out.dragging |= r.dragged();
        r
    };
    match node {
        Node::Model(m) => {
            ui.label(format!("Model: {}", m.source.name()));
            ui.horizontal(|ui| {
                if ui.button("Built-in").on_hover_text("The model that ships with the studio").clicked() {
                    m.source = ModelSource::Builtin;
                }
                if ui
                    .button("Built-in live")
                    .on_hover_text("The built-in model's few-step student, for painting live")
                    .clicked()
                {
                    m.source = ModelSource::BuiltinLive;
                }
                if ui.button("Folder…").on_hover_text("A diffusers model folder").clicked() {
                    out.choose_model = Some(true);
                }
                if ui.button("File…").on_hover_text("A single .safetensors checkpoint").clicked() {
                    out.choose_model = Some(false);
                }
            });
            let vae = m.vae.as_ref().map_or("the model's own".into(), |p| p.display().to_string());
            ui.label(format!("VAE: {vae}"));
            ui.horizontal(|ui| {
                if ui
                    .button("VAE file…")
                    .on_hover_text(
                        "TAESD halves (taesd_decoder.safetensors), an AutoencoderKL or LDM VAE file",
                    )
                    .clicked()
                {
                    out.choose_vae = Some(false);
                }
                if ui
                    .button("VAE folder…")
                    .on_hover_text("A diffusers AutoencoderKL or AutoencoderTiny folder")
                    .clicked()
                {
                    out.choose_vae = Some(true);
                }
                if m.vae.is_some()
                    && ui.button("Own VAE").on_hover_text("Back to the model's autoencoder").clicked()
                {
                    m.vae = None;
                }
            });
            if m.vae.is_some() {
                ui.checkbox(&mut m.vae_finals, "Also for the pictures").on_hover_text(
                    "On: it encodes and decodes the pictures (a TAESD also draws the step previews). \
                     Off: only the step previews (needs a TAESD); the model's own VAE makes the pictures",
                );
            }
        }
        Node::Prompt(p) => {
            ui.label("Prompt");
            ui.add(egui::TextEdit::multiline(&mut p.prompt).desired_rows(3).hint_text("what to draw"))
                .on_hover_text("What to draw");
            ui.label("Negative prompt");
            ui.add(egui::TextEdit::multiline(&mut p.negative).desired_rows(2).hint_text("what to avoid"))
                .on_hover_text("What to steer away from (empty = unconditional)");
            if !notes.is_empty() {
                ui.colored_label(
                    egui::Color32::from_rgb(240, 170, 90),
                    format!("Words the model does not know: {}", notes.join(", ")),
                );
            }
        }
        Node::Lora(l) => {
            let name = l.path.as_ref().map_or("no LoRA file".into(), |p| p.display().to_string());
            ui.label(name);
            if ui
                .button("Open…")
                .on_hover_text("Choose a LoRA .safetensors file (kohya-ss or diffusers/PEFT)")
                .clicked()
            {
                out.choose_lora = true;
            }
            track(ui.add(egui::Slider::new(&mut l.strength, -2.0..=2.0).text("Strength"))).on_hover_text(
                "1 as trained, 0 off, negative steers away; a new strength re-renders without reloading the model",
            );
            for note in notes {
                ui.colored_label(egui::Color32::from_rgb(240, 170, 90), note);
            }
        }
        Node::Schedule(s) => {
            track(ui.add(egui::Slider::new(&mut s.steps, 1..=100).text("Steps")))
                .on_hover_text("Network evaluations: more is slower and finer");
            track(ui.add(egui::Slider::new(&mut s.eta, 0.0..=1.0).text("Eta")))
                .on_hover_text("DDIM's eta: 0 is deterministic, 1 adds as much noise as DDPM");
            egui::ComboBox::from_label("Spacing").selected_text(format!("{:?}", s.spacing)).show_ui(
                ui,
                |ui| {
                    for v in [Spacing::Model, Spacing::Leading, Spacing::Trailing, Spacing::Linspace] {
                        ui.selectable_value(&mut s.spacing, v, format!("{v:?}"));
                    }
                },
            );
            egui::ComboBox::from_label("Sigmas").selected_text(format!("{:?}", s.sigmas)).show_ui(ui, |ui| {
                for v in [Sigmas::Model, Sigmas::Karras] {
                    ui.selectable_value(&mut s.sigmas, v, format!("{v:?}"));
                }
            });
        }
        Node::Sampler(s) => {
            egui::ComboBox::from_label("Algorithm").selected_text(s.algorithm.a1111_name()).show_ui(
                ui,
                |ui| {
                    for kind in SamplerKind::ALL {
                        ui.selectable_value(&mut s.algorithm, kind, kind.a1111_name());
                    }
                },
            );
            ui.horizontal(|ui| {
                ui.label("Preset");
                for preset in Preset::ALL {
                    if ui.button(preset.name()).on_hover_text(preset.describe()).clicked() {
                        out.preset = Some(preset);
                    }
                }
            });
            track(ui.add(egui::Slider::new(&mut s.guidance, 0.0..=15.0).text("Guidance")))
                .on_hover_text("Classifier-free guidance: uncond + s · (cond − uncond)");
            track(ui.add(egui::Slider::new(&mut s.rescale, 0.0..=1.0).text("Rescale")))
                .on_hover_text("Guidance rescale phi: counters over-exposure at high guidance");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut s.seed)).on_hover_text("Seed of the starting noise");
                ui.label("Seed");
                if ui.button("🎲").on_hover_text("A new random seed").clicked() {
                    s.seed = random_seed();
                }
            });
        }
        Node::Image(i) => {
            let name = i.path.as_ref().map_or("no picture".into(), |p| p.display().to_string());
            ui.label(name);
            if ui.button("Open…").on_hover_text("Choose a PNG, JPEG, BMP or WebP picture").clicked() {
                out.choose_image = true;
            }
            track(ui.add(egui::Slider::new(&mut i.strength, 0.05..=1.0).text("Strength")))
                .on_hover_text("SDEdit strength when this picture feeds a sampler");
        }
        Node::Invert(i) => {
            track(ui.add(egui::Slider::new(&mut i.steps, 1..=100).text("Steps")))
                .on_hover_text("Inversion steps (use the sampler's for an exact round trip)");
            track(ui.add(egui::Slider::new(&mut i.guidance, 0.0..=10.0).text("Guidance")))
                .on_hover_text("1 inverts most faithfully");
        }
        Node::Interpolate(i) => {
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut i.seed_a))
                    .on_hover_text("Seed of endpoint A (when A is not wired)");
                ui.label("Seed A");
                ui.add(egui::DragValue::new(&mut i.seed_b))
                    .on_hover_text("Seed of endpoint B (when B is not wired)");
                ui.label("Seed B");
            });
            ui.label("Prompt B");
            ui.text_edit_singleline(&mut i.prompt_b)
                .on_hover_text("Blend the prompt toward this along the path");
            track(ui.add(egui::Slider::new(&mut i.frames, 2..=32).text("Frames")))
                .on_hover_text("Frames in the filmstrip");
            track(ui.add(egui::Slider::new(&mut i.position, 0.0..=1.0).text("Position")))
                .on_hover_text("Scrub along the path: the nearest cached frame shows at once");
        }
        Node::Canvas(_) | Node::Output(_) => {}
    }
    out
}

/// A seed from the clock and a counter (no randomness crate needed for a dice button).
pub fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x ^ (x >> 33)) % 1_000_000_000
}
