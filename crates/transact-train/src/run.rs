//! A training run end to end: train on the training requests, checkpoint
//! every epoch, evaluate, and leave everything in a run directory:
//!
//! ```text
//! <run>/config.json            the TrainConfig
//! <run>/checkpoints/epoch-N.safetensors, last.safetensors
//!                              model + optimiser state (resume / warm start)
//! <run>/metrics.json           per-step losses, per-epoch evaluation, final metrics
//! <run>/loss.svg               training curves
//! <run>/hit3.svg               HIT@3 per head after each epoch
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, LoggedRequest};
use crate::eval::{HitAtK, SasrecSplit, SasrecTarget, hit_at_k, sasrec_eval};
use crate::features::Featurizer;
use crate::serving::{export_bundle, memory_store, sasrec_served};
use crate::trainer::{RunError, StepRecord, TrainConfig, Trainer};
use transact_rank::Provenance;
use transact_seq::EmbeddedStore;

/// Where a run's model comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// Fresh initialisation from the config's seed.
    #[default]
    Fresh,
    /// Continue a run from its checkpoint (optimiser state, step, epoch).
    Resume(PathBuf),
    /// Parameters of a checkpoint, fresh optimiser (retraining on newer data).
    WarmStart(PathBuf),
}

/// Progress callbacks (the CLI draws bars; tests ignore them).
pub trait Progress {
    /// A run (or one model of an ablation) starts: `steps` optimiser steps.
    fn start(&self, _name: &str, _steps: u64) {}
    /// After every step.
    fn step(&self, _rec: &StepRecord) {}
    /// A status line (evaluation, checkpoint).
    fn note(&self, _msg: &str) {}
    /// The run ended.
    fn finish(&self) {}
}

/// No output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// Evaluation after an epoch or at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epochs trained.
    pub epoch: usize,
    /// Steps trained.
    pub step: u64,
    /// HIT@3 per head over the test requests (heads in dataset order).
    pub hit3: Vec<f64>,
    /// Test requests evaluated.
    pub requests: usize,
    /// HR@10 / NDCG@10 under the SASRec protocol, when asked for.
    pub sasrec: Option<(f64, f64)>,
    /// HR@10 / NDCG@10 of the validation items (the protocol's model
    /// selection), when a run selects on them.
    #[serde(default)]
    pub validation: Option<(f64, f64)>,
}

/// Everything a run measured (`metrics.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Run name.
    pub name: String,
    /// Dataset name.
    pub dataset: String,
    /// Head names.
    pub heads: Vec<String>,
    /// Training examples per epoch.
    pub train_examples: usize,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// Mean training throughput (examples/s, forward + backward + update).
    pub examples_per_s: f64,
    /// Wall time of training (s), evaluation excluded.
    pub train_seconds: f64,
    /// Wall time of the whole run (s).
    pub total_seconds: f64,
    /// Evaluation after each epoch.
    pub evals: Vec<EvalRecord>,
    /// Index in `evals` of the epoch whose model the run kept (the best
    /// validation NDCG@10 under a [`StopRule::patience`]); `None`: the last.
    #[serde(default)]
    pub kept: Option<usize>,
    /// Every step's losses.
    pub steps: Vec<StepRecord>,
}

