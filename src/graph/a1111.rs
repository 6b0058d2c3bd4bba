//! AUTOMATIC1111's `parameters` text (what its PNGs carry): reading it into a graph's prompt,
//! schedule and sampler, so a dropped A1111 picture sets up the same render.

use super::node::{MAX_GUIDANCE, MAX_LORA_STRENGTH, MAX_STEPS};
use super::Node;
use crate::core::SamplerKind;

/// The settings a `parameters` text holds (each may be missing).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parameters {
    /// The prompt (everything before the "Negative prompt:" and settings lines).
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// `Steps:`.
    pub steps: Option<usize>,
    /// `Sampler:`, when it names one we have.
    pub sampler: Option<SamplerKind>,
    /// `CFG scale:`.
    pub guidance: Option<f64>,
    /// `Seed:`.
    pub seed: Option<u64>,
    /// The prompt's `<lora:NAME:STRENGTH>` tags (taken out of the prompt): file stems and
    /// strengths.
    pub loras: Vec<(String, f64)>,
}

/// Takes A1111's `<lora:NAME[:STRENGTH]>` tags out of a prompt.
fn take_lora_tags(prompt: &str) -> (String, Vec<(String, f64)>) {
    let (mut rest, mut loras, mut text) = (prompt, Vec::new(), String::new());
    while let Some(start) = rest.find("<lora:") {
        let Some(len) = rest[start..].find('>') else { break };
        text.push_str(&rest[..start]);
        let tag = &rest[start + "<lora:".len()..start + len];
        let (name, strength) = match tag.rsplit_once(':') {
            Some((name, w)) => (name, w.trim().parse::<f64>().ok()),
            None => (tag, Some(1.0)),
        };
        if let Some(w) = strength.filter(|w| w.is_finite() && w.abs() <= MAX_LORA_STRENGTH) {
            loras.push((name.trim().to_string(), w));
        }
        rest = &rest[start + len + 1..];
    }
    text.push_str(rest);
    (text.split_whitespace().collect::<Vec<_>>().join(" ").replace(" ,", ","), loras)
}

/// Parses A1111's format: prompt lines, an optional `Negative prompt: …` line, and a last line
/// of `Key: value` pairs separated by commas.
pub fn parse(text: &str) -> Parameters {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut out = Parameters::default();
    if lines.last().is_some_and(|l| l.contains("Steps:")) {
        let settings = lines.pop().unwrap_or_default();
        for pair in settings.split(", ") {
            let Some((key, value)) = pair.split_once(": ") else { continue };
            let value = value.trim();
            match key.trim() {
                // Values the studio cannot run are left out, as missing ones are.
                "Steps" => out.steps = value.parse().ok().filter(|n| (1..=MAX_STEPS).contains(n)),
                "CFG scale" => {
                    out.guidance =
                        value.parse().ok().filter(|g: &f64| g.is_finite() && g.abs() <= MAX_GUIDANCE)
                }
                "Seed" => out.seed = value.parse().ok(),
                "Sampler" => out.sampler = SamplerKind::ALL.into_iter().find(|k| k.a1111_name() == value),
                _ => {}
            }
        }
    }
    let negative_at = lines.iter().position(|l| l.starts_with("Negative prompt:"));
    if let Some(at) = negative_at {
        let negative: Vec<&str> = lines.drain(at..).collect();
        out.negative = negative.join("\n").trim_start_matches("Negative prompt:").trim().to_string();
    }
    let prompt = lines.join("\n");
    out.prompt = if prompt.contains("<lora:") {
        let (prompt, loras) = take_lora_tags(&prompt);
        out.loras = loras;
        prompt
    } else {
        prompt.trim().to_string()
    };
    out
}

impl Parameters {
    /// Writes these settings into the first Prompt, Schedule and Sampler nodes of `nodes`.
    /// Returns how many nodes changed.
    pub fn apply<'a>(&self, nodes: impl Iterator<Item = &'a mut Node>) -> usize {
        let (mut prompt, mut schedule, mut sampler) = (false, false, false);
        let mut changed = 0;
        for node in nodes {
            match node {
                Node::Prompt(p) if !prompt => {
                    prompt = true;
                    p.prompt = self.prompt.clone();
                    p.negative = self.negative.clone();
                    changed += 1;
                }
                Node::Schedule(s) if !schedule => {
                    schedule = true;
                    s.steps = self.steps.unwrap_or(s.steps);
                    changed += 1;
                }
                Node::Sampler(s) if !sampler => {
                    sampler = true;
                    s.algorithm = self.sampler.unwrap_or(s.algorithm);
                    s.guidance = self.guidance.unwrap_or(s.guidance);
                    s.seed = self.seed.unwrap_or(s.seed);
                    changed += 1;
                }
                // A LoRA node whose file the text names takes its strength.
                Node::Lora(l) => {
                    let stem =
                        l.path.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
                    if let Some((_, w)) = self.loras.iter().find(|(name, _)| Some(name) == stem.as_ref()) {
                        l.strength = *w;
                        changed += 1;
                    }
                }
                _ => {}
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;

    #[test]
    fn a1111_text_is_read_into_prompt_schedule_and_sampler() {
        // As AUTOMATIC1111 1.x writes it.
        let text = "a lake at dawn,\nwith pines\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, CFG scale: 6.5, \
                    Seed: 1234, Size: 512x512, Model hash: abc";
        let p = parse(text);
        assert_eq!(p.prompt, "a lake at dawn,\nwith pines");
        assert_eq!(p.negative, "blurry");
        assert_eq!((p.steps, p.guidance, p.seed), (Some(30), Some(6.5), Some(1234)));
        assert_eq!(p.sampler, Some(SamplerKind::EulerA));
        let mut graph = Graph::first_start();
        assert_eq!(p.apply(graph.nodes.iter_mut().map(|n| &mut n.node)), 3);
        let sampler = graph.nodes.iter().find_map(|n| match &n.node {
            Node::Sampler(s) => Some(s.clone()),
            _ => None,
        });
        assert_eq!(
            sampler.map(|s| (s.algorithm, s.guidance, s.seed)),
            Some((SamplerKind::EulerA, 6.5, 1234))
        );
    }

    #[test]
    fn lora_tags_leave_the_prompt_and_set_the_strength_of_the_lora_node_with_that_file() {
        let p = parse("a lake <lora:ink_style:0.6>, at dawn <lora:bad:x> <lora:other>\nSteps: 20");
        assert_eq!(p.prompt, "a lake, at dawn");
        assert_eq!(p.loras, [("ink_style".to_string(), 0.6), ("other".to_string(), 1.0)]);
        let mut node = Node::Lora(crate::graph::node::LoraNode {
            path: Some("/x/ink_style.safetensors".into()),
            strength: 1.0,
        });
        assert_eq!(p.apply(std::iter::once(&mut node)), 1);
        assert!(matches!(node, Node::Lora(l) if l.strength == 0.6));
    }

    #[test]
    fn a_prompt_without_settings_is_all_prompt() {
        assert_eq!(parse("just words").prompt, "just words");
        assert_eq!(parse("just words").steps, None);
    }

    #[test]
    fn settings_the_studio_cannot_run_are_left_out() {
        let p = parse("a lake\nSteps: 4294967296000, CFG scale: NaN, Seed: 7");
        assert_eq!((p.steps, p.guidance, p.seed), (None, None, Some(7)));
        let p = parse("a lake\nSteps: 0, CFG scale: inf");
        assert_eq!((p.steps, p.guidance), (None, None));
    }
}
