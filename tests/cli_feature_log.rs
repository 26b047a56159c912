//! The feature log through the binary: `transact rank --feature-log`
//! writes the tokens of every ranked request of a V2 bundle, and `transact
//! train --feature-log` trains from it the same model (the same checkpoint,
//! byte for byte) as `transact train` replaying the histories; a log that
//! does not fit the run is refused by name.

mod common;

use common::{Out, transact};
use std::path::Path;

use transact::train::data::synthetic::{SyntheticConfig, generate_with_truth};

const USERS: usize = 6;
const ITEMS: usize = 80;

/// The synthetic world of `--users USERS --items ITEMS` (seed 1).
const WORLD: &[&str] = &["--users", "6", "--items", "80"];

/// A small V2 run of that world.
const RUN: &[&str] = &[
    "--model",
    "v2",
    "--epochs",
    "1",
    "--seq-len",
    "8",
    "--batch",
    "64",
    "--threads",
    "2",
];

fn train(out: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["train", "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(WORLD);
    args.extend_from_slice(RUN);
    args.extend_from_slice(extra);
    transact(&args, None)
}

/// The training requests of the world (`transact train`'s split, test
/// fraction 0.2) as `transact rank` JSON lines.
fn training_requests() -> (String, usize) {
    let world = SyntheticConfig {
        users: USERS,
        items: ITEMS,
        ..SyntheticConfig::default()
    };
    let data = generate_with_truth(&world, 1).expect("world").0;
    let cut = data.time_split_index(0.2);
    let mut lines = String::new();
    for r in &data.requests[..cut] {
        let candidates: Vec<&str> = r
            .candidates
            .iter()
            .map(|c| data.items.raw_ids[c.item as usize].as_str())
            .collect();
        let line = serde_json::json!({
            "user": data.users[r.user as usize].raw_id,
            "time_ms": r.time_ms,
            "candidates": candidates,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    (lines, cut)
}

#[test]
fn rank_writes_the_feature_log_and_train_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();

    // A V2 bundle, and a store of the same world.
    let served = path("served");
    let t = train(&served, &[]);
    assert!(t.ok, "{}{}", t.stdout, t.stderr);
    let store = path("store");
    let mut ingest = vec!["ingest", "synthetic", "--store"];
    let store_s = s(&store);
    ingest.push(&store_s);
    ingest.extend_from_slice(WORLD);
    let i = transact(&ingest, None);
    assert!(i.ok, "{}{}", i.stdout, i.stderr);

    // Rank every training request with the log on.
    let log = path("features.parquet");
    let (log_s, bundle_s) = (s(&log), s(&served.join("bundle")));
    let (lines, requests) = training_requests();
    let r = transact(
        &[
            "rank",
            "--bundle",
            &bundle_s,
            "--store",
            &store_s,
            "--cpu",
            "--feature-log",
            &log_s,
        ],
        Some(&lines),
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), requests);
    assert!(
        r.stderr
            .contains(&format!("feature log: {requests} requests")),
        "{}",
        r.stderr
    );
    let read = transact::log::FeatureLog::open(&log).expect("the log reads");
    assert!(!read.is_empty());

    // Trained from the log == trained from the histories (the served run
    // is that: the same flags, replaying the histories).
    let (from_log, replayed) = (path("from-log"), &served);
    let a = train(&from_log, &["--feature-log", &log_s]);
    assert!(a.ok, "{}{}", a.stdout, a.stderr);
    let b = &t;
    let hit = |o: &Out| {
        o.stdout
            .lines()
            .find(|l| l.starts_with("HIT@3 over"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no HIT@3 line in {}", o.stdout))
    };
    assert_eq!(hit(&a), hit(b));
    let ckpt = |run: &Path| std::fs::read(run.join("checkpoints/last.safetensors")).expect("ckpt");
    assert!(
        ckpt(&from_log) == ckpt(replayed),
        "the checkpoints trained from the log and from the histories differ"
    );

    // A log that does not fit the run is refused, saying why.
    let v1 = transact(
        &[
            "train",
            "--out",
            &s(&path("v1")),
            "--users",
            "6",
            "--items",
            "80",
            "--epochs",
            "1",
            "--feature-log",
            &log_s,
        ],
        None,
    );
    assert!(!v1.ok);
    assert!(v1.stderr.contains("--model v2"), "{}", v1.stderr);
    let more = train(
        &path("more"),
        &["--feature-log", &log_s, "--test-fraction", "0.1"],
    );
    assert!(!more.ok);
    assert!(
        more.stderr.contains("is not in the feature log") && more.stderr.contains(&log_s),
        "{}",
        more.stderr
    );
    let csv = path("ratings.csv");
    std::fs::write(&csv, "userId,movieId,rating,timestamp\n1,2,4.0,100\n").expect("write");
    let foreign = train(&path("foreign"), &["--feature-log", &s(&csv)]);
    assert!(!foreign.ok);
    assert!(
        foreign.stderr.contains("--feature-log") && foreign.stderr.contains("not a Parquet file"),
        "{}",
        foreign.stderr
    );
}
