//! Paint with words (eDiff-I, Balaji et al. 2022): regions of the picture tied to phrases. Inside
//! a region, the cross-attention scores of its phrase's tokens are raised by
//! `0.1 · w · log(1 + σ) · max(QKᵀ)` (the rule of cloneofsimo/paint-with-words-sd), strongest at
//! high noise where the layout forms; the unconditional pass is left alone. The masks are
//! resampled to every attention resolution of the UNet by area averaging.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

/// The weight a region gets when none is given: measured on the built-in model (README, "Paint
/// with words": a sun placed on its painted side 66% of the time at 1, 78% at 3, 84% at 10, no
/// better at 15; small discs gain most, 59% → 73%), where the pictures stay whole.
pub const DEFAULT_WEIGHT: f64 = 10.0;

/// The largest weight a region may have: far past it the scores of a phrase swamp every other
/// token and the picture falls apart.
pub const MAX_WEIGHT: f64 = 20.0;

/// One painted region: where (coverage in [0, 1] per pixel, row-major), what (a phrase) and how
/// strongly.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Width of the coverage map in pixels.
    pub width: usize,
    /// Height of the coverage map in pixels.
    pub height: usize,
    /// Coverage per pixel, 1 inside.
    pub coverage: Vec<f32>,
    /// The phrase whose tokens are strengthened inside.
    pub phrase: String,
    /// Its weight w.
    pub weight: f64,
}

impl Region {
    /// Whether nothing of the picture is inside.
    pub fn is_empty(&self) -> bool {
        !self.coverage.iter().any(|&c| c > 0.0)
    }

    /// The coverage resampled to `w × h` cells by area averaging (a cell takes the mean of the
    /// pixels it spans; any sizes, up or down).
    pub fn resampled(&self, w: usize, h: usize) -> Vec<f32> {
        let (sw, sh) = (self.width.max(1), self.height.max(1));
        if self.coverage.len() != sw * sh {
            return vec![0.0; w * h];
        }
        // The source span [lo, hi) of cell `i` of `n` along a side of `len` pixels, at least
        // one pixel wide.
        let span = |i: usize, n: usize, len: usize| {
            let lo = i * len / n;
            let hi = ((i + 1) * len).div_ceil(n).max(lo + 1).min(len);
            (lo.min(len - 1), hi)
        };
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            let (y0, y1) = span(y, h, sh);
            for x in 0..w {
                let (x0, x1) = span(x, w, sw);
                let mut sum = 0f32;
                for row in y0..y1 {
                    sum += self.coverage[row * sw + x0..row * sw + x1].iter().sum::<f32>();
                }
                out.push(sum / ((y1 - y0) * (x1 - x0)) as f32);
            }
        }
        out
    }
}

/// The regions resolved against a prompt's token positions: per attention resolution, a
/// `[cells, tokens]` map of summed weights (region coverage × weight on its phrase's columns).
#[derive(Debug, Clone)]
pub struct RegionMaps {
    maps: Vec<((usize, usize), Tensor)>,
}

impl RegionMaps {
    /// Maps for a `lw × lh` latent and the `levels` resolutions below it (each level halves a
    /// side, rounding up, as a stride-2 convolution does). `columns` pairs each region with the
    /// token positions of its phrase among `tokens` positions.
    pub fn new(
        columns: &[(&Region, Vec<usize>)],
        tokens: usize,
        (lw, lh): (usize, usize),
        levels: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut maps = Vec::new();
        let (mut w, mut h) = (lw, lh);
        for _ in 0..levels.max(1) {
            let mut map = vec![0f32; w * h * tokens];
            for (region, positions) in columns {
                let cells = region.resampled(w, h);
                for (cell, &c) in cells.iter().enumerate() {
                    for &p in positions.iter().filter(|&&p| p < tokens) {
                        map[cell * tokens + p] += c * region.weight as f32;
                    }
                }
            }
            let map = Tensor::from_vec(map, (w * h, tokens), device)?.to_dtype(dtype)?;
            maps.push(((w, h), map));
            if w == 1 && h == 1 {
                break;
            }
            (w, h) = (w.div_ceil(2), h.div_ceil(2));
        }
        Ok(Self { maps })
    }

