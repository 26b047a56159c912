//! The ablation: the same data, seed and schedule for each step of the
//! model, from a no-sequence baseline to TransAct with the Next Action Loss
//! on impression negatives, reported as relative lifts of HIT@3 per head
//! over the baseline (the layout of the papers' tables).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, LoggedRequest};
use crate::run::{Progress, RunSpec, Start, StopRule, run};
use crate::trainer::{RunError, TrainConfig};

/// One model of the ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationRow {
    /// Label in the table.
    pub name: String,
    /// HIT@3 per head.
    pub hit3: Vec<f64>,
    /// Relative change over the first row, in percent, per head.
    pub lift_pct: Vec<f64>,
    /// Training examples per second.
    pub examples_per_s: f64,
    /// Wall time of the model's run (s).
    pub seconds: f64,
}

/// Label of the last row when impression and in-batch negatives are mixed.
const MIXED_ROW: &str = "+ NAL, impression + in-batch negatives";

/// The models compared, in order, each the previous one plus one thing:
/// candidate + user features only; + the realtime sequence (TransAct);
/// + NAL with in-batch negatives; NAL with impression negatives instead.
///
/// With `nal_in_batch_too` set in `base`, the last row adds the impression
/// negatives to the in-batch ones, and is labelled so.
///
/// `nal_weight` of `base` is the weight used where NAL is on (0.01 if 0).
pub fn variants(base: &TrainConfig) -> Vec<(String, TrainConfig)> {
    let w = if base.nal_weight > 0.0 {
        base.nal_weight
    } else {
        0.01
    };
    let mut baseline = base.clone();
    baseline.use_sequence = false;
    baseline.nal_weight = 0.0;
    let mut realtime = base.clone();
    realtime.use_sequence = true;
    realtime.nal_weight = 0.0;
    let mut in_batch = realtime.clone();
    in_batch.nal_weight = w;
    in_batch.features.nal_impressions = false;
    let mut impressions = in_batch.clone();
    impressions.features.nal_impressions = true;
    let last = if impressions.features.nal_in_batch_too {
        MIXED_ROW
    } else {
        "+ NAL, impression negatives"
    };
    vec![
        ("no sequence (candidate + user features)".into(), baseline),
        ("TransAct (realtime sequence)".into(), realtime),
        ("+ NAL, in-batch negatives".into(), in_batch),
        (last.into(), impressions),
    ]
}

/// Label of the TransAct V2 row.
pub const V2_ROW: &str = "TransAct V2 (selected lifelong + realtime + impression tokens, NAL)";

/// [`variants`] fitted to `data`: on data without impressions (a rating
/// log), NAL at every position cannot take impression negatives alone (the
/// positions inside the sequence would have none), so the last row adds the
/// in-batch negatives, and is labelled so; at the newest position the
/// impression negatives are then the slate's unengaged candidates.
///
/// When the data has pretrained item embeddings (V2 selects by their int8
/// codes), a last row is TransAct V2: the last realtime row's training
/// with the V2 encoder ([`TrainConfig::with_v2`]).
pub fn variants_for(base: &TrainConfig, data: &Dataset) -> Vec<(String, TrainConfig)> {
    let mut v = variants(base);
    if !data.has_impressions() {
        for (name, c) in &mut v {
            if c.nal_needs_logged_impressions() {
                c.features.nal_in_batch_too = true;
                *name = MIXED_ROW.into();
            }
        }
    }
    if data.items.embeddings.is_some()
        && let Some((_, last)) = v.last()
    {
        let v2 = last.clone().with_v2();
        v.push((V2_ROW.into(), v2));
    }
    v
}

