//! The node graph's data model: nodes with typed pins, wires, the first-start graph, wiring
//! rules, undo history and saved files. No egui: the UI edits a [`Graph`] through these rules
//! and the evaluator (`eval`) turns it into render jobs.

pub mod a1111;
pub mod eval;
pub mod history;
pub mod node;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use node::{Node, Pin, PinType};

/// Identifies a node within a graph; stable across saves.
pub type NodeId = u32;

/// One end of a wire: a node and the index of one of its pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinRef {
    /// The node.
    pub node: NodeId,
    /// Which of its inputs or outputs.
    pub pin: usize,
}

/// A connection from an output to an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wire {
    /// The output it leaves.
    pub from: PinRef,
    /// The input it feeds.
    pub to: PinRef,
}

/// A node placed in the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Its id.
    pub id: NodeId,
    /// Top-left corner in graph coordinates.
    #[serde(default)]
    pub pos: [f32; 2],
    /// What it is.
    pub node: Node,
}

/// Why a wire was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// The output and input carry different things.
    #[error(
        "{from_node}'s {from_pin} output carries a {from_ty}; {to_node}'s {to_pin} input takes a {to_ty}"
    )]
    Type {
        /// Output node title.
        from_node: &'static str,
        /// Output pin name.
        from_pin: &'static str,
        /// What it carries.
        from_ty: &'static str,
        /// Input node title.
        to_node: &'static str,
        /// Input pin name.
        to_pin: &'static str,
        /// What it takes.
        to_ty: &'static str,
    },
    /// The wire would make the graph feed itself.
    #[error("this wire would make a loop: {0} would depend on its own output")]
    Cycle(&'static str),
    /// A pin that does not exist.
    #[error("node {node} has no such pin ({pin})")]
    NoPin {
        /// The node.
        node: NodeId,
        /// The index asked for.
        pin: usize,
    },
}

/// Why a graph file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GraphFileError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The JSON is not a graph.
    #[error("{path} is not a Latent Studio graph: {error}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why parsing failed.
        error: serde_json::Error,
    },
    /// A wire in the file breaks the wiring rules.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The PNG text chunk holding the graph that made a picture.
pub const GRAPH_CHUNK: &str = "latent-studio-graph";

/// The graph a PNG carries, if any (`None` when the file is unreadable or has no graph chunk).
pub fn graph_in_png(path: &Path) -> Option<Result<Graph, String>> {
    let texts = crate::imageio::read_png_text(path).ok()?;
    let (_, json) = texts.into_iter().find(|(k, _)| k == GRAPH_CHUNK)?;
    Some(Graph::from_json(&json, &path.display().to_string()).map_err(|e| e.to_string()))
}

/// Nodes and wires. Each input takes at most one wire; outputs feed any number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Graph {
    /// The nodes.
    pub nodes: Vec<GraphNode>,
    /// The wires.
    pub wires: Vec<Wire>,
}

impl Graph {
    /// What the studio shows on first start: Model → Prompt → Sampler → Output with a
    /// Schedule, and an SDEdit canvas wired into the sampler's init image, mask and regions.
    pub fn first_start() -> Self {
        let mut graph = Graph::default();
        // Two columns, sources left and the sampler right, so the graph stays readable in the
        // studio's narrow graph panel.
        let model = graph.add(Node::Model(Default::default()), [0.0, 0.0]);
        let prompt = graph.add(Node::Prompt(Default::default()), [0.0, 80.0]);
        let schedule = graph.add(Node::Schedule(Default::default()), [0.0, 170.0]);
        let canvas = graph.add(Node::Canvas(Default::default()), [0.0, 260.0]);
        let sampler = graph.add(Node::Sampler(Default::default()), [370.0, 110.0]);
        let output = graph.add(Node::Output(Default::default()), [370.0, 300.0]);
        let wires = [
            (model, 0, prompt, 0),
            (prompt, 0, sampler, 0),
            (schedule, 0, sampler, 1),
            (canvas, 0, sampler, 3),
            (canvas, 1, sampler, 4),
            (canvas, 2, sampler, 5),
            (sampler, 0, output, 0),
        ];
        for (from, out, to, input) in wires {
            // The first-start wiring follows the rules by construction.
            let _ = graph.connect(PinRef { node: from, pin: out }, PinRef { node: to, pin: input });
        }
        graph
    }

