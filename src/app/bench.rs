//! The UI benchmark: the studio's per-frame code timed headlessly (no window, no GPU) while the
//! engine renders continuously, as `latent-studio bench` reports it.

use std::time::{Duration, Instant};

use super::{Options, StudioApp};
use crate::graph::Node;

/// Frame timings, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameTimes {
    /// CPU time of each frame's app code (layout, events, planning, tessellation).
    pub frame_ms: Vec<f64>,
    /// Time between the starts of consecutive frames, asked for every 16 ms.
    pub interval_ms: Vec<f64>,
    /// Renders finished meanwhile.
    pub renders: usize,
    /// The process's resident memory at the end, with the studio and its model still loaded
    /// (megabytes; `None` where /proc/self/status is missing).
    pub resident_mb: Option<f64>,
}

/// This process's resident set size in megabytes (`VmRSS` in /proc/self/status).
pub fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The `q` quantile (0..=1) of `values`.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs the studio for `duration` at a 16 ms frame pace, changing the guidance every 1.5 s so
/// the engine renders all the while (each change cancels the running render and starts anew).
pub fn frame_times(duration: Duration, data_dir: std::path::PathBuf) -> FrameTimes {
    let ctx = egui::Context::default();
    let mut app = StudioApp::new(Options { data_dir, ..Options::default() });
    let mut out = FrameTimes { frame_ms: vec![], interval_ms: vec![], renders: 0, resident_mb: None };
    let start = Instant::now();
    let mut last = Instant::now();
    let mut frame = 0u64;
    while start.elapsed() < duration {
        let begin = Instant::now();
        if frame > 0 {
            out.interval_ms.push((begin - last).as_secs_f64() * 1e3);
        }
        last = begin;
        frame += 1;
        let guidance = 4.0 + (frame / 90 % 40) as f64 * 0.05;
        app.edit_node_where(
            |n| matches!(n, Node::Sampler(_)),
            |n| {
                if let Node::Sampler(s) = n {
                    s.guidance = guidance;
                }
            },
        );
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1400.0, 860.0))),
            time: Some(start.elapsed().as_secs_f64()),
            ..Default::default()
        };
        let output = ctx.run_ui(input, |ui| app.ui(ui));
        let _ = ctx.tessellate(output.shapes, output.pixels_per_point);
        out.frame_ms.push(begin.elapsed().as_secs_f64() * 1e3);
        let next = begin + Duration::from_millis(16);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    out.renders = app.made.len();
    out.resident_mb = resident_mb();
    out
}