/// Trains and evaluates every variant of `base` ([`variants_for`] the data)
/// on the same data; each model's run directory is `dir/<index>-<slug>`
/// when `dir` is given.
///
/// One training seed (`base.seed`); see [`ablate_seeds`] for several.
pub fn ablate(
    base: &TrainConfig,
    data: &Dataset,
    train: &[LoggedRequest],
    test: &[LoggedRequest],
    dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Vec<AblationRow>, RunError> {
    let mut rows: Vec<AblationRow> = Vec::new();
    for (i, (name, cfg)) in variants_for(base, data).into_iter().enumerate() {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let spec = RunSpec {
            name: name.clone(),
            config: cfg,
            start: Start::Fresh,
            dir: dir.map(|d| d.join(format!("{i}-{slug}"))),
            sasrec: None,
            eval_every_epoch: false,
            stop: StopRule::default(),
        };
        let (report, _) = run(&spec, data, train, test, progress)?;
        let hit3 = report.last().map(|e| e.hit3.clone()).unwrap_or_default();
        let lift_pct = match rows.first() {
            Some(b) => hit3
                .iter()
                .zip(&b.hit3)
                .map(|(&x, &b)| if b > 0.0 { 100.0 * (x - b) / b } else { 0.0 })
                .collect(),
            None => vec![0.0; hit3.len()],
        };
        rows.push(AblationRow {
            name,
            hit3,
            lift_pct,
            examples_per_s: report.examples_per_s,
            seconds: report.total_seconds,
        });
    }
    Ok(rows)
}

/// One model of the ablation over several training seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    /// Label in the table.
    pub name: String,
    /// HIT@3 per head, mean over the seeds.
    pub mean: Vec<f64>,
    /// HIT@3 per head, sample standard deviation over the seeds (0 for one
    /// seed).
    pub std: Vec<f64>,
    /// Relative change of the mean over the first row's mean, in percent,
    /// per head.
    pub lift_pct: Vec<f64>,
    /// Relative change over the previous row, in percent, per head: the mean
    /// over the seeds of each seed's own step (0 for the first row).
    pub step_pct: Vec<f64>,
    /// The smallest and the largest per-seed step, per head.
    pub step_range: Vec<(f64, f64)>,
}

/// An ablation repeated with several training seeds on the same data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedAblation {
    /// The training seeds, in order.
    pub seeds: Vec<u64>,
    /// The rows of each seed's ablation, in the order of `seeds`.
    pub runs: Vec<Vec<AblationRow>>,
    /// Per model: mean, spread, lift and step over the seeds.
    pub summary: Vec<SeedSummary>,
}

/// Runs [`ablate`] once per training seed — `base.seed`, `base.seed + 1`, …,
/// `seeds` of them — on the same data and split, and summarises each model
/// by mean and spread. Rounding alone moves a row by a fraction of a
/// percent, so a step between two rows is judged over seeds, not one run.
///
/// With one seed the run directories are those of [`ablate`]; with more,
/// each seed's runs go under `dir/seed-<seed>/`. `seeds` of 0 counts as 1.
pub fn ablate_seeds(
    base: &TrainConfig,
    seeds: usize,
    data: &Dataset,
    train: &[LoggedRequest],
    test: &[LoggedRequest],
    dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<SeedAblation, RunError> {
    let seeds: Vec<u64> = (0..seeds.max(1) as u64)
        .map(|k| base.seed.wrapping_add(k))
        .collect();
    let mut runs = Vec::with_capacity(seeds.len());
    for &seed in &seeds {
        let mut cfg = base.clone();
        cfg.seed = seed;
        let sub = match dir {
            Some(d) if seeds.len() > 1 => Some(d.join(format!("seed-{seed}"))),
            other => other.map(Path::to_path_buf),
        };
        runs.push(ablate(&cfg, data, train, test, sub.as_deref(), progress)?);
    }
    let summary = summarise(&runs);
    Ok(SeedAblation {
        seeds,
        runs,
        summary,
    })
}

/// Relative change of `x` over `b` in percent (0 where `b` is not positive).
fn rel_pct(x: f64, b: f64) -> f64 {
    if b > 0.0 { 100.0 * (x - b) / b } else { 0.0 }
}

/// Mean and sample standard deviation (0 for fewer than two values).
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Per model, the mean and spread over seeds, the lift of the mean over the
/// first model and the per-seed step over the previous model.
fn summarise(runs: &[Vec<AblationRow>]) -> Vec<SeedSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let at = |r: &Vec<AblationRow>, j: usize, h: usize| {
        r.get(j).and_then(|x| x.hit3.get(h)).copied().unwrap_or(0.0)
    };
    let mut out: Vec<SeedSummary> = Vec::with_capacity(first.len());
    for (i, row) in first.iter().enumerate() {
        let heads = row.hit3.len();
        let mut mean = Vec::with_capacity(heads);
        let mut std = Vec::with_capacity(heads);
        let mut step_pct = Vec::with_capacity(heads);
        let mut step_range = Vec::with_capacity(heads);
        for h in 0..heads {
            let v: Vec<f64> = runs.iter().map(|r| at(r, i, h)).collect();
            let (m, s) = mean_std(&v);
            mean.push(m);
            std.push(s);
            if i == 0 {
                step_pct.push(0.0);
                step_range.push((0.0, 0.0));
            } else {
                let steps: Vec<f64> = runs
                    .iter()
                    .map(|r| rel_pct(at(r, i, h), at(r, i - 1, h)))
                    .collect();
                step_pct.push(mean_std(&steps).0);
                let lo = steps.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = steps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                step_range.push((lo, hi));
            }
        }
        let lift_pct = match out.first() {
            Some(b) => mean
                .iter()
                .zip(&b.mean)
                .map(|(&x, &b)| rel_pct(x, b))
                .collect(),
            None => vec![0.0; heads],
        };
        out.push(SeedSummary {
            name: row.name.clone(),
            mean,
            std,
            lift_pct,
            step_pct,
            step_range,
        });
    }
    out
}

