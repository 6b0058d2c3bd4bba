//! Seeded structured fuzzing of every file a user can hand the studio: graph JSON (alone and in a
//! PNG's `latent-studio-graph` chunk, strokes included), PNG pictures and A1111 `parameters`
//! texts, safetensors checkpoints (single files and a folder's component weights), a model
//! folder's JSON (`model_index.json`, component `config.json`s, `scheduler_config.json`), and
//! tokenizer files. Each case mutates a real file (values made huge, negative, non-finite, empty
//! or of the wrong type, keys removed, arrays grown, bytes flipped, files truncated) and must end
//! in a result or an error that says something, within a time limit, without a panic.
//!
//! `cargo test --test fuzz` runs a short round; the campaign runs `LATENT_STUDIO_FUZZ_CASES` cases
//! per format (default 100000), each format stopping early after `LATENT_STUDIO_FUZZ_SECS` seconds
//! when that is set, and only the formats `LATENT_STUDIO_FUZZ_FORMATS` lists (comma-separated
//! names as printed, without `fuzz_`) when that is set; `LATENT_STUDIO_FUZZ_TRACE` prints each
//! case's seed before it runs (for a case that takes the whole process down), and
//! `LATENT_STUDIO_FUZZ_SEED` sets the first seed (default 2^32) to replay one:
//! `LATENT_STUDIO_FUZZ_CASES=100000 cargo test --release --test fuzz -- --ignored --nocapture`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use latent_studio::graph::{a1111, eval, graph_in_png, Graph, Node, GRAPH_CHUNK};
use latent_studio::imageio::{read_image, write_png_texts, Rgb};
use latent_studio::models::clip_tokenizer::ClipTokenizer;
use latent_studio::models::pipeline::{LoadOptions, Pipeline, Request};
use latent_studio::sketch::{Layer, Stroke, WordRegion};
use serde_json::Value;

mod common;
use common::copy_dir;

/// The most one case may take; a case still running then is a hang.
const LIMIT: Duration = Duration::from_secs(20);

/// SplitMix64, seeded per case so that a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Numbers at the edges of what files hold.
fn extreme(rng: &mut Rng) -> Value {
    let pick = [
        "0",
        "-1",
        "1",
        "-0.5",
        "0.5",
        "2",
        "65536",
        "4294967296",
        "18446744073709551615",
        "-9223372036854775808",
        "1e308",
        "-1e308",
        "1e-45",
        "3.4e38",
        "1e40",
    ];
    serde_json::from_str(pick[rng.below(pick.len())]).unwrap_or(Value::Null)
}

/// A value of another type than the one it replaces.
fn wrong_type(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(0.5)),
        2 => Value::String(String::new()),
        3 => Value::String("é../../x\u{0}".repeat(1 + rng.below(300))),
        4 => Value::Array(vec![]),
        5 => serde_json::json!({}),
        _ => serde_json::json!([[1, 2], {"a": null}]),
    }
}

/// Paths (object keys and array indices) to every value in `v`.
fn paths(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(Value::String(k.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(Value::from(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, key| match key {
        Value::String(k) => v.get_mut(k.as_str()),
        Value::Number(i) => v.get_mut(i.as_u64()? as usize),
        _ => None,
    })
}

/// One to three structural mutations of a JSON document.
fn mutate_json(v: &mut Value, rng: &mut Rng) {
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        let path = all[rng.below(all.len())].clone();
        let op = rng.below(6);
        if op == 4 && !path.is_empty() {
            // Remove the value from its parent.
            let (last, parent) = path.split_last().unwrap_or((&Value::Null, &[]));
            match (at_mut(v, parent), last) {
                (Some(Value::Object(map)), Value::String(k)) => {
                    map.remove(k);
                }
                (Some(Value::Array(items)), Value::Number(i)) => {
                    let i = i.as_u64().unwrap_or(0) as usize;
                    if i < items.len() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
            continue;
        }
        let Some(target) = at_mut(v, &path) else { continue };
        match op {
            0 | 1 => *target = extreme(rng),
            2 => *target = wrong_type(rng),
            3 => {
                // Grow an array by copies of one of its items (or wrap the value in one).
                let item = match &*target {
                    Value::Array(items) if !items.is_empty() => items[rng.below(items.len())].clone(),
                    other => other.clone(),
                };
                let n = [2, 10, 1000][rng.below(3)];
                match target {
                    Value::Array(items) => items.extend(std::iter::repeat_n(item, n)),
                    other => *other = Value::Array(vec![item; n]),
                }
            }
            _ => {
                if let Value::Number(n) = target {
                    // Nudge a number: negate, scale up, or off by one.
                    let x = n.as_f64().unwrap_or(0.0);
                    let y = [-x, x * 1e6, x + 1.0, x - 1.0, x / 3.0][rng.below(5)];
                    *target = serde_json::Number::from_f64(y).map_or(Value::Null, Value::Number);
                } else {
                    *target = extreme(rng);
                }
            }
        }
    }
}

/// JSON text of a mutated document, sometimes cut short.
fn mutated_json_text(base: &Value, rng: &mut Rng) -> String {
    let mut v = base.clone();
    mutate_json(&mut v, rng);
    let text = v.to_string();
    if rng.chance(0.1) {
        let mut cut = rng.below(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text[..cut].to_string()
    } else {
        text
    }
}

/// Byte-level damage: truncation, flipped bytes, a random little-endian u64, inserted junk.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes.truncate(at),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                let value = [0, u64::MAX, 1 << 32, rng.next(), bytes.len() as u64 * 2][rng.below(5)];
                let end = (at + 8).min(bytes.len());
                bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            }
            _ => {
                let junk: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk);
            }
        }
    }
}

