//! Files: graphs (JSON, or PNGs carrying one), pictures with their graph and A1111 parameters,
//! strips as GIF or PNGs, dropped files, and the native dialogs that choose them.

use std::path::{Path, PathBuf};

use super::{Picture, StudioApp};
use crate::graph::node::{ImageNode, LoraNode, ModelSource};
use crate::graph::{a1111, graph_in_png, Graph, Node, NodeId, GRAPH_CHUNK};
use crate::imageio::{read_png_text, write_png_texts, Rgb};

fn is_png(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

impl StudioApp {
    /// Opens a graph file or a PNG with a graph; errors say which file and why.
    /// Opens a graph file or a PNG carrying a graph, read on the background worker (the graph
    /// replaces the current one when it is read).
    pub fn open_path(&mut self, path: &Path) {
        let file = path.to_path_buf();
        self.read_file(path, move || {
            let graph = if is_png(&file) {
                match graph_in_png(&file) {
                    Some(graph) => graph,
                    None => Err(format!("{} carries no Latent Studio graph", file.display())),
                }
            } else {
                Graph::load(&file).map_err(|e| e.to_string())
            };
            graph.map(|g| Reading::Graph(Box::new(g)))
        });
    }

    /// Reads a file on the background worker; [`Self::poll_read_files`] acts on what it was.
    fn read_file(&mut self, path: &Path, read: impl FnOnce() -> Result<Reading, String> + Send + 'static) {
        let ctx = self.ctx.clone();
        let pending = self.worker.submit(move || ctx.request_repaint(), read);
        self.reading.push((path.to_path_buf(), pending));
    }

    /// Acts on the files the background worker finished reading: opens graphs, asks about
    /// dropped PNGs with a graph, applies A1111 parameters, adds Image nodes; reports failures.
    pub(super) fn poll_read_files(&mut self) {
        let mut i = 0;
        while i < self.reading.len() {
            let Some(result) = self.reading[i].1.poll_result() else {
                i += 1;
                continue;
            };
            let (path, _) = self.reading.remove(i);
            match result {
                Ok(Reading::Graph(graph)) => {
                    self.set_graph(*graph, true);
                    self.fit_graph = true;
                    self.notify(format!("opened {}", path.display()));
                }
                Ok(Reading::GraphPicture) => self.dropped_graph = Some(path),
                Ok(Reading::Parameters(text)) => {
                    let params = a1111::parse(&text);
                    let mut graph = self.graph.clone();
                    let changed = params.apply(graph.nodes.iter_mut().map(|n| &mut n.node));
                    self.set_graph(graph, true);
                    self.notify(format!("filled {changed} nodes from {}'s A1111 parameters", path.display()));
                }
                Ok(Reading::Picture) => self.insert_image_node(&path),
                Ok(Reading::Lora) => self.insert_lora_node(&path),
                Ok(Reading::Checkpoint) => self.use_checkpoint(&path),
                Err(e) => self.error(e),
            }
        }
    }

    pub(super) fn open_dialog(&mut self) {
        let dialog = rfd::FileDialog::new().add_filter("Latent Studio graph", &["json", "png"]);
        if let Some(path) = dialog.pick_file() {
            self.open_path(&path);
        }
    }

    pub(super) fn save_dialog(&mut self) {
        let dialog =
            rfd::FileDialog::new().add_filter("Latent Studio graph", &["json"]).set_file_name("graph.json");
        if let Some(path) = dialog.save_file() {
            match self.graph.save(&path) {
                Ok(()) => self.notify(format!("saved {}", path.display())),
                Err(e) => self.error(e.to_string()),
            }
        }
    }

    /// The picture of the first Output node.
    pub fn shown_picture(&self) -> Option<Picture> {
        let output = self.graph.nodes.iter().find(|n| matches!(n.node, Node::Output(_)))?;
        self.outputs.get(&output.id)?.picture.clone()
    }

    /// Saves the shown picture as a PNG with the graph and A1111 parameters embedded.
    pub fn save_image(&mut self, path: &Path) -> Result<(), String> {
        let picture = self.shown_picture().ok_or("there is no picture to save yet")?;
        write_picture(path, &picture, &self.graph).map_err(|e| e.to_string())
    }

    pub(super) fn save_image_dialog(&mut self) {
        let dialog = rfd::FileDialog::new().add_filter("PNG", &["png"]).set_file_name("latent-studio.png");
        if let Some(path) = dialog.save_file() {
            match self.save_image(&path) {
                Ok(()) => self.notify(format!("saved {}", path.display())),
                Err(e) => self.error(e),
            }
        }
    }

    /// Saves a finished render into the output folder, when one is set.
    pub(super) fn save_to_output_folder(&mut self, picture: &Picture) {
        let Some(folder) = self.settings.output_folder.clone() else { return };
        let n = std::fs::read_dir(&folder).map_or(0, |d| d.count());
        let path = folder.join(format!("latent-studio-{:05}.png", n + 1));
        if let Err(e) = std::fs::create_dir_all(&folder)
            .map_err(|e| e.to_string())
            .and_then(|()| write_picture(&path, picture, &self.graph).map_err(|e| e.to_string()))
        {
            self.error(format!("could not save into the output folder: {e}"));
        }
    }

    /// Writes the strip of `output` as a GIF or numbered PNGs, after asking where.
    pub(super) fn export_strip(&mut self, output: NodeId, gif: bool) {
        let Some(strip) = self.strips.get(&output) else { return };
        let keys = strip.keys.clone();
        let frames: Vec<Picture> = keys.iter().filter_map(|k| self.pictures.get(k)).collect();
        if frames.len() < keys.len() {
            self.error(format!("{} of {} frames are ready; wait for the rest", frames.len(), keys.len()));
            return;
        }
        let rgb: Vec<Rgb> =
            frames.iter().map(|p| Rgb { width: p.width, height: p.height, data: p.rgb.to_vec() }).collect();
        let result = if gif {
            let dialog =
                rfd::FileDialog::new().add_filter("GIF", &["gif"]).set_file_name("interpolation.gif");
            let Some(path) = dialog.save_file() else { return };
            crate::imageio::write_gif(&path, &rgb).map(|()| path)
        } else {
            let Some(folder) = rfd::FileDialog::new().pick_folder() else { return };
            write_frames(&folder, &rgb, &frames).map(|()| folder)
        };
        match result {
            Ok(path) => self.notify(format!("exported {} frames to {}", rgb.len(), path.display())),
            Err(e) => self.error(e.to_string()),
        }
    }

    pub(super) fn choose_model(&mut self, node: NodeId, folder: bool) {
        if let Some(path) = pick_folder_or_safetensors(folder) {
            self.edit_node(node, |n| {
                if let Node::Model(m) = n {
                    m.source = ModelSource::Path(path);
                }
            });
        }
    }

    pub(super) fn choose_vae(&mut self, node: NodeId, folder: bool) {
        if let Some(path) = pick_folder_or_safetensors(folder) {
            self.edit_node(node, |n| {
                if let Node::Model(m) = n {
                    m.vae = Some(path);
                }
            });
        }
    }

    pub(super) fn choose_lora(&mut self, node: NodeId) {
        let dialog = rfd::FileDialog::new().add_filter("LoRA", &["safetensors"]);
        if let Some(path) = dialog.pick_file() {
            self.edit_node(node, |n| {
                if let Node::Lora(l) = n {
                    l.path = Some(path);
                }
            });
        }
    }

    /// A LoRA node for `path`, wired between the first Model node and what that node fed (an
    /// unwired node when the graph has no Model node).
    fn insert_lora_node(&mut self, path: &Path) {
        let mut graph = self.graph.clone();
        let model = graph.nodes.iter().find(|n| matches!(n.node, Node::Model(_))).map(|n| (n.id, n.pos));
        let pos = model.map_or([0.0, 520.0], |(_, p)| [p[0], p[1] + 90.0]);
        let lora = LoraNode { path: Some(path.to_path_buf()), ..Default::default() };
        let id = graph.add(Node::Lora(lora), pos);
        if let Some((model, _)) = model {
            let pin = |node| crate::graph::PinRef { node, pin: 0 };
            let fed: Vec<_> = graph.wires.iter().filter(|w| w.from == pin(model)).map(|w| w.to).collect();
            let mut wired = graph.connect(pin(model), pin(id));
            for to in fed {
                wired = wired.and_then(|()| graph.connect(pin(id), to));
            }
            if let Err(e) = wired {
                self.error(e.to_string());
                return;
            }
        }
        self.set_graph(graph, true);
        self.selected = Some(id);
        self.notify(format!("added a LoRA node for {}", path.display()));
    }

    /// A dropped checkpoint becomes the first Model node's model.
    fn use_checkpoint(&mut self, path: &Path) {
        let Some(model) = self.graph.nodes.iter().find(|n| matches!(n.node, Node::Model(_))).map(|n| n.id)
        else {
            self.error(format!("{}: add a Model node to use this checkpoint", path.display()));
            return;
        };
        let file = path.to_path_buf();
        self.edit_node(model, |n| {
            if let Node::Model(m) = n {
                m.source = ModelSource::Path(file);
            }
        });
        self.notify(format!("the Model node now runs {}", path.display()));
    }

    pub(super) fn choose_image(&mut self, node: NodeId) {
        let dialog = rfd::FileDialog::new().add_filter("picture", &["png", "jpg", "jpeg", "bmp", "webp"]);
        if let Some(path) = dialog.pick_file() {
            self.edit_node(node, |n| {
                if let Node::Image(i) = n {
                    i.path = Some(path);
                }
            });
        }
    }

    /// Adds an Image node with `path` wired into the canvas's base input.
    pub(super) fn load_canvas_base(&mut self, canvas: NodeId) {
        let dialog = rfd::FileDialog::new().add_filter("picture", &["png", "jpg", "jpeg", "bmp", "webp"]);
        let Some(path) = dialog.pick_file() else { return };
        let mut graph = self.graph.clone();
        let pos =
            graph.nodes.iter().find(|n| n.id == canvas).map_or([0.0; 2], |n| [n.pos[0] - 200.0, n.pos[1]]);
        let image = graph.add(Node::Image(ImageNode { path: Some(path), ..Default::default() }), pos);
        let wire = graph.connect(
            crate::graph::PinRef { node: image, pin: 0 },
            crate::graph::PinRef { node: canvas, pin: 0 },
        );
        match wire {
            Ok(()) => self.set_graph(graph, true),
            Err(e) => self.error(e.to_string()),
        }
    }

    /// Files dropped on the window.
    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for path in dropped {
            self.drop_file(&path);
        }
    }

    /// A file dropped on the window: a PNG with our graph asks what to do; a PNG with A1111
    /// parameters fills the prompt and sampler; a LoRA file adds a LoRA node after the model, a
    /// single-file checkpoint becomes the model; any other picture becomes an Image node.
    /// Read on the background worker.
    pub fn drop_file(&mut self, path: &Path) {
        let file = path.to_path_buf();
        self.read_file(path, move || {
            if is_safetensors(&file) {
                return match crate::models::lora::is_lora_file(&file) {
                    Ok(true) => Ok(Reading::Lora),
                    Ok(false) => Ok(Reading::Checkpoint),
                    Err(e) => Err(e.to_string()),
                };
            }
            if is_png(&file) {
                if graph_in_png(&file).is_some() {
                    return Ok(Reading::GraphPicture);
                }
                let texts = read_png_text(&file).unwrap_or_default();
                if let Some((_, text)) = texts.into_iter().find(|(k, _)| k == "parameters") {
                    return Ok(Reading::Parameters(text));
                }
            }
            read_picture(&file)
        });
    }

    /// Reads `path` on the background worker; an Image node for it is added once it decoded.
    fn add_image_node(&mut self, path: &Path) {
        let file = path.to_path_buf();
        self.read_file(path, move || read_picture(&file));
    }

    fn insert_image_node(&mut self, path: &Path) {
        let mut graph = self.graph.clone();
        let image = ImageNode { path: Some(path.to_path_buf()), ..Default::default() };
        let id = graph.add(Node::Image(image), [0.0, 520.0]);
        self.set_graph(graph, true);
        self.selected = Some(id);
        self.notify(format!("added an Image node for {}", path.display()));
    }

    /// Answers a dropped PNG that carries a graph: open the graph, or use the picture.
    pub fn answer_dropped(&mut self, open_graph: bool) {
        let Some(path) = self.dropped_graph.take() else { return };
        if open_graph {
            self.open_path(&path);
        } else {
            self.add_image_node(&path);
        }
    }

    pub(super) fn dropped_file_modal(&mut self, ctx: &egui::Context) {
        let Some(path) = self.dropped_graph.clone() else { return };
        let mut answer = None;
        let modal = egui::Modal::new(egui::Id::new("dropped-png")).show(ctx, |ui| {
            ui.label(format!("{} was made by Latent Studio and carries its graph.", path.display()));
            ui.horizontal(|ui| {
                if ui.button("Open its graph").clicked() {
                    answer = Some(Some(true));
                }
                if ui.button("Use the picture").clicked() {
                    answer = Some(Some(false));
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(None);
                }
            });
        });
        if modal.should_close() && answer.is_none() {
            answer = Some(None);
        }
        match answer {
            Some(Some(open)) => self.answer_dropped(open),
            Some(None) => self.dropped_graph = None,
            None => {}
        }
    }
}

