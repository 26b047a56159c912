//! Trains the ablation on the synthetic world and prints the table (a
//! development shortcut for `transact ablate`).
//!
//! `cargo run --release -p transact-train --example train_synth [users] [epochs] [only]`

use std::time::Instant;

use transact_train::ablate::{markdown, variants};
use transact_train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact_train::eval::hit_at_k;
use transact_train::run::{Quiet, RunSpec, Start, StopRule, run};
use transact_train::trainer::TrainConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    // TRANSACT_WORLD: a JSON SyntheticConfig (missing fields default).
    let mut world: SyntheticConfig = match std::env::var("TRANSACT_WORLD") {
        Ok(j) => serde_json::from_str(&j)?,
        Err(_) => SyntheticConfig::default(),
    };
    if let Some(u) = args.get(1) {
        world.users = u.parse()?;
    }
    let t0 = Instant::now();
    let (data, truth) = generate_with_truth(&world, 1)?;
    let cut = data.time_split_index(0.2);
    let (train, test) = data.requests.split_at(cut);
    eprintln!(
        "world: {} requests ({} train) in {:.1?}",
        data.requests.len(),
        train.len(),
        t0.elapsed()
    );
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    if let Some(e) = args.get(2) {
        cfg.epochs = e.parse()?;
    }
    // TRANSACT_WINDOW_MIN: the maximum random time window, in minutes.
    if let Ok(w) = std::env::var("TRANSACT_WINDOW_MIN") {
        cfg.features.time_window_ms = w.parse::<i64>()? * 60_000;
    }
    // TRANSACT_NAL_POSITIVES / TRANSACT_NAL_HORIZON_MIN: NAL targets per
    // example and their horizon.
    if let Ok(v) = std::env::var("TRANSACT_NAL_POSITIVES") {
        cfg.features.nal_positives = v.parse()?;
    }
    if let Ok(v) = std::env::var("TRANSACT_NAL_HORIZON_MIN") {
        cfg.features.nal_horizon_ms = v.parse::<i64>()? * 60_000;
    }
    if let Ok(v) = std::env::var("TRANSACT_LEARN_ITEMS") {
        cfg.learn_items = v == "1";
    }
    if let Ok(v) = std::env::var("TRANSACT_NAL_MIXED") {
        cfg.features.nal_in_batch_too = v == "1";
    }
    if let Ok(v) = std::env::var("TRANSACT_NAL_EVERY") {
        cfg.features.nal_every_position = v == "1";
    }
    // TRANSACT_SEED: the training seed (the world keeps seed 1).
    if let Ok(v) = std::env::var("TRANSACT_SEED") {
        cfg.seed = v.parse()?;
    }
    if let Ok(v) = std::env::var("TRANSACT_NAL_NEGATIVES") {
        cfg.features.nal_negatives = v.parse()?;
    }
    let only: Option<usize> = args.get(3).map(|s| s.parse()).transpose()?;
    if let Some(w) = args.get(4) {
        cfg.nal_weight = w.parse()?;
    }
    let mut rows = Vec::new();
    for (i, (name, c)) in variants(&cfg).into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let spec = RunSpec {
            name: name.clone(),
            config: c,
            start: Start::Fresh,
            dir: None,
            sasrec: None,
            eval_every_epoch: true,
            stop: StopRule::default(),
        };
        let (r, _) = run(&spec, &data, train, test, &Quiet)?;
        for e in &r.evals {
            eprintln!("{name}: epoch {} HIT@3 {:?}", e.epoch, e.hit3);
        }
        eprintln!(
            "{name}: {:.0} ex/s, train {:.1} s, total {:.1} s",
            r.examples_per_s, r.train_seconds, r.total_seconds
        );
        let hit3 = r.last().map(|e| e.hit3.clone()).unwrap_or_default();
        rows.push(transact_train::ablate::AblationRow {
            name,
            lift_pct: vec![0.0; hit3.len()],
            hit3,
            examples_per_s: r.examples_per_s,
            seconds: r.total_seconds,
        });
    }
    println!("{}", markdown(&rows, &data.heads));
    let full = hit_at_k(&data, test, 3, &truth)?;
    let topic = hit_at_k(&data, test, 3, &truth.topic_level())?;
    println!(
        "ceiling HIT@3 (ground truth): {:?}; topic-level truth: {:?}",
        full.per_head, topic.per_head
    );
    Ok(())
}
