//! Evaluation: from a graph to what each Output node shows, as render specs the engine runs.
//! The studio and the headless `run` command share it.

use super::node::{Node, SamplerNode, Sigmas, Spacing};
use super::{Graph, NodeId, PinRef};
use crate::engine::spec::{
    ImageSpec, InitSpec, LoraSpec, ModelSource, NoiseSpec, RegionSpec, RenderSpec, VaeSpec,
};

/// A problem that keeps an output from rendering, naming the node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{title} (node {node}): {message}")]
pub struct EvalError {
    /// The node at fault.
    pub node: NodeId,
    /// Its title.
    pub title: &'static str,
    /// What is wrong.
    pub message: String,
}

/// What an Output node shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// A render.
    Render(Box<RenderSpec>),
    /// A picture (a canvas or an image file wired straight in).
    Picture(ImageSpec),
}

/// The frames of an interpolation path, when the render's noise comes from an Interpolate node.
#[derive(Debug, Clone, PartialEq)]
pub struct Strip {
    /// The Interpolate node (its `position` is what the scrubber moves).
    pub node: NodeId,
    /// Frame i at position i / (n - 1).
    pub frames: Vec<RenderSpec>,
}

/// One Output node's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The Output node.
    pub output: NodeId,
    /// What it shows.
    pub shown: Shown,
    /// The filmstrip, for interpolations.
    pub strip: Option<Strip>,
}

/// Plans every Output node, in node order: (the Output node, its plan or what keeps it from one).
pub fn plans(graph: &Graph) -> Vec<(NodeId, Result<Plan, EvalError>)> {
    graph
        .nodes
        .iter()
        .filter(|n| matches!(n.node, Node::Output(_)))
        .map(|n| (n.id, Evaluator { graph, position: None }.plan(n.id)))
        .collect()
}

/// A model with the LoRAs merged into it, nearest the checkpoint first, and its autoencoder.
struct Model {
    source: ModelSource,
    loras: Vec<LoraSpec>,
    vae: Option<VaeSpec>,
}

struct Evaluator<'a> {
    graph: &'a Graph,
    /// Overrides the Interpolate node's position (for strip frames).
    position: Option<f64>,
}