/// What a file handed to the studio turned out to be, read on the background worker.
pub(super) enum Reading {
    /// A graph to open.
    Graph(Box<Graph>),
    /// A dropped PNG carrying a graph: ask whether to open it or use the picture.
    GraphPicture,
    /// A dropped PNG's A1111 `parameters` text.
    Parameters(String),
    /// A picture that decodes: becomes an Image node.
    Picture,
    /// A dropped LoRA file: becomes a LoRA node.
    Lora,
    /// A dropped `.safetensors` file that is no LoRA: the Model node's checkpoint.
    Checkpoint,
}

/// A native dialog for a folder, or for a `.safetensors` file.
fn pick_folder_or_safetensors(folder: bool) -> Option<PathBuf> {
    if folder {
        rfd::FileDialog::new().pick_folder()
    } else {
        rfd::FileDialog::new().add_filter("safetensors", &["safetensors"]).pick_file()
    }
}

fn read_picture(path: &Path) -> Result<Reading, String> {
    crate::imageio::read_image(path).map(|_| Reading::Picture).map_err(|e| e.to_string())
}

/// Writes a picture with its graph and parameters.
fn write_picture(path: &Path, picture: &Picture, graph: &Graph) -> Result<(), crate::imageio::ImageError> {
    let rgb = Rgb { width: picture.width, height: picture.height, data: picture.rgb.to_vec() };
    let json = graph.to_json();
    write_png_texts(path, &rgb, &[("parameters", &picture.parameters), (GRAPH_CHUNK, &json)])
}

/// Writes frames as `frame-001.png`, ... with their parameters.
fn write_frames(folder: &Path, rgb: &[Rgb], frames: &[Picture]) -> Result<(), crate::imageio::ImageError> {
    for (i, (image, picture)) in rgb.iter().zip(frames).enumerate() {
        let path = folder.join(format!("frame-{:03}.png", i + 1));
        write_png_texts(&path, image, &[("parameters", &picture.parameters)])?;
    }
    Ok(())
}
