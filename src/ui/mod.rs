//! egui widgets of the studio: the node graph, the SDEdit canvas, the properties panel. Only
//! `ui` and `app` know about egui.

pub mod canvas_view;
pub mod graph_view;
pub mod preview_gpu;
pub mod properties;