/// The multi-seed table as markdown: per head the mean HIT@3 ± its standard
/// deviation, the lift of the mean over the baseline, and the step over the
/// previous row (mean of the per-seed steps, with their range).
pub fn markdown_seeds(ab: &SeedAblation, heads: &[String]) -> String {
    let mut s = String::from("| model |");
    for h in heads {
        let _ = write!(s, " HIT@3 {h} | lift {h} | step {h} (min … max) |");
    }
    s.push_str("\n|---|");
    for _ in heads {
        s.push_str("---:|---:|---:|");
    }
    s.push('\n');
    for (i, r) in ab.summary.iter().enumerate() {
        let _ = write!(s, "| {} |", r.name);
        for h in 0..r.mean.len() {
            let m = r.mean[h];
            let sd = r.std.get(h).copied().unwrap_or(0.0);
            if i == 0 {
                let _ = write!(s, " {m:.4} ± {sd:.4} | — | — |");
            } else {
                let lift = r.lift_pct.get(h).copied().unwrap_or(0.0);
                let step = r.step_pct.get(h).copied().unwrap_or(0.0);
                let (lo, hi) = r.step_range.get(h).copied().unwrap_or((0.0, 0.0));
                let _ = write!(
                    s,
                    " {m:.4} ± {sd:.4} | {lift:+.2}% | {step:+.2}% ({lo:+.2}% … {hi:+.2}%) |"
                );
            }
        }
        s.push('\n');
    }
    let seeds: Vec<String> = ab.seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(
        s,
        "\nTraining seeds {} (± is the standard deviation over seeds).",
        seeds.join(", ")
    );
    s
}