    /// One map per batch item, `[batch, cells, tokens]` at every resolution (all built for the
    /// same latent and tokens).
    pub fn stack(items: &[RegionMaps]) -> Result<Self> {
        let Some(first) = items.first() else { return Ok(Self { maps: Vec::new() }) };
        let maps = first
            .maps
            .iter()
            .map(|(size, _)| {
                let each = items.iter().filter_map(|m| m.at(size.0, size.1)).collect::<Vec<_>>();
                Ok((*size, Tensor::stack(&each, 0)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { maps })
    }

    /// The map of a `w × h` attention, if the UNet has one that size.
    pub fn at(&self, w: usize, h: usize) -> Option<&Tensor> {
        self.maps.iter().find(|(size, _)| *size == (w, h)).map(|(_, m)| m)
    }
}

/// eDiff-I's noise factor `0.1 · log(1 + σ)` with σ = √((1 − ᾱ)/ᾱ), σ capped where ᾱ reaches 0
/// (zero-terminal-SNR schedules).
pub fn noise_strength(alpha_bar: f64) -> f64 {
    let sigma = ((1.0 - alpha_bar) / alpha_bar.max(1e-8)).max(0.0).sqrt().min(1e4);
    0.1 * (1.0 + sigma).ln()
}

/// What one UNet call's cross-attention adds: the region maps (one for the batch, or one per
/// batch item) and each batch item's noise factor, 0 where nothing is added (the
/// unconditional pass).
#[derive(Debug, Clone)]
pub struct CrossAttentionBias {
    maps: Arc<RegionMaps>,
    strengths: Vec<f64>,
    /// The index of the first batch item among per-item maps (a narrowed batch starts later).
    offset: usize,
}

impl CrossAttentionBias {
    /// The bias of `maps` at each batch item's `strengths` (see [`noise_strength`]).
    pub fn new(maps: Arc<RegionMaps>, strengths: Vec<f64>) -> Self {
        Self { maps, strengths, offset: 0 }
    }

    /// The part for batch items `from..from + len`.
    pub fn narrow(&self, from: usize, len: usize) -> Self {
        let strengths = self.strengths.iter().skip(from).take(len).copied().collect();
        Self { strengths, offset: self.offset + from, maps: self.maps.clone() }
    }

    /// The noise factor of batch item `i`; 0 when it is not biased.
    pub fn strength(&self, i: usize) -> f64 {
        self.strengths.get(i).copied().unwrap_or(0.0)
    }

    /// Whether any batch item is biased.
    pub fn any(&self) -> bool {
        self.strengths.iter().any(|&s| s != 0.0)
    }

    /// The `[cells, tokens]` map of batch item `i` at a `w × h` attention.
    pub fn map(&self, w: usize, h: usize, i: usize) -> Result<Option<Tensor>> {
        match self.maps.at(w, h) {
            Some(m) if m.rank() == 3 => m.get(self.offset + i).map(Some),
            Some(m) => Ok(Some(m.clone())),
            None => Ok(None),
        }
    }

    /// Whether the maps have a `w × h` resolution.
    pub fn covers(&self, w: usize, h: usize) -> bool {
        self.maps.at(w, h).is_some()
    }
}

/// Where `phrase` (token ids) first occurs in `tokens`, as positions.
pub fn find_phrase(tokens: &[u32], phrase: &[u32]) -> Option<Vec<usize>> {
    if phrase.is_empty() || phrase.len() > tokens.len() {
        return None;
    }
    (0..=tokens.len() - phrase.len())
        .find(|&i| tokens[i..i + phrase.len()] == *phrase)
        .map(|i| (i..i + phrase.len()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(width: usize, height: usize, coverage: Vec<f32>) -> Region {
        Region { width, height, coverage, phrase: "a calm lake".into(), weight: 2.0 }
    }

    #[test]
    fn resampling_averages_areas() {
        // Left half covered on a 4x2 map: halving gives [1, 0]; one cell gives the mean.
        let r = region(4, 2, vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(r.resampled(2, 1), vec![1.0, 0.0]);
        assert_eq!(r.resampled(1, 1), vec![0.5]);
        // Up: each of 8 columns takes its source pixel.
        assert_eq!(r.resampled(8, 1), vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // 3 cells over 4 pixels: spans [0,2), [1,3), [2,4).
        assert_eq!(r.resampled(3, 1), vec![1.0, 0.5, 0.0]);
        // A map of the wrong length covers nothing.
        assert_eq!(region(4, 4, vec![1.0]).resampled(2, 2), vec![0.0; 4]);
    }

    #[test]
    fn maps_weight_the_phrase_columns_at_every_level() {
        let r = region(4, 4, (0..16).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect());
        let maps = RegionMaps::new(&[(&r, vec![1, 2])], 4, (4, 4), 8, DType::F32, &Device::Cpu).unwrap();
        // 4x4, 2x2, 1x1 and no more.
        assert!(maps.at(4, 4).is_some() && maps.at(2, 2).is_some() && maps.at(1, 1).is_some());
        assert!(maps.at(8, 8).is_none());
        let m = maps.at(2, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0.0, 2.0, 2.0, 0.0]);
        assert_eq!(m[1], vec![0.0; 4]);
        assert_eq!(maps.at(1, 1).unwrap().to_vec2::<f32>().unwrap()[0], vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn noise_strength_follows_sigma() {
        // ᾱ = 0.2: σ = 2, 0.1 · ln 3.
        assert!((noise_strength(0.2) - 0.1 * 3f64.ln()).abs() < 1e-12);
        assert_eq!(noise_strength(1.0), 0.0);
        assert!(noise_strength(0.0).is_finite());
    }

    #[test]
    fn phrases_are_found_as_runs_of_tokens() {
        assert_eq!(find_phrase(&[5, 6, 7, 6, 8], &[6, 8]), Some(vec![3, 4]));
        assert_eq!(find_phrase(&[5, 6, 7], &[6, 8]), None);
        assert_eq!(find_phrase(&[5], &[]), None);
    }
}
