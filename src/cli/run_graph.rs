//! `latent-studio run GRAPH.json -o OUT.png`: evaluates a saved graph with the studio's
//! evaluator and backend, without a window.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::engine::spec::raster;
use crate::engine::studio::{StudioBackend, StudioJob, Task};
use crate::engine::{Backend, Finished, OutputKey};
use crate::graph::eval::{plans, Shown};
use crate::graph::Graph;
use crate::imageio::{write_png_texts, Rgb};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A graph saved by the studio (JSON).
    pub graph: PathBuf,
    /// Where to write the first Output node's picture (PNG, with the graph embedded).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs it.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let graph = Graph::load(&args.graph)?;
    let Some((_, plan)) = plans(&graph).into_iter().next() else {
        bail!("{}: the graph has no Output node", args.graph.display())
    };
    let plan = plan.with_context(|| format!("evaluating {}", args.graph.display()))?;
    let (image, parameters) = match plan.shown {
        Shown::Picture(spec) => (raster(&spec, 256, 256)?, String::new()),
        Shown::Render(spec) => {
            let mut backend = StudioBackend::default();
            let job = StudioJob { output: OutputKey("run".into()), task: Task::Spec(spec) };
            let bar = super::progress::Bar::new("render");
            let mut step = |i: usize, n: usize, _: Option<&candle_core::Tensor>| {
                bar.update(i, n);
                ControlFlow::Continue(())
            };
            match backend.run(&job, &mut step) {
                Ok(Some(Finished::Image { rgb, width, height, parameters, .. })) => {
                    (Rgb { width, height, data: rgb }, parameters)
                }
                Ok(_) => bail!("the render stopped before it finished"),
                Err(e) => bail!("{}: {e}", args.graph.display()),
            }
        }
    };
    let json = graph.to_json();
    write_png_texts(
        &args.output,
        &image,
        &[("parameters", &parameters), (crate::graph::GRAPH_CHUNK, &json)],
    )?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