/// The table as markdown: HIT@3 per head and the lift over the baseline.
pub fn markdown(rows: &[AblationRow], heads: &[String]) -> String {
    let mut s = String::from("| model |");
    for h in heads {
        let _ = write!(s, " HIT@3 {h} | lift {h} |");
    }
    s.push_str(" train ex/s | time (s) |\n|---|");
    for _ in heads {
        s.push_str("---:|---:|");
    }
    s.push_str("---:|---:|\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(s, "| {} |", r.name);
        for (h, v) in r.hit3.iter().enumerate() {
            let lift = if i == 0 {
                "—".to_string()
            } else {
                format!("{:+.2}%", r.lift_pct.get(h).copied().unwrap_or(0.0))
            };
            let _ = write!(s, " {v:.4} | {lift} |");
        }
        let _ = writeln!(s, " {:.0} | {:.0} |", r.examples_per_s, r.seconds);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_adds_one_thing() {
        let base = TrainConfig::new(&["repin".into(), "click".into(), "hide".into()], 8);
        let v = variants(&base);
        assert_eq!(v.len(), 4);
        assert!(!v[0].1.use_sequence && v[0].1.nal_weight == 0.0);
        assert!(v[1].1.use_sequence && v[1].1.nal_weight == 0.0);
        assert!(v[2].1.nal_weight > 0.0 && !v[2].1.features.nal_impressions);
        assert!(v[3].1.nal_weight > 0.0 && v[3].1.features.nal_impressions);
        assert_eq!(v[3].0, "+ NAL, impression negatives");
        // Impressions added to the in-batch negatives say so.
        let mut mixed = base.clone();
        mixed.features.nal_in_batch_too = true;
        let m = variants(&mixed);
        assert!(m[3].1.features.nal_impressions && m[3].1.features.nal_in_batch_too);
        assert_eq!(m[3].0, "+ NAL, impression + in-batch negatives");
        // Everything else is shared.
        for (_, c) in &v {
            assert_eq!(c.seed, base.seed);
            assert_eq!(c.epochs, base.epochs);
            assert_eq!(c.v1, base.v1);
        }
    }

    fn row(name: &str, hit3: &[f64]) -> AblationRow {
        AblationRow {
            name: name.into(),
            hit3: hit3.to_vec(),
            lift_pct: Vec::new(),
            examples_per_s: 0.0,
            seconds: 0.0,
        }
    }

    #[test]
    fn seeds_are_summarised_by_mean_spread_and_per_seed_step() {
        // Two seeds, two models, two heads.
        let runs = vec![
            vec![row("a", &[1.0, 0.2]), row("b", &[1.1, 0.1])],
            vec![row("a", &[2.0, 0.4]), row("b", &[2.4, 0.4])],
        ];
        let s = summarise(&runs);
        assert_eq!(s.len(), 2);
        assert!((s[0].mean[0] - 1.5).abs() < 1e-12);
        // Sample standard deviation of {1, 2}.
        assert!((s[0].std[0] - 0.5f64.sqrt()).abs() < 1e-12);
        // Lift of the means: 1.75 over 1.5.
        assert!((s[1].lift_pct[0] - 100.0 * 0.25 / 1.5).abs() < 1e-9);
        // Per-seed steps +10% and +20%: mean 15%, range 10..20. The lift of
        // the means (16.7%) differs, which is why both are reported.
        assert!((s[1].step_pct[0] - 15.0).abs() < 1e-9);
        assert!((s[1].step_range[0].0 - 10.0).abs() < 1e-9);
        assert!((s[1].step_range[0].1 - 20.0).abs() < 1e-9);
        // Hide: −50% and 0%.
        assert!((s[1].step_pct[1] + 25.0).abs() < 1e-9);
        assert_eq!(s[0].step_pct, vec![0.0, 0.0]);
        let md = markdown_seeds(
            &SeedAblation {
                seeds: vec![1, 2],
                runs,
                summary: s,
            },
            &["repin".into(), "hide".into()],
        );
        assert!(
            md.contains("| b | 1.7500 ± 0.9192 | +16.67% | +15.00% (+10.00% … +20.00%) |"),
            "{md}"
        );
        assert!(md.contains("| a | 1.5000 ± 0.7071 | — | — |"), "{md}");
        assert!(md.contains("Training seeds 1, 2"), "{md}");
        // One seed: no spread.
        let one = summarise(&[vec![row("a", &[1.0]), row("b", &[1.2])]]);
        assert_eq!(one[1].std, vec![0.0]);
        assert!((one[1].step_pct[0] - 20.0).abs() < 1e-9);
        assert!(summarise(&[]).is_empty());
    }

    #[test]
    fn without_impressions_the_every_position_row_adds_in_batch_negatives() {
        let base = {
            let mut c = TrainConfig::new(&["repin".into()], 8);
            c.features.nal_every_position = true;
            c
        };
        let empty = Dataset::default();
        assert!(!empty.has_impressions());
        let v = variants_for(&base, &empty);
        assert!(v[3].1.features.nal_impressions && v[3].1.features.nal_in_batch_too);
        assert_eq!(v[3].0, "+ NAL, impression + in-batch negatives");
        // The in-batch row and the rows without NAL are untouched.
        assert_eq!(v[..3], variants(&base)[..3]);
        // At the newest position only, the slate's candidates serve: as is.
        let newest = TrainConfig::new(&["repin".into()], 8);
        assert_eq!(variants_for(&newest, &empty), variants(&newest));
    }

    #[test]
    fn with_pretrained_embeddings_the_last_row_is_v2() {
        let base = TrainConfig::new(&["repin".into()], 8);
        let mut data = Dataset::default();
        data.items.embeddings = Some(crate::data::ItemEmbeddings {
            dim: 8,
            data: Vec::new(),
        });
        let v = variants_for(&base, &data);
        assert_eq!(v.len(), 5);
        assert_eq!(v[4].0, V2_ROW);
        assert!(v[4].1.v2.is_some() && v[4].1.features.sequence.lifelong.is_some());
        // The V2 row is the last realtime row's training with the V2 encoder.
        let mut back = v[4].1.clone();
        back.v2 = None;
        back.features.sequence.lifelong = None;
        assert_eq!(back, v[3].1);
    }

    #[test]
    fn markdown_shows_lifts_against_the_first_row() {
        let rows = vec![
            AblationRow {
                name: "base".into(),
                hit3: vec![0.5, 0.2],
                lift_pct: vec![0.0, 0.0],
                examples_per_s: 1000.0,
                seconds: 10.0,
            },
            AblationRow {
                name: "better".into(),
                hit3: vec![0.55, 0.18],
                lift_pct: vec![10.0, -10.0],
                examples_per_s: 900.0,
                seconds: 12.0,
            },
        ];
        let md = markdown(&rows, &["repin".into(), "hide".into()]);
        assert!(
            md.contains("| better | 0.5500 | +10.00% | 0.1800 | -10.00% | 900 | 12 |"),
            "{md}"
        );
        assert!(md.contains("| base | 0.5000 | — |"), "{md}");
    }
}
