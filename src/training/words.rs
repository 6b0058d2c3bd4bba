//! Paint-with-words lessons for the built-in model. Its captions never say where things are, so
//! its cross-attention learnt what is in a picture but not where: eDiff-I's bias on a phrase's
//! tokens moved nothing (a sun painted on one side stood there in 44% of renders, chance is
//! 50%). The words stage trains with that bias applied where the phrase's thing really is in the
//! scene — the sun's or moon's disc, the water's rows, each as roughly as a person paints them —
//! so the model learns to draw a strengthened phrase under its region. A phrase the caption
//! lacks is appended, as the studio appends a painted phrase the prompt lacks.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::builtin::{unet_config, vae_config, IMAGE_SIZE, MAX_TOKENS};
use crate::dataset::scenes::{caption, water_rows, BodyKind, SceneParams, Water};
use crate::dataset::vocabulary::{LAKE, MOON, SEA, SUN};
use crate::models::regions::{find_phrase, noise_strength, CrossAttentionBias, Region, RegionMaps};
use crate::models::tokenizer::{WordTokenizer, PAD_ID};

/// A caption with a phrase tied to where its thing is.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    /// The caption's token ids (the phrase appended when it was not there).
    pub ids: Vec<u32>,
    /// Where the thing is, roughly.
    pub region: Region,
    /// The phrase's token positions.
    pub positions: Vec<usize>,
}

