//! `latent-studio distill`: latent consistency distillation (Luo et al. 2023; diffusers'
//! `train_lcm_distill_sd_wds.py`) of the built-in model into the live student, a UNet that
//! draws a picture in one to four network evaluations and takes the guidance scale as an input
//! (its guidance embedding) instead of a second, unconditional pass.
//!
//! Each step noises scene latents (and, for half the batch, the latents of stroke pictures of the
//! scenes, as SDEdit hands them over) to a point t of a 50-point DDIM grid; the teacher takes one
//! guided DDIM step from there to t − 20; the student's consistency function at t must agree
//! with the target network's (a slow average of the student) at t − 20. Both go through the LCM
//! boundary condition, so at t = 0 the answer is the sample itself.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::builtin::{
    live_defaults, live_scheduler_config, live_unet_config, scheduler_config, text_config, unet_config,
    vae_config, GUIDANCE_EMBEDDING, LIVE_GUIDANCE, MAX_TOKENS,
};
use super::ema::Ema;
use super::train::{
    batch, builtin_tokenizer, caption_order, io, learning_rate, load_into_except, save, save_as,
    stroke_pictures, write_json, Meter, Progress, TrainError, TrainState, STATE_FILE, STROKE_T_MAX,
    STROKE_T_MIN, TEXT_WEIGHTS, TRAIN_SEED_BASE, UNET_RAW, UNET_WEIGHTS, VAE_WEIGHTS,
};
use super::words::WordsBatch;
use crate::core::samplers::boundary_condition;
use crate::core::NoiseSchedule;
use crate::models::clip::ClipTextModel;
use crate::models::pipeline::DEFAULTS_FILE;
use crate::models::regions::CrossAttentionBias;
use crate::models::tiny_vae::TinyVae;
use crate::models::unet::{guidance_embedding, UNet};

/// Points of the DDIM grid the student is distilled on (`original_inference_steps`).
const GRID: usize = 50;

/// Decay of the target network's average of the student (the LCM script's default).
const TARGET_DECAY: f64 = 0.95;

/// `c` of the pseudo-Huber loss sqrt(d² + c²) − c (the LCM script's default).
const HUBER_C: f64 = 0.001;

/// The state file of a distillation run.
const DISTILL_STATE: &str = "distill_state.json";

/// Settings of a distillation run.
#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// The teacher's training folder (f32 weights and its `train_state.json`).
    pub teacher: PathBuf,
    /// The student's model folder to write (and resume from).
    pub out: PathBuf,
    /// Continue from the folder's checkpoint.
    pub resume: bool,
    /// Distillation steps.
    pub steps: usize,
    /// Scenes per step.
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub learning_rate: f64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// When done, rewrite the weights in f16 (how `assets/builtin-live` ships them).
    pub half: bool,
    /// Paint-with-words lessons in every batch (for a teacher trained with the words stage):
    /// teacher, target and student all see the region bias, so the student learns the
    /// teacher's answer to a painted phrase.
    pub words: bool,
}

/// Where a run stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DistillState {
    /// Steps done.
    pub step: usize,
}

/// The LCM boundary condition at training timestep `t`, with the timestep scaling the student's
/// `LCMScheduler` samples with (so the sampler undoes what was learnt).
fn boundary(t: usize) -> (f64, f64) {
    boundary_condition(t, live_scheduler_config().timestep_scaling.unwrap_or(10.0))
}

/// The grid point `index` in 0..GRID: training timestep 20·(index + 1) − 1, and the one a DDIM
/// step below it (0 under the first).
fn grid_step(index: usize, train: usize) -> (usize, usize) {
    let k = train / GRID;
    let t = (index + 1) * k - 1;
    (t, t.saturating_sub(k))
}

/// Per-example factors `[B, 1, 1, 1]`.
fn column(values: &[f64], device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, (values.len(), 1, 1, 1), device)
}

/// x_0 from an epsilon prediction at cumulative alphas `a` (`[B, 1, 1, 1]`).
fn clean(x: &Tensor, eps: &Tensor, a: &Tensor) -> candle_core::Result<Tensor> {
    (x - eps.broadcast_mul(&(1.0 - a)?.sqrt()?)?)?.broadcast_div(&a.sqrt()?)
}

/// The consistency function's output: c_skip·x + c_out·x_0.
fn consistency(x: &Tensor, x0: &Tensor, skip: &Tensor, out: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_mul(skip)? + x0.broadcast_mul(out)?
}