/// A safetensors file with its header's JSON mutated (dtypes, shapes, offsets, metadata) or its
/// bytes damaged.
fn mutated_safetensors(original: &[u8], rng: &mut Rng) -> Vec<u8> {
    let header_len = original.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let header: Option<Value> =
        original.get(8..8 + header_len as usize).and_then(|h| serde_json::from_slice(h).ok());
    let (Some(mut header), false) = (header, rng.chance(0.25)) else {
        let mut bytes = original.to_vec();
        // Damage the header's region most of the time: that is where the parsing is.
        let keep = (header_len as usize + 8).min(bytes.len());
        let mut head = bytes[..keep].to_vec();
        mutate_bytes(&mut head, rng);
        bytes.splice(..keep, head);
        return bytes;
    };
    if rng.chance(0.5) {
        // Aim at one tensor's entry.
        let names: Vec<String> = header.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let name = &names[rng.below(names.len())];
        if let Some(entry) = header.get_mut(name) {
            match rng.below(3) {
                0 => {
                    let dtypes = ["F16", "BF16", "F32", "F64", "I64", "U8", "BOOL", "F8_E4M3", "XYZ", ""];
                    entry["dtype"] = Value::from(dtypes[rng.below(dtypes.len())]);
                }
                1 => {
                    let shapes = [
                        serde_json::json!([]),
                        serde_json::json!([0]),
                        serde_json::json!([4294967296u64, 4294967296u64]),
                        serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 1]),
                        serde_json::json!([3]),
                    ];
                    entry["shape"] = shapes[rng.below(shapes.len())].clone();
                }
                _ => mutate_json(entry, rng),
            }
        }
    } else {
        mutate_json(&mut header, rng);
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(original.get(8 + header_len as usize..).unwrap_or(&[]));
    out
}

/// What one case did.
enum Outcome {
    /// A result, or an error with a message.
    Ended,
    /// A panic, an empty error, or no end within [`LIMIT`].
    Failed(String),
}