    /// Adds a node; returns its id.
    pub fn add(&mut self, node: Node, pos: [f32; 2]) -> NodeId {
        let id = self.nodes.iter().map(|n| n.id + 1).max().unwrap_or(1);
        self.nodes.push(GraphNode { id, pos, node });
        id
    }

    /// Removes a node and its wires.
    pub fn remove(&mut self, id: NodeId) {
        self.nodes.retain(|n| n.id != id);
        self.wires.retain(|w| w.from.node != id && w.to.node != id);
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id).map(|n| &n.node)
    }

    /// The node with `id`, to edit.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id).map(|n| &mut n.node)
    }

    /// The output wired into `input`, if any.
    pub fn source(&self, input: PinRef) -> Option<PinRef> {
        self.wires.iter().find(|w| w.to == input).map(|w| w.from)
    }

    /// Checks a wire against the rules without adding it.
    pub fn check(&self, from: PinRef, to: PinRef) -> Result<(), WireError> {
        let no_pin = |p: PinRef| WireError::NoPin { node: p.node, pin: p.pin };
        let from_node = self.node(from.node).ok_or(no_pin(from))?;
        let to_node = self.node(to.node).ok_or(no_pin(to))?;
        let out = from_node.outputs().get(from.pin).ok_or(no_pin(from))?;
        let inp = to_node.inputs().get(to.pin).ok_or(no_pin(to))?;
        if out.ty != inp.ty {
            return Err(WireError::Type {
                from_node: from_node.title(),
                from_pin: out.name,
                from_ty: out.ty.name(),
                to_node: to_node.title(),
                to_pin: inp.name,
                to_ty: inp.ty.name(),
            });
        }
        if from.node == to.node || self.depends_on(from.node, to.node) {
            return Err(WireError::Cycle(from_node.title()));
        }
        Ok(())
    }

    /// Adds a wire, replacing the one that fed `to`.
    pub fn connect(&mut self, from: PinRef, to: PinRef) -> Result<(), WireError> {
        self.check(from, to)?;
        self.wires.retain(|w| w.to != to);
        self.wires.push(Wire { from, to });
        Ok(())
    }

    /// Whether `node` reads (through any chain of wires) from `upstream`.
    fn depends_on(&self, node: NodeId, upstream: NodeId) -> bool {
        let mut stack = vec![node];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if n == upstream {
                return true;
            }
            if seen.insert(n) {
                stack.extend(self.wires.iter().filter(|w| w.to.node == n).map(|w| w.from.node));
            }
        }
        false
    }

    /// Checks every node's values and every wire of a graph read from a file.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        if let Some(dup) = self.nodes.iter().find(|n| !ids.insert(n.id)) {
            return Err(format!("two nodes have the id {}", dup.id));
        }
        for n in &self.nodes {
            n.node.check().map_err(|reason| format!("node {} ({}): {reason}", n.id, n.node.title()))?;
        }
        let mut rebuilt = Graph { nodes: self.nodes.clone(), wires: vec![] };
        for wire in &self.wires {
            rebuilt
                .connect(wire.from, wire.to)
                .map_err(|e| format!("wire from node {} to node {}: {e}", wire.from.node, wire.to.node))?;
        }
        Ok(())
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        // A graph holds only strings, numbers and paths: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and validates a graph; `origin` names the source in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, GraphFileError> {
        let graph: Graph = serde_json::from_str(text)
            .map_err(|error| GraphFileError::Parse { path: origin.into(), error })?;
        graph.validate().map_err(|reason| GraphFileError::Invalid { path: origin.into(), reason })?;
        Ok(graph)
    }

    /// Reads a graph file.
    pub fn load(path: &Path) -> Result<Self, GraphFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| GraphFileError::Io { path: path.display().to_string(), error })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Writes a graph file atomically (a temporary name, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), GraphFileError> {
        crate::imageio::write_atomic(path, self.to_json().as_bytes())
            .map_err(|error| GraphFileError::Io { path: path.display().to_string(), error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(graph: &Graph, title: &str) -> NodeId {
        graph.nodes.iter().find(|n| n.node.title() == title).map(|n| n.id).unwrap_or(0)
    }

    #[test]
    fn the_first_start_graph_is_wired_model_prompt_sampler_output_with_a_canvas() {
        let g = Graph::first_start();
        assert_eq!(g.wires.len(), 7);
        let sampler = find(&g, "Sampler");
        let src = |pin| g.source(PinRef { node: sampler, pin }).map(|p| g.node(p.node).map(Node::title));
        assert_eq!(src(0), Some(Some("Prompt")));
        assert_eq!(src(3), Some(Some("SDEdit Canvas")));
        assert_eq!(src(4), Some(Some("SDEdit Canvas")));
        assert_eq!(src(5), Some(Some("SDEdit Canvas")), "the canvas's word regions");
        assert!(g.validate().is_ok());
    }

    #[test]
    fn a_wire_of_the_wrong_type_is_refused_with_the_reason() {
        let mut g = Graph::first_start();
        let model = find(&g, "Model");
        let output = find(&g, "Output");
        let err = g.connect(PinRef { node: model, pin: 0 }, PinRef { node: output, pin: 0 });
        let Err(err) = err else { panic!("a model wired into an image input was accepted") };
        assert_eq!(
            err.to_string(),
            "Model's model output carries a model; Output's image input takes a image"
        );
    }

    #[test]
    fn loops_are_refused_and_a_new_wire_replaces_the_old_one_into_an_input() {
        let mut g = Graph::default();
        let a = g.add(Node::Interpolate(Default::default()), [0.0; 2]);
        let b = g.add(Node::Interpolate(Default::default()), [0.0; 2]);
        let c = g.add(Node::Interpolate(Default::default()), [0.0; 2]);
        assert!(g.connect(PinRef { node: a, pin: 0 }, PinRef { node: b, pin: 0 }).is_ok());
        let back = g.connect(PinRef { node: b, pin: 0 }, PinRef { node: a, pin: 0 });
        assert!(matches!(back, Err(WireError::Cycle(_))));
        assert!(g.connect(PinRef { node: c, pin: 0 }, PinRef { node: b, pin: 0 }).is_ok());
        assert_eq!(g.wires.len(), 1);
        assert_eq!(g.source(PinRef { node: b, pin: 0 }), Some(PinRef { node: c, pin: 0 }));
    }

    #[test]
    fn graph_files_round_trip_and_broken_ones_say_what_is_wrong() {
        let g = Graph::first_start();
        assert_eq!(Graph::from_json(&g.to_json(), "x").ok(), Some(g.clone()));
        let err = Graph::from_json("{\"nodes\": 3}", "a.json").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("a.json is not a Latent Studio graph")));
        let mut bad = g.clone();
        bad.wires.push(Wire { from: PinRef { node: 1, pin: 0 }, to: PinRef { node: 99, pin: 0 } });
        let err = Graph::from_json(&bad.to_json(), "b.json").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("b.json: wire from node 1 to node 99: node 99 has no such pin (0)"));
        // An old file without positions or optional fields still loads.
        let old = r#"{"nodes": [{"id": 1, "node": {"kind": "Sampler", "seed": 7}}]}"#;
        let g = Graph::from_json(old, "old.json").unwrap_or_default();
        assert!(matches!(g.node(1), Some(Node::Sampler(s)) if s.seed == 7 && s.guidance == 5.0));
    }

    #[test]
    fn graphs_the_earlier_studio_could_save_still_load() {
        use crate::graph::node::{InterpolateNode, InvertNode};
        // The earlier studio's controls, before values were checked when read (its
        // ui/properties.rs): steps 1..=100, guidance 0..=15 (sampler) and 0..=10 (interpolate),
        // eta and rescale 0..=1, strength 0.05..=1, frames 2..=32, brush radius 0.005..=0.25, stroke
        // points clamped to the canvas with pressure 0.05..=1, seeds anything a u64 holds.
        for high in [false, true] {
            let pick = |low: f64, top: f64| if high { top } else { low };
            let mut g = Graph::first_start();
            for n in g.nodes.iter_mut() {
                match &mut n.node {
                    Node::Schedule(s) => (s.steps, s.eta) = (if high { 100 } else { 1 }, pick(0.0, 1.0)),
                    Node::Sampler(s) => {
                        (s.guidance, s.rescale) = (pick(0.0, 15.0), pick(0.0, 1.0));
                        s.seed = if high { u64::MAX } else { 0 };
                    }
                    Node::Canvas(c) => {
                        c.strength = pick(0.05, 1.0);
                        c.brush.radius = pick(0.005, 0.25) as f32;
                        let points = vec![[0.0, 0.0, 0.05], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5]];
                        c.push(crate::sketch::Stroke { points, ..c.brush.clone() });
                    }
                    _ => {}
                }
            }
            let interpolate = InterpolateNode {
                seed_a: if high { u64::MAX } else { 0 },
                frames: if high { 32 } else { 2 },
                position: pick(0.0, 1.0),
                ..Default::default()
            };
            g.add(Node::Interpolate(interpolate), [0.0, 0.0]);
            g.add(
                Node::Invert(InvertNode { steps: if high { 100 } else { 1 }, guidance: pick(0.0, 10.0) }),
                [0.0; 2],
            );
            let text = g.to_json();
            let back = Graph::from_json(&text, "old.json");
            assert!(back.as_ref().is_ok_and(|b| *b == g), "{:?}", back.err());
            assert_eq!(g.validate(), Ok(()));
        }
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_node_and_the_value() {
        let canvas = |points: &str| {
            format!(
                r#"{{"nodes": [{{"id": 4, "node": {{"kind": "Canvas", "strokes": [
                    {{"color": [1, 2, 3], "radius": 0.05, "points": [[0.5, 0.5, 1.0]]}},
                    {{"color": [1, 2, 3], "radius": 0.05, "points": [[0.5, 0.5, 1.0], {points}]}}]}}}}]}}"#
            )
        };
        let refused = |json: &str| Graph::from_json(json, "g.json").err().map(|e| e.to_string());
        assert!(Graph::from_json(&canvas("[0.9, 0.1, 0.5]"), "g.json").is_ok());
        assert_eq!(
            refused(&canvas("[4294967296, 0.5, 1.0]")).as_deref(),
            Some("g.json: node 4 (SDEdit Canvas): stroke 2, point 2: x = 4294967296 is outside [-1, 2]")
        );
        // 1e308 does not fit an f32: read as infinity, refused as well.
        let e = refused(&canvas("[0.5, -1e308, 1.0]")).unwrap_or_default();
        assert!(e.contains("stroke 2, point 2: y = -inf"), "{e}");
        let e = refused(&canvas("[0.5, 0.5, -3]")).unwrap_or_default();
        assert!(e.contains("pressure = -3"), "{e}");
        let node = |body: &str| format!(r#"{{"nodes": [{{"id": 2, "node": {body}}}]}}"#);
        for (body, says) in [
            (r#"{"kind": "Schedule", "steps": 0}"#, "node 2 (Schedule): steps = 0 is outside 1..=1000"),
            (r#"{"kind": "Schedule", "steps": 18446744073709551615}"#, "steps = 18446744073709551615"),
            (
                r#"{"kind": "Sampler", "guidance": 1e300}"#,
                "node 2 (Sampler): guidance = 100000000000000000000",
            ),
            (r#"{"kind": "Image", "strength": -0.5}"#, "node 2 (Image): strength = -0.5"),
            (r#"{"kind": "Interpolate", "frames": 100000}"#, "frames = 100000 is outside 2..=64"),
            (
                r#"{"kind": "Canvas", "brush": {"color": [0, 0, 0], "radius": 0, "points": []}}"#,
                "the brush: radius = 0",
            ),
        ] {
            let e = refused(&node(body)).unwrap_or_default();
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