impl RunReport {
    /// The final result: the evaluation of the model the run kept.
    pub fn last(&self) -> Option<&EvalRecord> {
        match self.kept {
            Some(i) => self.evals.get(i),
            None => self.evals.last(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Name (reports, file names).
    pub name: String,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Where the model comes from.
    pub start: Start,
    /// Run directory (`None`: keep nothing on disk).
    pub dir: Option<PathBuf>,
    /// Also compute HR@10 / NDCG@10 with this split (100 negatives, seed).
    pub sasrec: Option<(SasrecSplit, u64)>,
    /// Evaluate after every epoch (otherwise only at the end).
    pub eval_every_epoch: bool,
    /// When to stop before the config's epochs are done, and which
    /// epoch's model to keep.
    pub stop: StopRule,
}

/// When a run stops early, and which epoch's model it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StopRule {
    /// Training time (evaluation excluded) after which the run stops,
    /// mid-epoch if need be. Once the first steps are timed, the learning
    /// rate schedule is stretched to end at the budget.
    pub budget: Option<std::time::Duration>,
    /// With the SASRec protocol: keep the epoch with the best validation
    /// NDCG@10 (its parameters are restored at the end and its test
    /// figures reported), and stop after this many evaluations without a
    /// better one. `None`: keep the last epoch, never stop early.
    pub patience: Option<usize>,
}

/// Steps timed before a budget's schedule length is estimated.
const BUDGET_PROBE_STEPS: u64 = 20;

fn io_err(path: &Path, source: std::io::Error) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Invalid(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| io_err(path, e))
}

/// Trains on `train`, evaluates HIT@3 on `test` (and SASRec metrics when
/// asked), writes the run directory. Returns the report and the trainer
/// (for export or further evaluation).
pub fn run(
    spec: &RunSpec,
    data: &Dataset,
    train: &[LoggedRequest],
    test: &[LoggedRequest],
    progress: &dyn Progress,
) -> Result<(RunReport, Trainer), RunError> {
    run_with_tokens(spec, data, train, test, progress, None)
}

/// [`run`], with a TransAct V2 model's training tokens from `tokens` (a
/// feature log of the training requests, see
/// [`Featurizer::with_token_source`]) instead of replayed histories.
pub fn run_with_tokens(
    spec: &RunSpec,
    data: &Dataset,
    train: &[LoggedRequest],
    test: &[LoggedRequest],
    progress: &dyn Progress,
    tokens: Option<&dyn crate::features::V2TokenSource>,
) -> Result<(RunReport, Trainer), RunError> {
    let t_all = Instant::now();
    let mut trainer = match &spec.start {
        Start::Fresh => Trainer::new(spec.config.clone(), data)?,
        Start::Resume(p) => {
            // The checkpoint's config, trained up to this run's epochs (so a
            // finished run can be extended).
            let mut t = Trainer::resume(p)?;
            t.cfg.epochs = spec.config.epochs;
            t
        }
        Start::WarmStart(p) => Trainer::warm_start(p, spec.config.clone())?,
    };
    if trainer.cfg.nal_needs_logged_impressions() && !data.has_impressions() {
        // The every-position loss would silently train nothing.
        return Err(RunError::Invalid(format!(
            "the Next Action Loss at every position is set to take impression negatives, but {} \
             has no impressions (a rating log never does): use in-batch negatives \
             (--nal-negatives in-batch or both)",
            data.name
        )));
    }
    // Under the SASRec protocol training sees nothing from a user's
    // validation item on (the evaluation below reads the whole log).
    let view = spec
        .sasrec
        .as_ref()
        .and_then(|(split, _)| split.training_view(data, train));
    let seen = view.as_ref().unwrap_or(data);
    let feat = match tokens {
        None => Featurizer::new(seen, train, trainer.cfg.feature_config()),
        Some(t) => Featurizer::with_token_source(seen, train, trainer.cfg.feature_config(), t),
    }
    .map_err(RunError::Invalid)?;
    if feat.item_rows() != trainer.net().config().item_rows {
        return Err(RunError::Invalid(format!(
            "the model has {} item rows, this dataset needs {} (a checkpoint from another item catalogue?)",
            trainer.net().config().item_rows,
            feat.item_rows()
        )));
    }
    let examples = feat.examples().len();
    if examples == 0 {
        return Err(RunError::Invalid("no training examples".into()));
    }
    let per_epoch = trainer.steps_per_epoch(examples);
    let epochs = trainer.cfg.epochs;
    let total = per_epoch * epochs as u64;
    let ckpt_dir = match &spec.dir {
        Some(d) => {
            let c = d.join("checkpoints");
            std::fs::create_dir_all(&c).map_err(|e| io_err(&c, e))?;
            write_json(&d.join("config.json"), &trainer.cfg)?;
            Some(c)
        }
        None => None,
    };
    // The SASRec protocol ranks through the serving path (see
    // [`evaluate`]): a store with the whole log, built once.
    let served = match &spec.sasrec {
        Some(_) if trainer.cfg.use_sequence => Some(memory_store(data)?),
        _ => None,
    };
    let served = served.as_ref();
    progress.start(&spec.name, total.saturating_sub(trainer.step));
    let mut evals: Vec<EvalRecord> = Vec::new();
    let mut train_seconds = 0.0;
    let rule = spec.stop;
    let select = rule.patience.is_some() && spec.sasrec.is_some() && served.is_some();
    // (index in `evals`, its validation NDCG@10, its parameters).
    let mut best: Option<(usize, f64, Vec<f32>)> = None;
    let mut since_best = 0usize;
    let mut schedule_total = total;
    let first_step = trainer.step;
    while trainer.epoch < epochs {
        let t0 = Instant::now();
        let before = train_seconds;
        let completed = trainer.train_epoch_with(&feat, &mut schedule_total, &mut |r, total| {
            progress.step(r);
            let Some(budget) = rule.budget else {
                return true;
            };
            let spent = before + t0.elapsed().as_secs_f64();
            let done = r.step - first_step;
            if done == BUDGET_PROBE_STEPS {
                // Stretch the schedule to the steps the budget holds.
                let per_step = spent / done as f64;
                let left = ((budget.as_secs_f64() - spent) / per_step).max(0.0) as u64;
                *total = (r.step + left).min(*total).max(r.step + 1);
            }
            spent < budget.as_secs_f64()
        })?;
        train_seconds += t0.elapsed().as_secs_f64();
        if let Some(c) = &ckpt_dir {
            let p = c.join(format!("epoch-{}.safetensors", trainer.epoch));
            trainer.save_checkpoint(&p)?;
            std::fs::copy(&p, c.join("last.safetensors")).map_err(|e| io_err(&p, e))?;
        }
        let last = trainer.epoch == epochs || !completed;
        if spec.eval_every_epoch || last || select {
            progress.note(&format!("evaluating after epoch {}", trainer.epoch));
            let record = evaluate_with(&trainer, data, test, spec.sasrec.as_ref(), served, select)?;
            if let Some((_, ndcg)) = record.validation {
                if best.as_ref().is_none_or(|b| ndcg > b.1) {
                    best = Some((evals.len(), ndcg, trainer.params.data().to_vec()));
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            evals.push(record);
        }
        if !completed {
            progress.note("time budget spent");
            break;
        }
        if select && rule.patience.is_some_and(|p| since_best >= p) {
            progress.note(&format!(
                "no better validation NDCG@10 in {since_best} epochs: stopping"
            ));
            break;
        }
    }
    if evals.is_empty() {
        evals.push(evaluate_with(
            &trainer,
            data,
            test,
            spec.sasrec.as_ref(),
            served,
            false,
        )?);
    }
    let mut kept = None;
    if let Some((index, _, params)) = best {
        // The kept epoch's parameters (and its epoch and step, which name
        // the caller's export); its checkpoint, optimiser state included,
        // is `best.safetensors`.
        trainer.params.data_mut().copy_from_slice(&params);
        let record = &evals[index];
        trainer.epoch = record.epoch;
        trainer.step = record.step;
        if let Some(c) = &ckpt_dir {
            let p = c.join(format!("epoch-{}.safetensors", record.epoch));
            std::fs::copy(&p, c.join("best.safetensors")).map_err(|e| io_err(&p, e))?;
        }
        kept = Some(index);
    }
    progress.finish();
    let steps = trainer.history.clone();
    let done: u64 = steps.iter().map(|s| u64::from(s.examples)).sum();
    let examples_per_s = if train_seconds > 0.0 {
        done as f64 / train_seconds
    } else {
        0.0
    };
    let report = RunReport {
        name: spec.name.clone(),
        dataset: data.name.clone(),
        heads: data.heads.clone(),
        train_examples: examples,
        steps_per_epoch: per_epoch,
        examples_per_s,
        train_seconds,
        total_seconds: t_all.elapsed().as_secs_f64(),
        evals,
        kept,
        steps,
    };
    if let Some(d) = &spec.dir {
        write_json(&d.join("metrics.json"), &report)?;
        write_plots(d, &report)?;
    }
    Ok((report, trainer))
}

/// HIT@3 on `test` (and SASRec metrics when asked) with the current
/// parameters, all through the trainer's forward.
pub fn evaluate(
    trainer: &Trainer,
    data: &Dataset,
    test: &[LoggedRequest],
    sasrec: Option<&(SasrecSplit, u64)>,
) -> Result<EvalRecord, RunError> {
    evaluate_with(trainer, data, test, sasrec, None, false)
}

/// [`evaluate`]; with `served` (a [`memory_store`] of `data`), the SASRec
/// metrics are computed through the serving path instead: the current
/// parameters exported as a bundle, ranked by a [`transact_rank::Ranker`] over the store,
/// scored by P(any interaction). That is the model a service runs (the
/// contract tests hold the two paths equal), and it scores a user's 101
/// candidates with the request-level forward (a user's part of the first
/// layer once for all of them) instead of 101 independent examples.
/// `validation` also ranks the validation items there (one export, one
/// ranker for both targets), into [`EvalRecord::validation`].
pub fn evaluate_with(
    trainer: &Trainer,
    data: &Dataset,
    test: &[LoggedRequest],
    sasrec: Option<&(SasrecSplit, u64)>,
    served: Option<&Arc<EmbeddedStore>>,
    validation: bool,
) -> Result<EvalRecord, RunError> {
    let scorer = trainer.scorer(data)?;
    let hit: HitAtK = hit_at_k(data, test, 3, &scorer)?;
    let mut valid = None;
    let sas = match (sasrec, served) {
        (Some((split, seed)), Some(store)) => {
            let bundle = export_bundle(trainer, data, "evaluation", Provenance::default())?;
            let targets: &[SasrecTarget] = if validation {
                &[SasrecTarget::Test, SasrecTarget::Validation]
            } else {
                &[SasrecTarget::Test]
            };
            let m = sasrec_served(&bundle, store.clone(), data, split, targets, *seed)?;
            valid = m.get(1).map(|v| (v.hr, v.ndcg));
            m.first().map(|m| (m.hr, m.ndcg))
        }
        (Some((split, seed)), None) => {
            // The protocol's target is the next interaction of any kind:
            // score by the summed head probabilities.
            let any = trainer.scorer_with(data, vec![1.0; data.heads.len()])?;
            let m = sasrec_eval(data, split, 100, *seed, &any)?;
            Some((m.hr, m.ndcg))
        }
        (None, _) => None,
    };
    Ok(EvalRecord {
        epoch: trainer.epoch,
        step: trainer.step,
        hit3: hit.per_head.clone(),
        requests: test.len(),
        sasrec: sas,
        validation: valid,
    })
}

fn write_plots(dir: &Path, r: &RunReport) -> Result<(), RunError> {
    // Losses, smoothed over a window of steps so the curve is readable.
    let smooth = |f: &dyn Fn(&StepRecord) -> f32| -> Vec<(f64, f64)> {
        let w = (r.steps.len() / 100).max(1);
        r.steps
            .chunks(w)
            .map(|c| {
                let y = c.iter().map(|s| f64::from(f(s))).sum::<f64>() / c.len() as f64;
                (c[c.len() - 1].step as f64, y)
            })
            .collect()
    };
    let bce = smooth(&|s| s.bce);
    let nal = smooth(&|s| s.nal);
    let mut series: Vec<(&str, &[(f64, f64)])> = vec![("weighted BCE", &bce)];
    if nal.iter().any(|p| p.1 > 0.0) {
        series.push(("next action loss", &nal));
    }
    crate::plot::write_svg(
        &dir.join("loss.svg"),
        &format!("{}: training loss", r.name),
        "step",
        &series,
    )
    .map_err(RunError::Invalid)?;
    let per_head: Vec<Vec<(f64, f64)>> = (0..r.heads.len())
        .map(|h| {
            r.evals
                .iter()
                .map(|e| (e.epoch as f64, e.hit3.get(h).copied().unwrap_or(f64::NAN)))
                .collect()
        })
        .collect();
    let series: Vec<(&str, &[(f64, f64)])> = r
        .heads
        .iter()
        .zip(&per_head)
        .map(|(h, p)| (h.as_str(), p.as_slice()))
        .collect();
    crate::plot::write_svg(
        &dir.join("hit3.svg"),
        &format!("{}: HIT@3 per head", r.name),
        "epoch",
        &series,
    )
    .map_err(RunError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SyntheticConfig, generate_with_truth};
    use transact_seq::ActionType;

    #[test]
    fn every_position_impression_negatives_without_impressions_are_refused() {
        let world = SyntheticConfig {
            users: 6,
            items: 80,
            sessions: 2,
            ..SyntheticConfig::default()
        };
        let mut data = generate_with_truth(&world, 1).expect("world").0;
        for u in &mut data.users {
            u.actions
                .retain(|a| a.action_type != ActionType::IMPRESSION);
        }
        let (train, test) = data.split_requests_by_time(0.2);
        let mut config = TrainConfig::new(&data.heads, world.dim);
        config.epochs = 1;
        config.v1.seq_len = 4;
        config.nal_weight = 0.1;
        config.features.nal_impressions = true;
        let spec = |config: TrainConfig| RunSpec {
            name: "t".into(),
            config,
            start: Start::Fresh,
            dir: None,
            sasrec: None,
            eval_every_epoch: false,
            stop: StopRule::default(),
        };
        // At the newest position the slate's unengaged candidates are the
        // negatives: that trains.
        assert!(run(&spec(config.clone()), &data, train, test, &Quiet).is_ok());
        config.features.nal_every_position = true;
        let msg = match run(&spec(config.clone()), &data, train, test, &Quiet) {
            Ok(_) => panic!("impression negatives at every position without impressions trained"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("no impressions") && msg.contains("in-batch"),
            "{msg}"
        );
        // In-batch negatives, or impressions together with them, train.
        config.features.nal_in_batch_too = true;
        assert!(run(&spec(config.clone()), &data, train, test, &Quiet).is_ok());
        config.features.nal_impressions = false;
        config.features.nal_in_batch_too = false;
        assert!(run(&spec(config), &data, train, test, &Quiet).is_ok());
    }

    fn small_run(
        epochs: usize,
        stop: StopRule,
    ) -> (RunReport, Trainer, Dataset, Vec<LoggedRequest>, SasrecSplit) {
        let world = SyntheticConfig {
            users: 30,
            items: 120,
            sessions: 3,
            ..SyntheticConfig::default()
        };
        let data = generate_with_truth(&world, 3).expect("world").0;
        let split = crate::eval::sasrec_split(&data);
        let (train, test) = data.split_requests_by_time(0.2);
        let mut config = TrainConfig::new(&data.heads, world.dim);
        config.epochs = epochs;
        config.v1.seq_len = 4;
        config.v1.latest_n_emb = 2;
        config.v1.dim_feedforward = 16;
        config.heads.mlp_hidden = vec![16];
        config.threads = 2;
        let spec = RunSpec {
            name: "t".into(),
            config,
            start: Start::Fresh,
            dir: None,
            sasrec: Some((split.clone(), 1)),
            eval_every_epoch: true,
            stop,
        };
        let test = test.to_vec();
        let (report, trainer) = run(&spec, &data, train, &test, &Quiet).expect("run");
        (report, trainer, data, test, split)
    }

    #[test]
    fn the_best_validation_epoch_is_kept_and_patience_stops_the_run() {
        let stop = StopRule {
            budget: None,
            patience: Some(1),
        };
        let (report, trainer, data, test, split) = small_run(6, stop);
        let ndcg: Vec<f64> = report
            .evals
            .iter()
            .map(|e| e.validation.expect("validation figures").1)
            .collect();
        let kept = report.kept.expect("a kept epoch");
        let best = ndcg.iter().copied().fold(f64::MIN, f64::max);
        assert_eq!(ndcg[kept], best, "{ndcg:?}");
        assert_eq!(ndcg.iter().position(|&v| v == best), Some(kept));
        // Patience 1: at most one evaluation after the best.
        assert!(report.evals.len() <= kept + 2, "{ndcg:?}");
        assert_eq!(report.last(), report.evals.get(kept));
        // The returned model is the kept epoch's: it scores its test figures.
        let store = memory_store(&data).expect("store");
        let again = evaluate_with(
            &trainer,
            &data,
            &test,
            Some(&(split, 1)),
            Some(&store),
            false,
        )
        .expect("eval");
        assert_eq!(again.sasrec, report.evals[kept].sasrec);
    }

    #[test]
    fn a_time_budget_stops_training() {
        let stop = StopRule {
            budget: Some(std::time::Duration::from_millis(50)),
            patience: None,
        };
        let (report, trainer, ..) = small_run(100_000, stop);
        assert!(trainer.epoch < 100_000, "the budget stopped nothing");
        assert_eq!(report.kept, None);
        // Training stops within a few steps of the budget (a step here is
        // a few ms), not at the epochs' end.
        assert!(report.train_seconds < 5.0, "{}", report.train_seconds);
        assert!(report.last().is_some_and(|e| e.sasrec.is_some()));
    }
}
