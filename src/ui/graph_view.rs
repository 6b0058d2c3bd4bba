//! The node graph on screen: egui-snarl showing the graph's nodes, typed pins coloured by type,
//! wires checked against the graph's rules (a refused wire says why), and an "add node" menu.

use std::collections::HashMap;

use egui::{Color32, Pos2, Ui};
use egui_snarl::ui::{PinInfo, SnarlStyle, SnarlViewer, SnarlWidget};
use egui_snarl::{InPin, InPinId, NodeId as SnarlId, OutPin, OutPinId, Snarl};

use crate::graph::{Graph, GraphNode, Node, NodeId, PinRef, PinType, Wire};

/// A node as snarl holds it: the graph's id and the node.
pub type Shown = (NodeId, Node);

/// The colour of a pin type's pins and wires.
pub fn pin_color(ty: PinType) -> Color32 {
    match ty {
        PinType::Model => Color32::from_rgb(180, 120, 240),
        PinType::Conditioning => Color32::from_rgb(240, 200, 80),
        PinType::Schedule => Color32::from_rgb(120, 200, 240),
        PinType::Latent => Color32::from_rgb(240, 120, 160),
        PinType::Image => Color32::from_rgb(120, 220, 130),
        PinType::Mask => Color32::from_rgb(200, 200, 200),
        PinType::Regions => Color32::from_rgb(250, 150, 60),
    }
}

/// Builds snarl's copy of a graph.
pub fn to_snarl(graph: &Graph) -> Snarl<Shown> {
    let mut snarl = Snarl::new();
    let mut ids = HashMap::new();
    for n in &graph.nodes {
        ids.insert(n.id, snarl.insert_node(Pos2::new(n.pos[0], n.pos[1]), (n.id, n.node.clone())));
    }
    for w in &graph.wires {
        if let (Some(&from), Some(&to)) = (ids.get(&w.from.node), ids.get(&w.to.node)) {
            snarl.connect(OutPinId { node: from, output: w.from.pin }, InPinId { node: to, input: w.to.pin });
        }
    }
    snarl
}

/// Reads the graph back from snarl (positions, nodes, wires).
pub fn from_snarl(snarl: &Snarl<Shown>) -> Graph {
    let nodes = snarl
        .nodes_info()
        .map(|info| GraphNode { id: info.value.0, pos: [info.pos.x, info.pos.y], node: info.value.1.clone() })
        .collect();
    let id_of = |n: SnarlId| snarl.get_node(n).map(|v| v.0);
    let mut wires: Vec<Wire> = snarl
        .wires()
        .filter_map(|(from, to)| {
            Some(Wire {
                from: PinRef { node: id_of(from.node)?, pin: from.output },
                to: PinRef { node: id_of(to.node)?, pin: to.input },
            })
        })
        .collect();
    // Snarl keeps wires unordered; a fixed order makes equal graphs compare equal.
    wires.sort_by_key(|w| (w.to, w.from));
    Graph { nodes, wires }
}

/// The snarl id of the graph node `id`.
pub fn snarl_id(snarl: &Snarl<Shown>, id: NodeId) -> Option<SnarlId> {
    snarl.node_ids().find(|(_, v)| v.0 == id).map(|(sid, _)| sid)
}

/// What the viewer reports back to the app.
#[derive(Debug, Default)]
pub struct ViewerOutput {
    /// A wire that was refused, and why.
    pub refused: Option<String>,
    /// A node whose header was clicked (select it for the properties panel).
    pub clicked: Option<NodeId>,
    /// Whether the view was fitted to `Viewer::fit_into` this frame.
    pub fitted: bool,
}

/// Shows nodes with a one-line summary each; the properties panel edits them.
pub struct Viewer<'a> {
    /// Per node, a line to show in its body (status, unknown words, errors).
    pub notes: &'a HashMap<NodeId, String>,
    /// Per Output node, its latest picture's texture.
    pub thumbnails: &'a HashMap<NodeId, egui::TextureHandle>,
    /// The selected node.
    pub selected: Option<NodeId>,
    /// Frame the nodes in this screen rectangle, at most at full size (the studio asks once, for a
    /// new graph): egui-snarl's own first view fits the nodes' corners, not the nodes, which left
    /// the first-start graph at half size with its Output node cut off.
    pub fit_into: Option<egui::Rect>,
    /// Results.
    pub out: ViewerOutput,
}

