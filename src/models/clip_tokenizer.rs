//! CLIP's byte-level BPE tokenizer (Radford et al. 2021; OpenAI's `simple_tokenizer.py`), read
//! from either layout found in model folders: `vocab.json` + `merges.txt`, or a tokenizers-library
//! `tokenizer.json`. Lowercases, splits with CLIP's pattern, marks word ends with `</w>`, adds
//! start and end tokens and pads to the model's length, as transformers' `CLIPTokenizer` does.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

/// Reading the tokenizer files failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TokenizerError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// OpenAI's BPE merges (`bpe_simple_vocab_16e6.txt.gz`, MIT, as shipped by open-clip-torch).
const OPENAI_BPE_GZ: &[u8] = include_bytes!("../../assets/clip/bpe_simple_vocab_16e6.txt.gz");

/// A CLIP BPE tokenizer.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    pattern: Regex,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

/// Token ids of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipEncoded {
    /// `max_len` ids: start, tokens, end, padding.
    pub ids: Vec<u32>,
    /// Whether tokens past `max_len - 2` were dropped (diffusers warns about this).
    pub truncated: bool,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars = [' '; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            printable.push(b);
            255 + extra
        };
        chars[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    chars
}

fn error(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError { path: path.display().to_string(), reason: reason.into() }
}

