//! The built-in model's word-level tokenizer: one id per vocabulary word, an unknown-word token
//! so any prompt still renders, and the list of words the model does not know for the caller
//! to show. Saved as a `tokenizer.json` in the tokenizers library's `WordLevel` format.

use std::collections::HashMap;

use serde_json::json;

/// Id of the padding token (also the whole unconditional prompt).
pub const PAD_ID: u32 = 0;
/// Id of the unknown-word token.
pub const UNK_ID: u32 = 1;
const PAD: &str = "[PAD]";
const UNK: &str = "[UNK]";

/// Token ids for one prompt and the words that mapped to the unknown token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_len` ids, padded with [`PAD_ID`].
    pub ids: Vec<u32>,
    /// Words not in the vocabulary, in prompt order.
    pub unknown: Vec<String>,
    /// Whether words past `max_len` were dropped.
    pub truncated: bool,
}

/// A word-level tokenizer: lowercase, split on anything that is not a letter.
#[derive(Debug, Clone)]
pub struct WordTokenizer {
    vocab: HashMap<String, u32>,
    max_len: usize,
}

impl WordTokenizer {
    /// A tokenizer over `words` (ids from 2 in order) producing `max_len` ids per prompt.
    pub fn new<'a>(words: impl IntoIterator<Item = &'a str>, max_len: usize) -> Self {
        let mut vocab = HashMap::new();
        vocab.insert(PAD.to_string(), PAD_ID);
        vocab.insert(UNK.to_string(), UNK_ID);
        for w in words {
            let next = vocab.len() as u32;
            vocab.entry(w.to_lowercase()).or_insert(next);
        }
        Self { vocab, max_len }
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Ids per prompt.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Encodes `prompt`.
    pub fn encode(&self, prompt: &str) -> Encoded {
        let lower = prompt.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).collect();
        let mut unknown = Vec::new();
        let mut ids: Vec<u32> = words
            .iter()
            .map(|w| {
                self.vocab.get(*w).copied().unwrap_or_else(|| {
                    unknown.push((*w).to_string());
                    UNK_ID
                })
            })
            .collect();
        let truncated = ids.len() > self.max_len;
        ids.resize(self.max_len, PAD_ID);
        Encoded { ids, unknown, truncated }
    }

    /// The tokenizers library's JSON for this vocabulary (a `WordLevel` model after lowercasing
    /// and splitting on whitespace and punctuation).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": self.max_len, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": self.max_len}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": PAD_ID, "pad_type_id": 0, "pad_token": PAD},
            "added_tokens": [
                {"id": PAD_ID, "content": PAD, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": UNK_ID, "content": UNK, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": self.vocab, "unk_token": UNK}
        })
    }

    /// Reads the vocabulary back from [`WordTokenizer::to_json`]'s output.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_value(value["model"]["vocab"].clone()).ok()?;
        let max_len = value["truncation"]["max_length"].as_u64()? as usize;
        (vocab.get(PAD) == Some(&PAD_ID) && vocab.get(UNK) == Some(&UNK_ID))
            .then_some(Self { vocab, max_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_words_still_encode_and_are_reported() {
        let t = WordTokenizer::new(["sunset", "over", "mountains"], 6);
        let e = t.encode("Sunset over purple mountains!");
        assert_eq!(e.ids, vec![2, 3, UNK_ID, 4, PAD_ID, PAD_ID]);
        assert_eq!(e.unknown, vec!["purple".to_string()]);
        assert!(!e.truncated);
        assert!(t.encode("sunset sunset sunset sunset sunset sunset sunset").truncated);
    }

    #[test]
    fn json_round_trip_keeps_the_vocabulary() {
        let t = WordTokenizer::new(["lake", "sea"], 8);
        let back = WordTokenizer::from_json(&t.to_json()).unwrap();
        assert_eq!(back.encode("sea lake"), t.encode("sea lake"));
        assert_eq!(back.vocab_size(), 4);
    }
}
