//! A small convolutional classifier that reads a scene's attributes (time of day, sun or moon,
//! stars, clouds, mountains, hills, water, beach, trees, fields, desert) from a 128×128 picture,
//! the built-in model's size: stars and tree shapes are a pixel or two wide there.
//! Trained on generator scenes, it judges generated pictures: whether they show what their
//! prompt asked for, and (through its features) how close they look to real scenes.

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{
    conv2d, linear, AdamW, Conv2d, Conv2dConfig, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap,
};

use crate::dataset::scenes::{scene, SceneParams};

/// The attributes read, with their class counts, in [`SceneParams::labels`] order.
pub const ATTRIBUTES: [(&str, usize); 11] = [
    ("time_of_day", 5),
    ("body", 3),
    ("stars", 2),
    ("clouds", 2),
    ("mountains", 3),
    ("hills", 2),
    ("water", 3),
    ("beach", 2),
    ("trees", 3),
    ("fields", 2),
    ("desert", 2),
];

/// Picture side the classifier reads.
pub const SIZE: usize = 128;
/// Width of the feature vector the Fréchet distance is measured on.
pub const FEATURES: usize = 64;
/// Channels after each stride-2 convolution: 128 → 64 → 32 → 16 → 8 → 4 pixels.
const CHANNELS: [usize; 6] = [3, 16, 32, 64, 96, 128];

/// The network: five stride-2 3×3 convolutions with ReLU, a hidden layer (the features), and one
/// softmax head per attribute.
#[derive(Debug)]
pub struct AttributeClassifier {
    convs: Vec<Conv2d>,
    hidden: Linear,
    heads: Linear,
}

impl AttributeClassifier {
    /// Builds the network on `vb` (a [`VarMap`] to train, or loaded weights).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let config = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let convs = (0..CHANNELS.len() - 1)
            .map(|i| conv2d(CHANNELS[i], CHANNELS[i + 1], 3, config, vb.pp(format!("conv{i}"))))
            .collect::<Result<_>>()?;
        let side = SIZE >> (CHANNELS.len() - 1);
        let hidden = linear(CHANNELS[CHANNELS.len() - 1] * side * side, FEATURES, vb.pp("hidden"))?;
        let classes = ATTRIBUTES.iter().map(|(_, n)| n).sum();
        let heads = linear(FEATURES, classes, vb.pp("heads"))?;
        Ok(Self { convs, hidden, heads })
    }

    /// `[B, FEATURES]` for `[B, 3, SIZE, SIZE]` pictures in [-1, 1].
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let mut x = images.clone();
        for conv in &self.convs {
            x = conv.forward(&x)?.relu()?;
        }
        self.hidden.forward(&x.flatten_from(1)?)?.relu()
    }

    /// The class of every attribute, per picture, in [`ATTRIBUTES`] order.
    pub fn predict(&self, images: &Tensor) -> Result<Vec<Vec<usize>>> {
        let logits = self.heads.forward(&self.features(images)?)?;
        let mut out = vec![Vec::with_capacity(ATTRIBUTES.len()); images.dim(0)?];
        let mut start = 0;
        for (_, n) in ATTRIBUTES {
            let classes = logits.narrow(1, start, n)?.argmax(1)?.to_vec1::<u32>()?;
            for (o, c) in out.iter_mut().zip(classes) {
                o.push(c as usize);
            }
            start += n;
        }
        Ok(out)
    }

    /// The summed cross-entropy of every attribute head; `targets` is `[B, attributes]` u32.
    fn loss(&self, images: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.heads.forward(&self.features(images)?)?;
        let mut total: Option<Tensor> = None;
        let mut start = 0;
        for (i, (_, n)) in ATTRIBUTES.iter().enumerate() {
            let target = targets.narrow(1, i, 1)?.squeeze(1)?.contiguous()?;
            let loss = candle_nn::loss::cross_entropy(&logits.narrow(1, start, *n)?.contiguous()?, &target)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
            start += n;
        }
        total.ok_or_else(|| candle_core::Error::Msg("no attributes".into()))
    }
}

/// `[B, 3, SIZE, SIZE]` in [-1, 1] from `SIZE`×`SIZE` pictures, channels last, values in [0, 1].
pub fn images_tensor(images: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(images.len() * SIZE * SIZE * 3);
    for image in images {
        for c in 0..3 {
            data.extend(image.iter().skip(c).step_by(3).map(|v| v * 2.0 - 1.0));
        }
    }
    Tensor::from_vec(data, (images.len(), 3, SIZE, SIZE), device)
}

/// Class indices of `params` in [`ATTRIBUTES`] order.
fn targets(params: &SceneParams) -> Vec<u32> {
    params.labels().into_iter().map(|(_, class)| class as u32).collect()
}

/// How a classifier is trained.
#[derive(Debug, Clone)]
pub struct ClassifierTraining {
    /// Optimizer steps.
    pub steps: usize,
    /// Scenes per step.
    pub batch: usize,
    /// Peak learning rate (AdamW, cosine decay).
    pub learning_rate: f64,
    /// Scenes `first_seed..` are the training set; keep them apart from evaluation seeds.
    pub first_seed: u64,
}

