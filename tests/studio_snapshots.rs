//! Snapshot tests of each node's properties panel, the canvas and the node graph, rendered with
//! wgpu (Mesa's lavapipe in CI). `UPDATE_SNAPSHOTS=1 cargo test --test studio_snapshots` rewrites
//! them after an intended change; look at the PNGs in `tests/snapshots/` before committing.

use std::collections::HashMap;

use egui_kittest::Harness;

use latent_studio::background::Worker;
use latent_studio::graph::{Graph, Node};
use latent_studio::sketch::Canvas;
use latent_studio::ui::canvas_view::CanvasView;
use latent_studio::ui::graph_view::{graph_ui, to_snarl, Viewer};
use latent_studio::ui::properties::properties_ui;

#[test]
fn each_node_kind_has_its_properties_panel() {
    let mut results = egui_kittest::SnapshotResults::new();
    for node in Node::all_kinds() {
        if matches!(node, Node::Canvas(_)) {
            continue;
        }
        let name = format!("properties_{}", node.title().to_lowercase().replace(' ', "_"));
        // What the last render found: an unknown prompt word, a LoRA layer the model lacks.
        let note = match node {
            Node::Lora(_) => "2 layers not in this model: lora_unet_label_emb_0_0, lora_te2_proj",
            _ => "dragon",
        };
        let mut h = Harness::builder().with_size(egui::vec2(380.0, 260.0)).build_ui_state(
            move |ui, node: &mut Node| {
                let _ = properties_ui(ui, node, &[note.into()]);
            },
            node,
        );
        h.run();
        h.snapshot(&name);
        results.extend_harness(&mut h);
    }
    results.unwrap();
}

#[test]
fn the_canvas_panel() {
    let mut h = Harness::builder().with_size(egui::vec2(380.0, 480.0)).build_ui_state(
        |ui, (view, canvas): &mut (CanvasView, Canvas)| {
            let _ = view.ui(ui, canvas, None, 340.0);
        },
        (CanvasView::new(Worker::new()), Canvas::default()),
    );
    // The strokes are rasterised on the background worker; the snapshot shows the finished picture.
    let start = std::time::Instant::now();
    while !h.state().0.is_drawn() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the canvas was never drawn");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.run();
    h.snapshot("canvas");
}

#[test]
fn the_first_start_graph() {
    let notes = HashMap::new();
    let thumbnails = HashMap::new();
    let mut snarl = to_snarl(&Graph::first_start());
    let mut h = Harness::builder().with_size(egui::vec2(960.0, 640.0)).build_ui(move |ui| {
        // Framed as the studio frames a new graph.
        let fit_into = Some(ui.available_rect_before_wrap());
        let mut viewer = Viewer {
            notes: &notes,
            thumbnails: &thumbnails,
            selected: None,
            fit_into,
            out: Default::default(),
        };
        graph_ui(ui, &mut snarl, &mut viewer);
    });
    h.run();
    // egui-snarl draws wires and node frames in an order that varies from run to run, so where
    // the canvas's two wires cross, and along the Prompt node's top edge where the model's wire
    // meets it, up to about 200 pixels differ faintly; a moved or resized node changes thousands.
    let options = egui_kittest::SnapshotOptions::new().max_failed_pixels(250);
    h.snapshot_options("graph_first_start", &options);
}