/// A node's rough size at full scale: egui-snarl lays nodes out itself and does not expose their
/// rectangles, and framing the graph needs only their extent.
fn rough_size(node: &Node) -> egui::Vec2 {
    match node {
        Node::Prompt(_) | Node::Canvas(_) => egui::vec2(330.0, 70.0),
        Node::Sampler(_) => egui::vec2(300.0, 130.0),
        Node::Output(_) | Node::Image(_) => egui::vec2(130.0, 130.0),
        _ => egui::vec2(170.0, 60.0),
    }
}

/// The transform that shows `nodes` (graph positions and rough sizes) centred in `screen`, with
/// a margin, at most at full scale.
fn framing(nodes: impl Iterator<Item = egui::Rect>, screen: egui::Rect) -> Option<egui::emath::TSTransform> {
    let content = nodes.fold(egui::Rect::NOTHING, |all, rect| all.union(rect));
    if !content.is_finite() || !screen.is_finite() || screen.area() <= 0.0 {
        return None;
    }
    let margin = 24.0;
    let scale = ((screen.width() - 2.0 * margin) / content.width())
        .min((screen.height() - 2.0 * margin) / content.height())
        .clamp(0.2, 1.0);
    Some(egui::emath::TSTransform::new(screen.center().to_vec2() - content.center().to_vec2() * scale, scale))
}

impl SnarlViewer<Shown> for Viewer<'_> {
    fn title(&mut self, node: &Shown) -> String {
        node.1.title().to_string()
    }

    fn current_transform(&mut self, to_global: &mut egui::emath::TSTransform, snarl: &mut Snarl<Shown>) {
        let Some(screen) = self.fit_into.take() else { return };
        let nodes =
            snarl.nodes_pos().map(|(pos, (_, node))| egui::Rect::from_min_size(pos, rough_size(node)));
        if let Some(transform) = framing(nodes, screen) {
            *to_global = transform;
            self.out.fitted = true;
        }
    }

    fn show_header(
        &mut self,
        node: SnarlId,
        _: &[InPin],
        _: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<Shown>,
    ) {
        let Some((id, n)) = snarl.get_node(node) else { return };
        let selected = self.selected == Some(*id);
        let text = egui::RichText::new(n.title()).strong();
        let response =
            ui.selectable_label(selected, text).on_hover_text("Select to edit in the properties panel");
        if response.clicked() {
            self.out.clicked = Some(*id);
        }
    }

    fn inputs(&mut self, node: &Shown) -> usize {
        node.1.inputs().len()
    }

    fn outputs(&mut self, node: &Shown) -> usize {
        node.1.outputs().len()
    }

    #[allow(refining_impl_trait)]
    fn show_input(&mut self, pin: &InPin, ui: &mut Ui, snarl: &mut Snarl<Shown>) -> PinInfo {
        let Some(p) = snarl.get_node(pin.id.node).and_then(|n| n.1.inputs().get(pin.id.input)) else {
            return PinInfo::circle();
        };
        let label = if p.optional { format!("{} (optional)", p.name) } else { p.name.to_string() };
        ui.label(label).on_hover_text(format!("takes a {}", p.ty.name()));
        PinInfo::circle().with_fill(pin_color(p.ty))
    }

    #[allow(refining_impl_trait)]
    fn show_output(&mut self, pin: &OutPin, ui: &mut Ui, snarl: &mut Snarl<Shown>) -> PinInfo {
        let Some(p) = snarl.get_node(pin.id.node).and_then(|n| n.1.outputs().get(pin.id.output)) else {
            return PinInfo::circle();
        };
        ui.label(p.name).on_hover_text(format!("gives a {}", p.ty.name()));
        PinInfo::circle().with_fill(pin_color(p.ty))
    }

    fn has_body(&mut self, _: &Shown) -> bool {
        true
    }

    fn show_body(&mut self, node: SnarlId, _: &[InPin], _: &[OutPin], ui: &mut Ui, snarl: &mut Snarl<Shown>) {
        let Some((id, n)) = snarl.get_node(node) else { return };
        ui.vertical(|ui| {
            ui.set_max_width(180.0);
            ui.label(egui::RichText::new(summary(n)).small());
            if let Some(texture) = self.thumbnails.get(id) {
                ui.add(egui::Image::new(texture).fit_to_exact_size(egui::vec2(96.0, 96.0)));
            }
            if let Some(note) = self.notes.get(id) {
                ui.label(egui::RichText::new(note).small().color(Color32::from_rgb(240, 170, 90)));
            }
        });
    }

    fn connect(&mut self, from: &OutPin, to: &InPin, snarl: &mut Snarl<Shown>) {
        let graph = from_snarl(snarl);
        let id = |n: SnarlId| snarl.get_node(n).map_or(0, |v| v.0);
        let (f, t) = (
            PinRef { node: id(from.id.node), pin: from.id.output },
            PinRef { node: id(to.id.node), pin: to.id.input },
        );
        match graph.check(f, t) {
            Ok(()) => {
                snarl.drop_inputs(to.id);
                snarl.connect(from.id, to.id);
            }
            Err(e) => self.out.refused = Some(format!("Wire refused: {e}")),
        }
    }

    fn has_graph_menu(&mut self, _: Pos2, _: &mut Snarl<Shown>) -> bool {
        true
    }

    fn show_graph_menu(&mut self, pos: Pos2, ui: &mut Ui, snarl: &mut Snarl<Shown>) {
        ui.label("Add node");
        for node in Node::all_kinds() {
            if ui.button(node.title()).clicked() {
                let id = snarl.nodes().map(|n| n.0 + 1).max().unwrap_or(1);
                snarl.insert_node(pos, (id, node));
                ui.close();
            }
        }
    }

    fn has_node_menu(&mut self, _: &Shown) -> bool {
        true
    }

    fn show_node_menu(
        &mut self,
        node: SnarlId,
        _: &[InPin],
        _: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<Shown>,
    ) {
        if ui.button("Delete node").clicked() {
            snarl.remove_node(node);
            ui.close();
        }
    }
}

