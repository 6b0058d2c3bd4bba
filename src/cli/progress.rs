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
        let width = 30;
        let filled = width * done / total.max(1);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{total} ETA {:.0}s   ",
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            eta
        );
        if finished {
            let _ = writeln!(err);
        }
    }
}