/// A uniform draw in [0, 1) from `seed` and a `salt` (SplitMix64's finaliser).
fn unit(seed: u64, salt: u64) -> f32 {
    let mut z = seed.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

/// The lesson of the scene `p` captioned `caption`, at `size` × `size` coverage, drawn from
/// `seed`: its sun or moon, or its water, whichever it has (both: one at random); `None` when it
/// has neither or the phrase does not fit the caption's tokens.
pub fn lesson(
    p: &SceneParams,
    caption: &str,
    tokenizer: &WordTokenizer,
    size: usize,
    seed: u64,
) -> Option<Lesson> {
    let water = water_rows(p).map(|rows| (rows, if p.water == Water::Sea { SEA } else { LAKE }));
    let body = p.body.map(|b| (b, if b.kind == BodyKind::Sun { SUN } else { MOON }));
    let use_body = match (body, water) {
        (Some(_), Some(_)) => unit(seed, 1) < 0.5,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => return None,
    };
    let s = size as f32;
    let (coverage, phrases): (Vec<f32>, &[&str]) = if use_body {
        let (b, phrases) = body?;
        // A disc 1.2 to 2.5 times the body's, its centre up to a third of its radius off.
        let r = b.radius * (1.2 + 1.3 * unit(seed, 2));
        let cx = b.x + (unit(seed, 3) - 0.5) * 0.66 * b.radius;
        let cy = b.y + (unit(seed, 4) - 0.5) * 0.66 * b.radius;
        let cells = (0..size * size)
            .map(|i| {
                let (x, y) = (((i % size) as f32 + 0.5) / s, ((i / size) as f32 + 0.5) / s);
                if (x - cx).hypot(y - cy) < r {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        (cells, phrases)
    } else {
        let ((top, bottom), phrases) = water?;
        // The band from a little above or below each edge: painted by hand, not traced.
        let top = top + (unit(seed, 5) - 0.5) * 0.06;
        let bottom = if bottom >= 1.0 { 1.0 } else { bottom + (unit(seed, 6) - 0.5) * 0.06 };
        let cells = (0..size * size)
            .map(|i| {
                let y = ((i / size) as f32 + 0.5) / s;
                if y >= top && y < bottom {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        (cells, phrases)
    };
    let mut words: Vec<u32> =
        tokenizer.encode(caption).ids.into_iter().take_while(|&id| id != PAD_ID).collect();
    let content = |text: &str| -> Vec<u32> {
        tokenizer.encode(text).ids.into_iter().take_while(|&id| id != PAD_ID).collect()
    };
    let positions = match phrases.iter().find_map(|ph| find_phrase(&words, &content(ph))) {
        Some(found) => found,
        None => {
            let phrase = content(phrases[(unit(seed, 7) * phrases.len() as f32) as usize % phrases.len()]);
            if words.len() + phrase.len() > tokenizer.max_len() {
                return None;
            }
            let start = words.len();
            words.extend(&phrase);
            (start..words.len()).collect()
        }
    };
    words.resize(tokenizer.max_len(), PAD_ID);
    let region = Region { width: size, height: size, coverage, phrase: String::new(), weight: 1.0 };
    Some(Lesson { ids: words, region, positions })
}

/// A training batch's lessons: the caption ids with their phrases, and per example its region
/// map (empty where it has no lesson).
pub struct WordsBatch {
    /// `[batch, tokens]` caption ids, each lesson's phrase appended where it was missing.
    pub ids: Tensor,
    maps: Vec<RegionMaps>,
    taught: Vec<bool>,
}

impl WordsBatch {
    /// The lessons of the batch whose first scene is `seed` with caption `ids`. The first
    /// `swapped` examples (another scene's caption) and those without a caption (dropped for
    /// guidance) get none; the rest get their scene's lesson, if it has one, at a weight from
    /// 0.5 to 2.
    pub fn new(
        ids: &Tensor,
        seed: u64,
        swapped: usize,
        tokenizer: &WordTokenizer,
    ) -> candle_core::Result<Self> {
        let device = ids.device().clone();
        let mut rows = ids.to_vec2::<u32>()?;
        let latent = IMAGE_SIZE / vae_config().downscale();
        let levels = unet_config().block_out_channels.len();
        let (mut maps, mut taught) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for (i, row) in rows.iter_mut().enumerate() {
            let item = seed + i as u64;
            let own_caption = i >= swapped && row.iter().any(|&id| id != PAD_ID);
            let found = own_caption
                .then(|| {
                    let params = SceneParams::random(item);
                    lesson(&params, &caption(&params, item), tokenizer, latent * 4, item)
                })
                .flatten();
            let columns: Vec<(Region, Vec<usize>)> = match found {
                Some(mut l) => {
                    let pick = item.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                    l.region.weight = 0.5 + 1.5 * (pick % 1000) as f64 / 1000.0;
                    *row = l.ids;
                    vec![(l.region, l.positions)]
                }
                None => Vec::new(),
            };
            taught.push(!columns.is_empty());
            let columns: Vec<(&Region, Vec<usize>)> = columns.iter().map(|(r, p)| (r, p.clone())).collect();
            maps.push(RegionMaps::new(&columns, MAX_TOKENS, (latent, latent), levels, DType::F32, &device)?);
        }
        Ok(Self { ids: Tensor::new(rows, &device)?, maps, taught })
    }

    /// The bias of one pass over the batch with each example at `alphas` (ᾱ); with
    /// `uncond_first`, of a pass over the batch's unconditional copy and then the batch (the
    /// copy unbiased). `None` when no example has a lesson.
    pub fn bias(
        &self,
        alphas: &[f64],
        uncond_first: bool,
    ) -> candle_core::Result<Option<CrossAttentionBias>> {
        if !self.taught.contains(&true) {
            return Ok(None);
        }
        let mut strengths: Vec<f64> =
            self.taught.iter().zip(alphas).map(|(&t, &a)| if t { noise_strength(a) } else { 0.0 }).collect();
        let maps = if uncond_first {
            strengths.splice(0..0, std::iter::repeat_n(0.0, self.taught.len()));
            let doubled: Vec<RegionMaps> = self.maps.iter().chain(&self.maps).cloned().collect();
            RegionMaps::stack(&doubled)?
        } else {
            RegionMaps::stack(&self.maps)?
        };
        Ok(Some(CrossAttentionBias::new(Arc::new(maps), strengths)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::scenes::scene;
    use crate::training::train::builtin_tokenizer;

    #[test]
    fn lessons_tie_a_phrase_to_where_its_thing_is() {
        let tokenizer = builtin_tokenizer();
        let mut seen = 0;
        for seed in 0..40 {
            let s = scene(seed, 32);
            let Some(lesson) = lesson(&s.params, &s.caption, &tokenizer, 32, seed) else { continue };
            seen += 1;
            // The phrase's tokens are a sun, moon, lake or sea phrase.
            let words: Vec<u32> = lesson.positions.iter().map(|&p| lesson.ids[p]).collect();
            let known = [SUN, MOON, LAKE, SEA].iter().flat_map(|l| l.iter()).any(|ph| {
                tokenizer.encode(ph).ids.into_iter().take_while(|&id| id != PAD_ID).collect::<Vec<_>>()
                    == words
            });
            assert!(known, "seed {seed}: {:?}", s.caption);
            // The region covers the thing: the body's centre, or rows inside the water.
            let covered =
                |x: f32, y: f32| lesson.region.coverage[(y * 32.0) as usize * 32 + (x * 32.0) as usize] > 0.0;
            let body_phrase = [SUN, MOON].iter().flat_map(|l| l.iter()).any(|ph| {
                tokenizer.encode(ph).ids.into_iter().take_while(|&id| id != PAD_ID).collect::<Vec<_>>()
                    == words
            });
            if body_phrase {
                let b = s.params.body.unwrap();
                assert!(covered(b.x, b.y), "seed {seed}");
            } else {
                let (top, bottom) = water_rows(&s.params).unwrap();
                assert!(covered(0.5, (top + bottom.min(1.0)) / 2.0), "seed {seed}");
            }
        }
        assert!(seen > 20, "{seen} lessons in 40 scenes");
    }
}
