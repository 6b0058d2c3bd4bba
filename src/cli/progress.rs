//! A progress bar with ETA on stderr, drawn only for work that takes over a second.

use std::cell::Cell;
use std::io::Write;
use std::time::Instant;

/// A progress bar on stderr.
pub struct Bar {
    label: &'static str,
    start: Instant,
    last_draw: Cell<Option<Instant>>,
}

impl Bar {
    /// A bar for `label`, started now.
    pub fn new(label: &'static str) -> Self {
        Self { label, start: Instant::now(), last_draw: Cell::new(None) }
    }

    /// Reports `done` of `total`; redraws at most ten times a second, after the first second.
    pub fn update(&self, done: usize, total: usize) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let finished = done >= total;
        if elapsed < 1.0 && self.last_draw.get().is_none() {
            return;
        }
        if !finished && self.last_draw.get().is_some_and(|t| t.elapsed().as_secs_f64() < 0.1) {
            return;
        }
        self.last_draw.set(Some(Instant::now()));
        let eta = if done == 0 { 0.0 } else { elapsed / done as f64 * (total - done) as f64 };
        draw(self.label, done, total, "", eta);
    }
}

/// Draws one bar line: `label [####----] done/total extra ETA h:mm:ss`, ending the line when done.
pub fn draw(label: &str, done: usize, total: usize, extra: &str, eta_secs: f64) {
    let width = 30;
    let filled = width * done.min(total) / total.max(1);
    let eta = eta_secs.max(0.0) as u64;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{label} [{}{}] {done}/{total} {extra}ETA {}:{:02}:{:02}   ",
        "#".repeat(filled),
        "-".repeat(width - filled),
        eta / 3600,
        eta / 60 % 60,
        eta % 60
    );
    if done >= total {
        let _ = writeln!(err);
    }
}