/// One line describing a node's settings.
pub fn summary(node: &Node) -> String {
    match node {
        Node::Model(m) => m.source.name(),
        Node::Lora(l) => match &l.path {
            Some(path) => {
                let name = path
                    .file_stem()
                    .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into());
                format!("{} · {:.2}", shorten(&name, 24), l.strength)
            }
            None => "no LoRA file".into(),
        },
        Node::Prompt(p) => shorten(&p.prompt, 40),
        Node::Schedule(s) => format!("{} steps, eta {:.2}", s.steps, s.eta),
        Node::Sampler(s) => format!("{} · cfg {:.1} · seed {}", s.algorithm.name(), s.guidance, s.seed),
        Node::Canvas(c) => format!("{} strokes · strength {:.2}", c.strokes.len(), c.strength),
        Node::Image(i) => {
            i.path.as_ref().map_or("no picture".into(), |p| shorten(&p.display().to_string(), 30))
        }
        Node::Invert(i) => format!("{} steps · cfg {:.1}", i.steps, i.guidance),
        Node::Interpolate(i) => format!("{} frames · at {:.2}", i.frames, i.position),
        Node::Output(_) => String::new(),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}

/// Shows the graph.
pub fn graph_ui(ui: &mut Ui, snarl: &mut Snarl<Shown>, viewer: &mut Viewer<'_>) -> egui::Response {
    let style = SnarlStyle { collapsible: Some(false), ..SnarlStyle::new() };
    SnarlWidget::new().id_salt("studio-graph").style(style).show(snarl, viewer, ui)
}

#[cfg(test)]
mod tests {
    use egui::{pos2, vec2, Rect};

    use super::*;

    #[test]
    fn framing_fits_the_nodes_inside_the_screen_at_most_at_full_size() {
        let screen = Rect::from_min_size(pos2(10.0, 20.0), vec2(540.0, 760.0));
        // Wider than the screen: scaled down until the width fits with its margins.
        let wide = [
            Rect::from_min_size(pos2(0.0, 0.0), vec2(330.0, 70.0)),
            Rect::from_min_size(pos2(370.0, 110.0), vec2(300.0, 130.0)),
        ];
        let t = framing(wide.into_iter(), screen).unwrap();
        assert!((t.scaling - (540.0 - 48.0) / 670.0).abs() < 1e-5, "{}", t.scaling);
        for rect in wide {
            let on_screen = Rect::from_min_max(t * rect.min, t * rect.max);
            assert!(screen.shrink(23.9).contains_rect(on_screen), "{on_screen:?} inside {screen:?}");
        }
        // Small: full size, centred.
        let small = Rect::from_min_size(pos2(100.0, 100.0), vec2(100.0, 50.0));
        let t = framing(std::iter::once(small), screen).unwrap();
        assert_eq!(t.scaling, 1.0);
        assert!((t * small.center() - screen.center()).length() < 1e-3);
        assert!(framing(std::iter::empty(), screen).is_none(), "nothing to frame");
    }
}