/// A trained classifier and its weights.
pub struct Trained {
    /// The weights, to save.
    pub weights: VarMap,
    /// The network.
    pub classifier: AttributeClassifier,
}

/// Trains a classifier on fresh scenes every step; `report(step, loss)` sees each step.
pub fn train(opts: &ClassifierTraining, report: &mut dyn FnMut(usize, f64)) -> Result<Trained> {
    let device = Device::Cpu;
    let weights = VarMap::new();
    let classifier = AttributeClassifier::new(VarBuilder::from_varmap(&weights, DType::F32, &device))?;
    let mut opt = AdamW::new(
        weights.all_vars(),
        ParamsAdamW { lr: opts.learning_rate, weight_decay: 1e-4, ..Default::default() },
    )?;
    for step in 0..opts.steps {
        let first = opts.first_seed + (step * opts.batch) as u64;
        let scenes: Vec<_> = (first..first + opts.batch as u64).map(|s| scene(s, SIZE)).collect();
        let images: Vec<Vec<f32>> = scenes.iter().map(|s| s.image.clone()).collect();
        let labels: Vec<u32> = scenes.iter().flat_map(|s| targets(&s.params)).collect();
        let labels = Tensor::from_vec(labels, (opts.batch, ATTRIBUTES.len()), &device)?;
        let loss = classifier.loss(&images_tensor(&images, &device)?, &labels)?;
        let progress = step as f64 / opts.steps.max(1) as f64;
        opt.set_learning_rate(
            opts.learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())),
        );
        opt.backward_step(&loss)?;
        report(step + 1, f64::from(loss.to_scalar::<f32>()?));
    }
    Ok(Trained { weights, classifier })
}

/// Loads weights saved from [`Trained::weights`].
pub fn load(path: &Path) -> Result<AttributeClassifier> {
    let mut weights = VarMap::new();
    let classifier = AttributeClassifier::new(VarBuilder::from_varmap(&weights, DType::F32, &Device::Cpu))?;
    weights.load(path)?;
    Ok(classifier)
}

/// Per attribute: the share of `labels` (each picture's (attribute, class) pairs, possibly a
/// subset) that `predicted` got right, and how many labels were scored.
pub fn accuracy(predicted: &[Vec<usize>], labels: &[Vec<(&str, usize)>]) -> Vec<(&'static str, f64, usize)> {
    ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let (mut right, mut seen) = (0, 0);
            for (p, l) in predicted.iter().zip(labels) {
                if let Some((_, class)) = l.iter().find(|(n, _)| n == name) {
                    seen += 1;
                    right += usize::from(p[i] == *class);
                }
            }
            (*name, right as f64 / seen.max(1) as f64, seen)
        })
        .collect()
}

/// The share of all scored labels that are right (attributes weighted by how often they were
/// scored).
pub fn overall(per_attribute: &[(&str, f64, usize)]) -> f64 {
    let seen: usize = per_attribute.iter().map(|(_, _, n)| n).sum();
    per_attribute.iter().map(|(_, share, n)| share * *n as f64).sum::<f64>() / seen.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_order_matches_the_scene_labels() {
        let labels = SceneParams::random(3).labels();
        let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ATTRIBUTES.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        for p in (0..500).map(SceneParams::random) {
            for ((_, class), (_, n)) in p.labels().iter().zip(ATTRIBUTES) {
                assert!(*class < n);
            }
        }
    }

    #[test]
    fn accuracy_scores_only_the_labels_given() {
        let predicted = vec![vec![0; 11], vec![1; 11]];
        let labels = vec![vec![("time_of_day", 0), ("water", 2)], vec![("time_of_day", 1)]];
        let acc = accuracy(&predicted, &labels);
        assert_eq!(acc[0], ("time_of_day", 1.0, 2));
        assert_eq!(acc[6], ("water", 0.0, 1));
        assert_eq!(acc[1].2, 0);
        assert!((overall(&acc) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_short_training_run_learns_the_time_of_day() {
        // Time of day sets the whole sky's colour: even a few dozen steps must beat chance (20%).
        let opts = ClassifierTraining { steps: 40, batch: 32, learning_rate: 3e-3, first_seed: 1 << 40 };
        let trained = train(&opts, &mut |_, _| {}).unwrap();
        let scenes: Vec<_> = (0..64).map(|s| scene(s, SIZE)).collect();
        let images: Vec<Vec<f32>> = scenes.iter().map(|s| s.image.clone()).collect();
        let predicted = trained.classifier.predict(&images_tensor(&images, &Device::Cpu).unwrap()).unwrap();
        let labels: Vec<_> = scenes.iter().map(|s| s.params.labels()).collect();
        let time = accuracy(&predicted, &labels)[0].1;
        assert!(time > 0.5, "time-of-day accuracy {time}");
    }
}