/// Networks that run without gradients on fixed weights.
fn frozen_unet(tensors: HashMap<String, Tensor>, live: bool) -> Result<UNet, TrainError> {
    let config = if live { live_unet_config() } else { unet_config() };
    Ok(UNet::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))?)
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    if !path.exists() {
        return Err(TrainError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the teacher's weights are missing"),
        });
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    tensors.into_iter().map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?))).collect()
}

/// Copies the teacher's autoencoder, text encoder and tokenizer (the student shares them) and
/// writes the student's configs.
fn write_folder(opts: &DistillOptions) -> Result<(), TrainError> {
    for part in ["vae", "text_encoder", "tokenizer"] {
        let (from, to) = (opts.teacher.join(part), opts.out.join(part));
        io(&to, std::fs::create_dir_all(&to))?;
        for entry in io(&from, std::fs::read_dir(&from))? {
            let entry = io(&from, entry)?;
            let target = to.join(entry.file_name());
            io(&target, std::fs::copy(entry.path(), &target))?;
        }
    }
    write_json(&opts.out.join("unet/config.json"), &live_unet_config())?;
    write_json(&opts.out.join("scheduler/scheduler_config.json"), &live_scheduler_config())?;
    write_json(&opts.out.join(DEFAULTS_FILE), &live_defaults())?;
    let index = io(
        &opts.teacher.join("model_index.json"),
        std::fs::read_to_string(opts.teacher.join("model_index.json")),
    )?;
    let mut index: serde_json::Value = serde_json::from_str(&index)
        .map_err(|source| TrainError::State { path: opts.teacher.join("model_index.json"), source })?;
    index["_class_name"] = "LatentConsistencyModelPipeline".into();
    index["scheduler"] = serde_json::json!(["diffusers", "LCMScheduler"]);
    write_json(&opts.out.join("model_index.json"), &index)
}