impl Evaluator<'_> {
    fn error(&self, node: NodeId, message: impl Into<String>) -> EvalError {
        let title = self.graph.node(node).map_or("node", Node::title);
        EvalError { node, title, message: message.into() }
    }

    /// The node feeding input `pin` of `node`, or an error when a required one is missing.
    fn input(&self, node: NodeId, pin: usize) -> Result<Option<(NodeId, usize, &Node)>, EvalError> {
        let source = self.graph.source(PinRef { node, pin });
        let Some(source) = source else {
            let spec = self.graph.node(node).and_then(|n| n.inputs().get(pin));
            return match spec {
                Some(p) if !p.optional => {
                    Err(self.error(node, format!("the {} input is not connected", p.name)))
                }
                _ => Ok(None),
            };
        };
        let upstream =
            self.graph.node(source.node).ok_or_else(|| self.error(node, "wired to a missing node"))?;
        Ok(Some((source.node, source.pin, upstream)))
    }

    fn plan(&self, output: NodeId) -> Result<Plan, EvalError> {
        let Some((source, _, upstream)) = self.input(output, 0)? else {
            return Err(self.error(output, "the image input is not connected"));
        };
        let shown = match upstream {
            Node::Sampler(_) => Shown::Render(Box::new(self.render(source)?)),
            _ => Shown::Picture(self.image(source)?.0),
        };
        let strip = match &shown {
            Shown::Render(_) => self.strip(source)?,
            Shown::Picture(_) => None,
        };
        Ok(Plan { output, shown, strip })
    }

    /// The filmstrip when the sampler's noise comes from an Interpolate node.
    fn strip(&self, sampler: NodeId) -> Result<Option<Strip>, EvalError> {
        let Some((node, _, Node::Interpolate(interp))) = self.input(sampler, 2)? else { return Ok(None) };
        let n = interp.frames.clamp(2, 64);
        let frames = (0..n)
            .map(|i| {
                Evaluator { graph: self.graph, position: Some(i as f64 / (n - 1) as f64) }.render(sampler)
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Strip { node, frames }))
    }

    fn render(&self, sampler: NodeId) -> Result<RenderSpec, EvalError> {
        let Some(Node::Sampler(settings)) = self.graph.node(sampler) else {
            return Err(self.error(sampler, "not a sampler"));
        };
        let SamplerNode { algorithm, guidance, rescale, seed } = settings.clone();
        let (model, prompt, negative) = self.conditioning(sampler, 0)?;
        let mut spec = RenderSpec {
            model: model.source,
            loras: model.loras,
            vae: model.vae,
            prompt,
            negative,
            prompt_to: None,
            regions: Vec::new(),
            sampler: algorithm,
            steps: None,
            spacing: None,
            karras: None,
            eta: 0.0,
            guidance,
            rescale,
            noise: NoiseSpec::Seed(seed),
            init: None,
        };
        if let Some((_, _, Node::Schedule(s))) = self.input(sampler, 1)? {
            if s.steps == 0 || s.steps > 1000 {
                return Err(self.error(sampler, format!("{} steps: choose 1 to 1000", s.steps)));
            }
            spec.steps = Some(s.steps);
            spec.eta = s.eta;
            spec.karras = match s.sigmas {
                Sigmas::Model => None,
                Sigmas::Karras => Some(true),
            };
            spec.spacing = match s.spacing {
                Spacing::Model => None,
                Spacing::Leading => Some("leading".into()),
                Spacing::Trailing => Some("trailing".into()),
                Spacing::Linspace => Some("linspace".into()),
            };
        }
        if let Some((node, _, _)) = self.input(sampler, 2)? {
            let (noise, prompt_to) = self.noise(node, seed)?;
            spec.noise = noise;
            spec.prompt_to = prompt_to;
        }
        if let Some((node, _, _)) = self.input(sampler, 3)? {
            let (image, strength) = self.image(node)?;
            let strength = strength.ok_or_else(|| self.error(node, "has no strength"))?;
            if !(strength > 0.0 && strength <= 1.0) {
                return Err(self.error(node, format!("strength {strength}: choose a value in (0, 1]")));
            }
            let mask = match self.input(sampler, 4)? {
                Some((_, _, Node::Canvas(canvas))) => Some(canvas.clone()),
                _ => None,
            };
            spec.init = Some(InitSpec { image, strength, mask });
        }
        if let Some((_, _, Node::Canvas(canvas))) = self.input(sampler, 5)? {
            spec.regions = RegionSpec::from_canvas(canvas);
        }
        Ok(spec)
    }

    /// (model, prompt, negative) from the Prompt node wired into `pin` of `node`.
    fn conditioning(&self, node: NodeId, pin: usize) -> Result<(Model, String, String), EvalError> {
        let Some((prompt_id, _, Node::Prompt(prompt))) = self.input(node, pin)? else {
            return Err(self.error(node, "the conditioning input is not connected"));
        };
        Ok((self.model(prompt_id)?, prompt.prompt.clone(), prompt.negative.clone()))
    }

    /// The model wired into `node`'s first input, through any LoRA nodes on the way.
    fn model(&self, node: NodeId) -> Result<Model, EvalError> {
        let mut loras = Vec::new();
        let mut at = node;
        // Wiring refuses loops; the bound only guards a graph file that slipped one in.
        for _ in 0..=self.graph.nodes.len() {
            match self.input(at, 0)? {
                Some((_, _, Node::Model(model))) => {
                    loras.reverse();
                    let vae = model.vae.clone().map(|path| VaeSpec { path, finals: model.vae_finals });
                    return Ok(Model { source: model.source.clone(), loras, vae });
                }
                Some((lora_id, _, Node::Lora(lora))) => {
                    let Some(path) = &lora.path else {
                        return Err(self.error(lora_id, "no LoRA file chosen: click Open… on the node"));
                    };
                    loras.push(LoraSpec { path: path.clone(), strength: lora.strength });
                    at = lora_id;
                }
                _ => return Err(self.error(at, "the model input is not connected")),
            }
        }
        Err(self.error(node, "its model input runs in a loop"))
    }

    /// A picture and its SDEdit strength (none for a sampler's own render).
    fn image(&self, node: NodeId) -> Result<(ImageSpec, Option<f64>), EvalError> {
        match self.graph.node(node) {
            Some(Node::Canvas(canvas)) => {
                let base = match self.input(node, 0)? {
                    Some((base, _, _)) => Some(Box::new(self.image(base)?.0)),
                    None => None,
                };
                Ok((ImageSpec::Canvas { canvas: canvas.clone(), base }, Some(canvas.strength)))
            }
            Some(Node::Image(image)) => match &image.path {
                Some(path) => Ok((ImageSpec::File(path.clone()), Some(image.strength))),
                None => Err(self.error(node, "no picture chosen: click Open… on the node")),
            },
            _ => Err(self.error(
                node,
                "a render cannot feed another render here: save it and load it with an Image node",
            )),
        }
    }

    /// The noise a Latent output gives, and the prompt interpolation an Interpolate node adds.
    fn noise(&self, node: NodeId, seed: u64) -> Result<(NoiseSpec, Option<(String, f64)>), EvalError> {
        match self.graph.node(node) {
            Some(Node::Invert(invert)) => {
                let (_, prompt, _) = self.conditioning(node, 0)?;
                let Some((image_node, _, _)) = self.input(node, 1)? else {
                    return Err(self.error(node, "the image input is not connected"));
                };
                if invert.steps == 0 || invert.steps > 1000 {
                    return Err(self.error(node, format!("{} steps: choose 1 to 1000", invert.steps)));
                }
                let image = self.image(image_node)?.0;
                Ok((
                    NoiseSpec::Inverted { image, prompt, guidance: invert.guidance, steps: invert.steps },
                    None,
                ))
            }
            Some(Node::Interpolate(interp)) => {
                let t = self.position.unwrap_or(interp.position).clamp(0.0, 1.0);
                let endpoint = |pin: usize, fallback: u64| -> Result<NoiseSpec, EvalError> {
                    match self.input(node, pin)? {
                        Some((upstream, _, _)) => Ok(self.noise(upstream, seed)?.0),
                        None => Ok(NoiseSpec::Seed(fallback)),
                    }
                };
                let noise = NoiseSpec::Slerp {
                    a: Box::new(endpoint(0, interp.seed_a)?),
                    b: Box::new(endpoint(1, interp.seed_b)?),
                    t,
                };
                let prompt_to = (!interp.prompt_b.trim().is_empty()).then(|| (interp.prompt_b.clone(), t));
                Ok((noise, prompt_to))
            }
            _ => Ok((NoiseSpec::Seed(seed), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::node::{InterpolateNode, OutputNode};

    fn id(graph: &Graph, title: &str) -> NodeId {
        graph.nodes.iter().find(|n| n.node.title() == title).map(|n| n.id).unwrap_or(0)
    }

    #[test]
    fn the_first_start_graph_plans_an_sdedit_render_of_its_canvas() {
        let graph = Graph::first_start();
        let plans = plans(&graph);
        assert_eq!(plans.len(), 1);
        let Ok(Plan { shown: Shown::Render(spec), strip: None, .. }) = &plans[0].1 else {
            panic!("{:?}", plans[0].1)
        };
        assert_eq!(spec.prompt, "sunset over snowy mountains with a lake");
        assert_eq!(spec.steps, Some(20));
        assert_eq!(spec.noise, NoiseSpec::Seed(1));
        let init = spec.init.as_ref().map(|i| (i.strength, i.mask.is_some()));
        assert_eq!(init, Some((0.75, true)));
    }

    #[test]
    fn the_canvas_word_regions_reach_the_sampler_through_its_regions_input() {
        use crate::sketch::WordRegion;
        let mut graph = Graph::first_start();
        let canvas = id(&graph, "SDEdit Canvas");
        if let Some(Node::Canvas(c)) = graph.node_mut(canvas) {
            c.regions.push(WordRegion { phrase: "a bright sun".into(), ..WordRegion::default() });
        }
        let planned = plans(&graph);
        let Ok(Plan { shown: Shown::Render(spec), .. }) = &planned[0].1 else { panic!("{:?}", planned[0].1) };
        assert_eq!(spec.regions.len(), 1);
        assert_eq!(spec.regions[0].phrase, "a bright sun");
        // Unwired, the sampler renders without them.
        let sampler = id(&graph, "Sampler");
        graph.wires.retain(|w| w.to != PinRef { node: sampler, pin: 5 });
        let unwired = plans(&graph);
        let Ok(Plan { shown: Shown::Render(spec), .. }) = &unwired[0].1 else { panic!("{:?}", unwired[0].1) };
        assert!(spec.regions.is_empty());
    }

    #[test]
    fn a_missing_required_input_names_the_node_and_the_input() {
        let mut graph = Graph::first_start();
        let prompt = id(&graph, "Prompt");
        graph.wires.retain(|w| w.to.node != prompt);
        let plans = plans(&graph);
        let err = plans[0].1.as_ref().err().map(ToString::to_string);
        assert_eq!(err, Some(format!("Prompt (node {prompt}): the model input is not connected")));
    }

    #[test]
    fn an_interpolation_plans_a_strip_whose_frames_walk_the_path() {
        let mut graph = Graph::first_start();
        let sampler = id(&graph, "Sampler");
        let interp = graph.add(
            Node::Interpolate(InterpolateNode { frames: 5, position: 0.3, ..Default::default() }),
            [0.0; 2],
        );
        assert!(graph.connect(PinRef { node: interp, pin: 0 }, PinRef { node: sampler, pin: 2 }).is_ok());
        let plans = plans(&graph);
        let Ok(Plan { shown: Shown::Render(spec), strip: Some(strip), .. }) = &plans[0].1 else {
            panic!("{:?}", plans[0].1)
        };
        let t_of = |s: &RenderSpec| match &s.noise {
            NoiseSpec::Slerp { t, a, b } if **a == NoiseSpec::Seed(1) && **b == NoiseSpec::Seed(2) => *t,
            other => panic!("{other:?}"),
        };
        assert_eq!(t_of(spec), 0.3);
        assert_eq!(strip.frames.iter().map(t_of).collect::<Vec<_>>(), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(strip.node, interp);
    }

    #[test]
    fn lora_nodes_between_the_model_and_the_prompt_join_the_spec_in_order() {
        let mut graph = Graph::first_start();
        let (model, prompt) = (id(&graph, "Model"), id(&graph, "Prompt"));
        let lora = |path: &str, strength| {
            Node::Lora(crate::graph::node::LoraNode { path: Some(path.into()), strength })
        };
        let a = graph.add(lora("a.safetensors", 0.5), [0.0; 2]);
        let b = graph.add(lora("b.safetensors", -1.0), [0.0; 2]);
        graph.wires.retain(|w| w.to.node != prompt);
        for (from, to) in [(model, a), (a, b), (b, prompt)] {
            assert!(graph.connect(PinRef { node: from, pin: 0 }, PinRef { node: to, pin: 0 }).is_ok());
        }
        let plans = plans(&graph);
        let Ok(Plan { shown: Shown::Render(spec), .. }) = &plans[0].1 else { panic!("{:?}", plans[0].1) };
        let got: Vec<_> =
            spec.loras.iter().map(|l| (l.path.to_string_lossy().into_owned(), l.strength)).collect();
        assert_eq!(got, [("a.safetensors".to_string(), 0.5), ("b.safetensors".to_string(), -1.0)]);
        // A LoRA node without a file names itself.
        let Some(node) = graph.nodes.iter_mut().find(|n| n.id == b) else { panic!() };
        node.node = Node::Lora(Default::default());
        let err = plans_err(&graph);
        assert_eq!(err, format!("LoRA (node {b}): no LoRA file chosen: click Open… on the node"));
    }

    fn plans_err(graph: &Graph) -> String {
        plans(graph)[0].1.as_ref().err().map(ToString::to_string).unwrap_or_default()
    }

    #[test]
    fn a_canvas_wired_straight_into_an_output_is_shown_as_a_picture() {
        let mut graph = Graph::first_start();
        let canvas = id(&graph, "SDEdit Canvas");
        let out = graph.add(Node::Output(OutputNode::default()), [0.0; 2]);
        assert!(graph.connect(PinRef { node: canvas, pin: 0 }, PinRef { node: out, pin: 0 }).is_ok());
        let plans = plans(&graph);
        assert!(matches!(&plans[1].1, Ok(Plan { shown: Shown::Picture(ImageSpec::Canvas { .. }), .. })));
    }
}