/// Runs `case` on its own thread: a panic or a run past [`LIMIT`] is a failure. `Err` results
/// must say something.
fn bounded(case: impl FnOnce() -> Result<(), String> + Send + 'static) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(Ok(()))) => Outcome::Ended,
        Ok(Ok(Err(message))) if !message.trim().is_empty() => Outcome::Ended,
        Ok(Ok(Err(_))) => Outcome::Failed("an empty error".into()),
        Ok(Err(panic)) => Outcome::Failed(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or(panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Err(_) => Outcome::Failed(format!("still running after {LIMIT:?}")),
    }
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latent-studio-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A graph with every node kind and a canvas with several strokes and two word regions (one
/// painted): what graph files hold.
fn rich_graph() -> Value {
    let mut graph = Graph::first_start();
    for n in &mut graph.nodes {
        if let Node::Canvas(canvas) = &mut n.node {
            canvas.regions = vec![
                WordRegion { phrase: "a bright sun".into(), ..WordRegion::default() },
                WordRegion { phrase: "a calm lake".into(), weight: 2.0, hidden: true },
            ];
            let stroke = Stroke {
                layer: Layer::Region(0),
                points: vec![[0.2, 0.2, 1.0], [0.3, 0.25, 0.5]],
                ..canvas.brush.clone()
            };
            canvas.push(stroke);
        }
    }
    for node in Node::all_kinds() {
        graph.add(node, [10.0, 20.0]);
    }
    serde_json::from_str(&graph.to_json()).unwrap_or(Value::Null)
}

/// A graph file's whole life in the studio: parsed and checked, its canvases rasterised at the
/// built-in model's size, and its outputs planned.
fn open_graph(text: &str) -> Result<(), String> {
    let graph = Graph::from_json(text, "fuzz.json").map_err(|e| e.to_string())?;
    for n in &graph.nodes {
        if let Node::Canvas(canvas) = &n.node {
            let raster = canvas.rasterize(128, 128, None);
            assert_eq!(raster.rgb.len(), 128 * 128 * 3);
        }
    }
    let _ = eval::plans(&graph);
    Ok(())
}

/// A model folder loaded and, when it loads, rendering two steps.
fn load_and_render(dir: &Path) -> Result<(), String> {
    let pipeline = Pipeline::load(dir, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let (sampler, _) = pipeline.default_sampler();
    let request = Request {
        prompt: "a lake".into(),
        negative: String::new(),
        sampler,
        options: Default::default(),
        steps: 2,
        guidance: Default::default(),
        seed: 1,
        size: None,
        init_latent: None,
        init_image: None,
        prompt_to: None,
        regions: Vec::new(),
    };
    pipeline.render(&request, &mut |_| ControlFlow::Continue(())).map_err(|e| e.to_string())?;
    Ok(())
}

/// One case, ready to run.
type Case = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// A format: its name and one case per seed (`dir` is its own scratch folder).
struct Format {
    name: &'static str,
    case: fn(&mut Rng, &Path) -> Case,
}

fn formats() -> Vec<Format> {
    vec![
        Format {
            name: "graph_json",
            case: |rng, _| {
                let text = mutated_json_text(&rich_graph(), rng);
                Box::new(move || open_graph(&text))
            },
        },
        Format {
            name: "graph_png",
            case: |rng, dir| {
                let path = dir.join(format!("g{}.png", rng.next() % 4));
                let json = mutated_json_text(&rich_graph(), rng);
                let image = Rgb { width: 4, height: 4, data: vec![90; 48] };
                let written =
                    write_png_texts(&path, &image, &[(GRAPH_CHUNK, &json), ("parameters", "a lake")]);
                if let (Ok(()), true) = (&written, rng.chance(0.3)) {
                    // Damage the file itself too.
                    let mut bytes = std::fs::read(&path).unwrap_or_default();
                    mutate_bytes(&mut bytes, rng);
                    let _ = std::fs::write(&path, bytes);
                }
                Box::new(move || {
                    written.map_err(|e| e.to_string())?;
                    let _ = read_image(&path);
                    match graph_in_png(&path) {
                        Some(graph) => graph.map(|_| ()),
                        None => Ok(()),
                    }
                })
            },
        },
        Format {
            name: "png_picture",
            case: |rng, dir| {
                let path = dir.join(format!("p{}.png", rng.next() % 4));
                let mut bytes = std::fs::read(fixture("single_file/case0.png")).unwrap_or_default();
                mutate_bytes(&mut bytes, rng);
                let written = std::fs::write(&path, bytes);
                Box::new(move || {
                    written.map_err(|e| e.to_string())?;
                    let picture = read_image(&path).map_err(|e| e.to_string())?;
                    assert_eq!(picture.data.len(), picture.width * picture.height * 3);
                    Ok(())
                })
            },
        },
        Format {
            name: "a1111_parameters",
            case: |rng, _| {
                let mut text = "a lake at dawn\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, \
                                CFG scale: 6.5, Seed: 1234, Size: 512x512"
                    .to_string()
                    .into_bytes();
                mutate_bytes(&mut text, rng);
                let mut text = String::from_utf8_lossy(&text).into_owned();
                for _ in 0..rng.below(3) {
                    let key = ["Steps", "CFG scale", "Seed", "Sampler"][rng.below(4)];
                    let value = match extreme(rng) {
                        Value::Number(n) => n.to_string(),
                        _ => "NaN".into(),
                    };
                    text.push_str(&format!(", {key}: {value}"));
                }
                Box::new(move || {
                    // Whatever the text says, the graph it sets up is one the studio can run.
                    let mut graph = Graph::first_start();
                    a1111::parse(&text).apply(graph.nodes.iter_mut().map(|n| &mut n.node));
                    graph.validate().map_err(|e| format!("A1111 text made an invalid graph: {e}"))?;
                    Ok(())
                })
            },
        },
        Format {
            name: "single_file_safetensors",
            case: |rng, dir| {
                let path = dir.join("model.safetensors");
                let original = std::fs::read(fixture("single_file/tiny_sd1.safetensors")).unwrap_or_default();
                let written = std::fs::write(&path, mutated_safetensors(&original, rng));
                Box::new(move || {
                    written.map_err(|e| e.to_string())?;
                    Pipeline::load(&path, &LoadOptions::default()).map(|_| ()).map_err(|e| e.to_string())
                })
            },
        },
        Format { name: "component_safetensors", case: |rng, dir| model_case(rng, dir, Target::Weights) },
        Format { name: "model_json", case: |rng, dir| model_case(rng, dir, Target::Json) },
        Format { name: "tokenizer_files", case: |rng, dir| model_case(rng, dir, Target::Tokenizer) },
    ]
}

/// Which files of a model folder a case damages.
#[derive(Clone, Copy)]
enum Target {
    Weights,
    Json,
    Tokenizer,
}

/// A fresh copy of the tiny model in `dir/model` (made once per format), one of its files
/// damaged; the case loads it (tokenizer cases also tokenise) and renders when it loads.
fn model_case(rng: &mut Rng, dir: &Path, target: Target) -> Case {
    let model = dir.join("model");
    let pristine = fixture("tiny_sd/model");
    if !model.exists() {
        copy_dir(&pristine, &model);
    }
    let files: &[&str] = match target {
        Target::Weights => &[
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
        ],
        Target::Json => &[
            "model_index.json",
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "scheduler/scheduler_config.json",
        ],
        Target::Tokenizer => {
            &["tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json"]
        }
    };
    // Every case starts from the pristine folder: restore what the last case damaged.
    for rel in files {
        let _ = std::fs::copy(pristine.join(rel), model.join(rel));
    }
    let rel = files[rng.below(files.len())];
    let original = std::fs::read(pristine.join(rel)).unwrap_or_default();
    let damaged = match target {
        Target::Weights => mutated_safetensors(&original, rng),
        _ => match serde_json::from_slice::<Value>(&original) {
            Ok(v) if rng.chance(0.85) => mutated_json_text(&v, rng).into_bytes(),
            _ => {
                let mut bytes = original;
                mutate_bytes(&mut bytes, rng);
                bytes
            }
        },
    };
    let written = std::fs::write(model.join(rel), damaged);
    Box::new(move || {
        written.map_err(|e| e.to_string())?;
        if let Target::Tokenizer = target {
            let tokenizer =
                ClipTokenizer::from_dir(&model.join("tokenizer"), 77).map_err(|e| e.to_string())?;
            let _ = tokenizer.encode("a lake at dawn with pine trees, élan 😀");
        }
        load_and_render(&model)
    })
}

/// Runs `cases` seeded cases of every format (fewer where a format's `budget` of time runs out
/// first); prints each format's executions; panics listing the failures with their seeds.
fn campaign(cases: usize, first_seed: u64, budget: Option<Duration>, only: &[String]) {
    let mut failures = Vec::new();
    // Each case's seed on stderr before it runs, for a case that takes the process down.
    let trace = std::env::var_os("LATENT_STUDIO_FUZZ_TRACE").is_some();
    for format in formats().into_iter().filter(|f| only.is_empty() || only.iter().any(|o| o == f.name)) {
        let dir = scratch(format.name);
        let start = Instant::now();
        let (mut ran, mut failed) = (0, 0);
        for i in 0..cases {
            if budget.is_some_and(|b| start.elapsed() > b) {
                break;
            }
            let seed = first_seed + i as u64;
            let mut rng = Rng(seed ^ 0xF022_5EED);
            if trace {
                eprintln!("{} seed {seed}", format.name);
            }
            ran += 1;
            if let Outcome::Failed(why) = bounded((format.case)(&mut rng, &dir)) {
                failed += 1;
                if failures.len() < 40 {
                    failures.push(format!("{} seed {seed}: {why}", format.name));
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"fuzz_{}\",\"cases\":{ran},\"failed\":{failed},\"secs\":{secs:.1},\"per_sec\":{:.0}}}",
            format.name,
            ran as f64 / secs.max(1e-9)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_format_survives_a_short_seeded_round() {
    campaign(60, 0, None, &[]);
}

#[test]
#[ignore = "the long campaign: LATENT_STUDIO_FUZZ_CASES=100000 cargo test --release --test fuzz -- --ignored"]
fn campaign_of_every_format() {
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = number("LATENT_STUDIO_FUZZ_CASES").unwrap_or(100_000) as usize;
    let budget = number("LATENT_STUDIO_FUZZ_SECS").map(Duration::from_secs);
    let only: Vec<String> = std::env::var("LATENT_STUDIO_FUZZ_FORMATS")
        .map(|v| v.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let first = number("LATENT_STUDIO_FUZZ_SEED").unwrap_or(1 << 32);
    campaign(cases, first, budget, &only);
}
