//! The ablation: the same data, seed and schedule for each step of the
//! model, from a no-sequence baseline to TransAct with the Next Action Loss
//! on impression negatives, reported as relative lifts of HIT@3 per head
//! over the baseline (the layout of the papers' tables).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, LoggedRequest};
use crate::run::{Progress, RunSpec, Start, run};
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
        "+ NAL, impression + in-batch negatives"
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

/// Trains and evaluates every variant of `base` on the same data; each
/// model's run directory is `dir/<index>-<slug>` when `dir` is given.
pub fn ablate(
    base: &TrainConfig,
    data: &Dataset,
    train: &[LoggedRequest],
    test: &[LoggedRequest],
    dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Vec<AblationRow>, RunError> {
    let mut rows: Vec<AblationRow> = Vec::new();
    for (i, (name, cfg)) in variants(base).into_iter().enumerate() {
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