/// Distils (or resumes distilling) the teacher into `opts.out`.
pub fn distill(opts: &DistillOptions, report: &mut dyn FnMut(&Progress)) -> Result<DistillState, TrainError> {
    let device = Device::Cpu;
    let tokenizer = builtin_tokenizer();
    let teacher_state: TrainState = {
        let path = opts.teacher.join(STATE_FILE);
        let text = io(&path, std::fs::read_to_string(&path))?;
        serde_json::from_str(&text).map_err(|source| TrainError::State { path: path.clone(), source })?
    };
    let scaling = teacher_state.scaling_factor.unwrap_or(1.0);
    let state_path = opts.out.join(DISTILL_STATE);
    let mut state: DistillState = if opts.resume && state_path.exists() {
        let text = io(&state_path, std::fs::read_to_string(&state_path))?;
        serde_json::from_str(&text)
            .map_err(|source| TrainError::State { path: state_path.clone(), source })?
    } else {
        DistillState::default()
    };
    write_folder(opts)?;

    let vb = |rel: &str| -> Result<VarBuilder<'static>, TrainError> {
        Ok(VarBuilder::from_tensors(load_tensors(&opts.teacher.join(rel))?, DType::F32, &device))
    };
    let vae = TinyVae::new(&vae_config(), vb(VAE_WEIGHTS)?)?;
    let text = ClipTextModel::new(&text_config(tokenizer.vocab_size()), vb(TEXT_WEIGHTS)?)?;
    let teacher = frozen_unet(load_tensors(&opts.teacher.join(UNET_WEIGHTS))?, false)?;

    // The student starts as the teacher with a zero guidance projection: the same network.
    let student_map = VarMap::new();
    let student = UNet::new(&live_unet_config(), VarBuilder::from_varmap(&student_map, DType::F32, &device))?;
    let fresh = "time_embedding.cond_proj";
    let resumed = opts.resume && opts.out.join(UNET_RAW).exists();
    let start = if resumed { opts.out.join(UNET_RAW) } else { opts.teacher.join(UNET_WEIGHTS) };
    load_into_except(&student_map, &start, fresh)?;
    if !resumed {
        for (name, var) in
            student_map.data().lock().map_err(|_| candle_core::Error::Msg("poisoned".into()))?.iter()
        {
            if name.starts_with(fresh) {
                var.set(&var.as_tensor().zeros_like()?)?;
            }
        }
        state.step = 0;
    }
    let mut target = Ema::fixed(&student_map, TARGET_DECAY)?;
    if resumed {
        target.load(&opts.out.join(UNET_WEIGHTS))?;
    }

    let schedule = NoiseSchedule::from_config(&scheduler_config())?;
    let train = schedule.train_steps();
    let empty = text.forward(&Tensor::from_vec(tokenizer.encode("").ids, (1, MAX_TOKENS), &device)?)?;
    let log_path = opts.out.join("loss.csv");
    let mut log = io(&log_path, std::fs::OpenOptions::new().create(true).append(true).open(&log_path))?;
    let mut opt = AdamW::new(
        student_map.all_vars(),
        ParamsAdamW { lr: opts.learning_rate, weight_decay: 0.0, ..Default::default() },
    )?;
    let mut meter = Meter::default();
    let first = state.step;
    let b = opts.batch;
    let strokes = b / 2;
    // The grid points stroke pictures are noised to: the SDEdit strengths the studio offers.
    let stroke_points: Vec<usize> =
        (0..GRID).filter(|&i| (STROKE_T_MIN..STROKE_T_MAX).contains(&grid_step(i, train).0)).collect();
    while state.step < opts.steps {
        let t0 = Instant::now();
        let seed = TRAIN_SEED_BASE + (5 << 24) + (state.step * b) as u64;
        let (images, ids) = batch(seed, b, &tokenizer, &device)?;
        let ids = ids.index_select(&caption_order(b, strokes, &device)?, 0)?;
        let lessons =
            if opts.words { Some(WordsBatch::new(&ids, seed, strokes / 2, &tokenizer)?) } else { None };
        let ids = lessons.as_ref().map_or(ids, |l| l.ids.clone());
        let scenes = (vae.encode(&images)? * scaling)?;
        let painted = (vae.encode(&stroke_pictures(&images, strokes, seed)?)? * scaling)?;
        let x0 = Tensor::cat(&[painted, scenes.narrow(0, strokes, b - strokes)?], 0)?;
        let context = text.forward(&ids)?;
        let uncond = empty.broadcast_as(context.shape())?.contiguous()?;

        // Per example: a grid point (stroke pictures within the SDEdit span) and a guidance scale.
        let picks: Vec<f32> = Tensor::rand(0f32, 1.0, 2 * b, &device)?.to_vec1()?;
        let (mut t_hi, mut t_lo, mut scales) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..b {
            let u = f64::from(picks[i]);
            let index = if i < strokes {
                stroke_points[((u * stroke_points.len() as f64) as usize).min(stroke_points.len() - 1)]
            } else {
                ((u * GRID as f64) as usize).min(GRID - 1)
            };
            let (hi, lo) = grid_step(index, train);
            t_hi.push(hi);
            t_lo.push(lo);
            scales.push(LIVE_GUIDANCE.0 + f64::from(picks[b + i]) * (LIVE_GUIDANCE.1 - LIVE_GUIDANCE.0));
        }
        let alpha =
            |ts: &[usize]| column(&ts.iter().map(|&t| schedule.alpha_bar(t)).collect::<Vec<_>>(), &device);
        let (a_hi, a_lo) = (alpha(&t_hi)?, alpha(&t_lo)?);
        let cond = |ts: &[usize], pick: fn((f64, f64)) -> f64| {
            column(&ts.iter().map(|&t| pick(boundary(t))).collect::<Vec<_>>(), &device)
        };
        let (skip_hi, out_hi) = (cond(&t_hi, |c| c.0)?, cond(&t_hi, |c| c.1)?);
        let (skip_lo, out_lo) = (cond(&t_lo, |c| c.0)?, cond(&t_lo, |c| c.1)?);
        let times =
            |ts: &[usize]| Tensor::from_vec(ts.iter().map(|&t| t as f32).collect::<Vec<_>>(), b, &device);
        let (time_hi, time_lo) = (times(&t_hi)?, times(&t_lo)?);
        let bias = |ts: &[usize], uncond_first: bool| -> candle_core::Result<Option<CrossAttentionBias>> {
            let alphas: Vec<f64> = ts.iter().map(|&t| schedule.alpha_bar(t)).collect();
            lessons.as_ref().map_or(Ok(None), |l| l.bias(&alphas, uncond_first))
        };
        let w_embedding = guidance_embedding(&scales, GUIDANCE_EMBEDDING, &device)?;

        let noise = x0.randn_like(0.0, 1.0)?;
        let x_hi = (x0.broadcast_mul(&a_hi.sqrt()?)? + noise.broadcast_mul(&(1.0 - &a_hi)?.sqrt()?)?)?;

        // The teacher's guided DDIM step from t to t − 20 (one batched pass, uncond then cond).
        let both = teacher.forward_with_regions(
            &Tensor::cat(&[&x_hi, &x_hi], 0)?,
            &Tensor::cat(&[&time_hi, &time_hi], 0)?,
            &Tensor::cat(&[&uncond, &context], 0)?,
            None,
            bias(&t_hi, true)?.as_ref(),
        )?;
        let (eps_u, eps_c) = (both.narrow(0, 0, b)?, both.narrow(0, b, b)?);
        let s = column(&scales, &device)?;
        let eps = (&eps_u + (&eps_c - &eps_u)?.broadcast_mul(&s)?)?;
        let x0_teacher = clean(&x_hi, &eps, &a_hi)?;
        let x_lo =
            (x0_teacher.broadcast_mul(&a_lo.sqrt()?)? + eps.broadcast_mul(&(1.0 - &a_lo)?.sqrt()?)?)?;

        // The target network (no gradient) at t − 20.
        let target_net = frozen_unet(target.tensors(), true)?;
        let eps_target = target_net.forward_with_regions(
            &x_lo,
            &time_lo,
            &context,
            Some(&w_embedding),
            bias(&t_lo, false)?.as_ref(),
        )?;
        let answer = consistency(&x_lo, &clean(&x_lo, &eps_target, &a_lo)?, &skip_lo, &out_lo)?.detach();

        let eps_student = student.forward_with_regions(
            &x_hi,
            &time_hi,
            &context,
            Some(&w_embedding),
            bias(&t_hi, false)?.as_ref(),
        )?;
        let guess = consistency(&x_hi, &clean(&x_hi, &eps_student, &a_hi)?, &skip_hi, &out_hi)?;
        let loss = (((&guess - &answer)?.sqr()? + HUBER_C * HUBER_C)?.sqrt()? - HUBER_C)?
            .mean(D::Minus1)?
            .mean_all()?;
        opt.set_learning_rate(learning_rate(opts.learning_rate, state.step, opts.steps, first));
        opt.backward_step(&loss)?;
        target.update()?;
        state.step += 1;
        let value = f64::from(loss.to_scalar::<f32>()?);
        meter.update(value, t0.elapsed().as_secs_f64());
        io(&log_path, writeln!(log, "distill,{},{value}", state.step))?;
        report(&Progress {
            stage: "distill",
            step: state.step,
            total: opts.steps,
            loss: meter.loss,
            secs_per_step: meter.secs,
        });
        if state.step.is_multiple_of(opts.checkpoint_every) || state.step == opts.steps {
            save(&student_map, &opts.out.join(UNET_RAW))?;
            target.save(&opts.out.join(UNET_WEIGHTS), DType::F32)?;
            write_json(&state_path, &state)?;
        }
    }
    if opts.half {
        save_as(&student_map, &opts.out.join(UNET_RAW), DType::F16)?;
        target.save(&opts.out.join(UNET_WEIGHTS), DType::F16)?;
        for rel in [VAE_WEIGHTS, TEXT_WEIGHTS] {
            let path = opts.out.join(rel);
            let half = load_tensors(&path)?
                .into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(DType::F16)?)))
                .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
            candle_core::safetensors::save(&half, &path)?;
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::{boundary, grid_step, GRID};

    #[test]
    fn the_boundary_condition_is_the_sample_at_zero_and_the_clean_estimate_far_from_it() {
        // t = 0: c_skip = 1, c_out = 0 (the consistency function is the identity there).
        assert_eq!(boundary(0), (1.0, 0.0));
        // t = 19 (the first grid point): scaled 190, by hand 0.25 / (190² + 0.25) and 190 / √(190² + 0.25).
        let (skip, out) = boundary(19);
        assert!((skip - 0.25 / 36100.25).abs() < 1e-15 && (out - 190.0 / 36100.25f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn the_grid_has_diffusers_fifty_points_and_steps_one_point_down() {
        // diffusers' DDIMSolver: (1..=50)·20 − 1, the step below clamped at 0.
        assert_eq!(grid_step(0, 1000), (19, 0));
        assert_eq!(grid_step(1, 1000), (39, 19));
        assert_eq!(grid_step(GRID - 1, 1000), (999, 979));
    }
}