impl ClipTokenizer {
    /// Builds the tokenizer from a vocabulary and merge list.
    pub fn new(
        encoder: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        pad_token: &str,
        max_len: usize,
    ) -> Result<Self, String> {
        let id = |t: &str| encoder.get(t).copied().ok_or_else(|| format!("the vocabulary has no {t}"));
        let (bos, eos) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        let pad = id(pad_token)?;
        let ranks = merges.into_iter().enumerate().map(|(i, m)| (m, i)).collect();
        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| e.to_string())?;
        Ok(Self { encoder, ranks, byte_chars: bytes_to_unicode(), pattern, bos, eos, pad, max_len })
    }

    /// Reads `vocab.json` and `merges.txt` from `dir`, or `tokenizer.json` when those are absent;
    /// the pad token comes from `special_tokens_map.json` or `tokenizer_config.json` (default
    /// `<|endoftext|>`, as SD 1.x; SD 2.x pads with `!`).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, TokenizerError> {
        let pad = pad_token(dir);
        let vocab_path = dir.join("vocab.json");
        let (encoder, merges) = if vocab_path.exists() {
            let encoder: HashMap<String, u32> = read_json(&vocab_path)?;
            let merges_path = dir.join("merges.txt");
            let text =
                std::fs::read_to_string(&merges_path).map_err(|e| error(&merges_path, e.to_string()))?;
            let merges = text
                .lines()
                .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
                .map(|l| {
                    let mut parts = l.split(' ');
                    match (parts.next(), parts.next()) {
                        (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                        _ => Err(error(&merges_path, format!("bad merge line {l:?}"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            (encoder, merges)
        } else {
            let json_path = dir.join("tokenizer.json");
            let value: serde_json::Value = read_json(&json_path)?;
            let model = &value["model"];
            if model["type"] != "BPE" {
                return Err(error(&json_path, "not a BPE tokenizer"));
            }
            let encoder: HashMap<String, u32> = serde_json::from_value(model["vocab"].clone())
                .map_err(|e| error(&json_path, e.to_string()))?;
            let merges = model["merges"]
                .as_array()
                .ok_or_else(|| error(&json_path, "no merges"))?
                .iter()
                .map(|m| match (m.as_str(), m.as_array()) {
                    (Some(s), _) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                    (_, Some(pair)) => {
                        Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.as_str()?.to_string()))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| error(&json_path, "malformed merges"))?;
            (encoder, merges)
        };
        Self::new(encoder, merges, &pad, max_len).map_err(|reason| error(dir, reason))
    }

    /// OpenAI's CLIP vocabulary (49408 tokens), shipped with the studio for single-file
    /// checkpoints, which carry no tokenizer. `pad_token` is `<|endoftext|>` for SD 1.x and `!`
    /// for SD 2.x.
    pub fn openai(pad_token: &str, max_len: usize) -> Result<Self, String> {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(OPENAI_BPE_GZ).read_to_string(&mut text).map_err(|e| e.to_string())?;
        // As OpenAI's simple_tokenizer: skip the header, keep 49152 - 256 - 2 merges.
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(49152 - 256 - 2)
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect();
        // The byte characters in GPT-2's order: printable bytes first, then the others.
        let map = bytes_to_unicode();
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let order = (0..=255u8).filter(|&b| printable(b)).chain((0..=255u8).filter(|&b| !printable(b)));
        let bytes: Vec<char> = order.map(|b| map[b as usize]).collect();
        let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
        vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let encoder = vocab.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        Self::new(encoder, merges, pad_token, max_len)
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// Ids per prompt.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The end-of-text id, which closes every prompt's tokens.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    fn bpe(&self, word: &str) -> Vec<String> {
        let chars: Vec<char> = word.chars().collect();
        let Some((last, rest)) = chars.split_last() else {
            return Vec::new();
        };
        let mut parts: Vec<String> = rest.iter().map(|c| c.to_string()).collect();
        parts.push(format!("{last}</w>"));
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, i)))
                .min();
            let Some((_, at)) = best else { break };
            let (a, b) = (parts[at].clone(), parts[at + 1].clone());
            let mut merged = Vec::with_capacity(parts.len());
            let mut i = 0;
            while i < parts.len() {
                if i + 1 < parts.len() && parts[i] == a && parts[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(parts[i].clone());
                    i += 1;
                }
            }
            parts = merged;
        }
        parts
    }

    /// Encodes `prompt` to `max_len` ids.
    pub fn encode(&self, prompt: &str) -> ClipEncoded {
        let clean = prompt.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let mut tokens = Vec::new();
        for m in self.pattern.find_iter(&clean) {
            let word: String = m.as_str().bytes().map(|b| self.byte_chars[b as usize]).collect();
            tokens.extend(self.bpe(&word).iter().filter_map(|p| self.encoder.get(p).copied()));
        }
        let room = self.max_len.saturating_sub(2);
        let truncated = tokens.len() > room;
        tokens.truncate(room);
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(tokens);
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        ClipEncoded { ids, truncated }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(path, e.to_string()))
}

/// The pad token a tokenizer folder declares.
fn pad_token(dir: &Path) -> String {
    ["special_tokens_map.json", "tokenizer_config.json"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .find_map(|v| match &v["pad_token"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| "<|endoftext|>".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClipTokenizer {
        let mut encoder = HashMap::new();
        for (i, t) in [
            "<|startoftext|>",
            "<|endoftext|>",
            "!",
            "a",
            "c",
            "t",
            "s",
            "t</w>",
            "a</w>",
            "ca",
            "cat</w>",
            "s</w>",
        ]
        .iter()
        .enumerate()
        {
            encoder.insert(t.to_string(), i as u32);
        }
        let merges = vec![("c".into(), "a".into()), ("ca".into(), "t</w>".into())];
        ClipTokenizer::new(encoder, merges, "<|endoftext|>", 8).unwrap()
    }

    #[test]
    fn merges_apply_by_rank_and_words_end_with_the_suffix() {
        let t = tiny();
        // "cat" → c a t</w> → ca t</w> → cat</w>; "cats" → ca t s</w>.
        assert_eq!(t.encode("Cat  cats").ids, vec![0, 10, 9, 5, 11, 1, 1, 1]);
    }

    #[test]
    fn the_shipped_vocabulary_is_openai_clip() {
        let t = ClipTokenizer::openai("<|endoftext|>", 77).unwrap();
        assert_eq!(t.vocab_size(), 49408);
        // Ids transformers' CLIPTokenizer gives for "a photo of a cat" with openai/clip-vit-large-patch14.
        assert_eq!(&t.encode("a photo of a cat").ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    }

    #[test]
    fn long_prompts_are_truncated_with_the_end_token_kept() {
        let e = tiny().encode("cat cat cat cat cat cat cat");
        assert!(e.truncated);
        assert_eq!(e.ids, vec![0, 10, 10, 10, 10, 10, 10, 1]);
    }
}
