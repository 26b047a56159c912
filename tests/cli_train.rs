//! `transact train`, `eval` and `ablate` through the binary, on tiny data.

use std::path::Path;
use std::process::Command;

fn transact(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_transact"))
        .args(args)
        .output()
        .expect("run transact");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const TINY: &[&str] = &[
    "--users",
    "40",
    "--items",
    "300",
    "--epochs",
    "1",
    "--seq-len",
    "8",
    "--batch",
    "64",
    "--threads",
    "2",
];

#[test]
fn train_eval_warm_start_and_resume_on_the_synthetic_world() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8");
    let mut args = vec!["train", "--out", run_s];
    args.extend_from_slice(TINY);
    let (ok, text) = transact(&args);
    assert!(ok, "{text}");
    assert!(text.contains("HIT@3 over"), "{text}");
    for f in [
        "config.json",
        "metrics.json",
        "loss.svg",
        "hit3.svg",
        "bundle/manifest.json",
        "bundle/features.json",
        "bundle/model.safetensors",
        "bundle/items.safetensors",
        "checkpoints/epoch-1.safetensors",
        "checkpoints/last.safetensors",
    ] {
        assert!(run.join(f).is_file(), "{f} missing: {text}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).expect("read"))
            .expect("json");
    assert_eq!(
        metrics["evals"][0]["hit3"].as_array().map(Vec::len),
        Some(3)
    );
    // The exported bundle loads and checks as one unit.
    transact::rank::Bundle::load(run.join("bundle")).expect("serving bundle");

    let ckpt = run.join("checkpoints/last.safetensors");
    let ckpt_s = ckpt.to_str().expect("utf-8");
    let (ok, text) = transact(&[
        "eval",
        "--checkpoint",
        ckpt_s,
        "--users",
        "40",
        "--items",
        "300",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("HIT@3 over"), "{text}");

    // Warm start on "newer data" (another seed), and a resumed run that
    // continues for a second epoch.
    let warm = dir.path().join("warm");
    let mut args = vec![
        "train",
        "--out",
        warm.to_str().expect("utf-8"),
        "--from",
        ckpt_s,
        "--seed",
        "2",
    ];
    args.extend_from_slice(TINY);
    let (ok, text) = transact(&args);
    assert!(ok, "{text}");
    let resumed = dir.path().join("resumed");
    let (ok, text) = transact(&[
        "train",
        "--out",
        resumed.to_str().expect("utf-8"),
        "--resume",
        ckpt_s,
        "--users",
        "40",
        "--items",
        "300",
        "--epochs",
        "2",
    ]);
    assert!(ok, "{text}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(resumed.join("metrics.json")).expect("read"))
            .expect("json");
    // Only the second epoch ran in the resumed process.
    assert_eq!(metrics["evals"].as_array().map(Vec::len), Some(1));
    assert_eq!(metrics["evals"][0]["epoch"], 2);
    assert!(resumed.join("checkpoints/epoch-2.safetensors").is_file());

    // Bad input: a missing checkpoint is a clear error.
    let (ok, text) = transact(&["eval", "--checkpoint", "/nonexistent.safetensors"]);
    assert!(!ok);
    assert!(text.contains("nonexistent"), "{text}");
}

#[test]
fn train_on_an_imported_ratings_file_with_the_sasrec_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ratings = dir.path().join("ratings.csv");
    let mut text = String::from("userId,movieId,rating,timestamp\n");
    for u in 0..20 {
        for k in 0..25 {
            let item = (u * 3 + k * 7) % 60;
            let rating = 1 + (u + k) % 5;
            text.push_str(&format!("{u},{item},{rating}.0,{}\n", 1_000 + k * 60));
        }
    }
    text.push_str("oops,this,is,bad,line\n");
    std::fs::write(&ratings, &text).expect("write");
    let r = ratings.to_str().expect("utf-8");
    let out = dir.path().join("ml");
    let (ok, msg) = transact(&["train", "--data", r, "--out", out.to_str().expect("utf-8")]);
    assert!(!ok, "a malformed line must stop the import");
    assert!(msg.contains("ratings.csv:502"), "{msg}");
    let (ok, msg) = transact(&[
        "train",
        "--data",
        r,
        "--skip-bad",
        "--sasrec",
        "--out",
        out.to_str().expect("utf-8"),
        "--epochs",
        "1",
        "--seq-len",
        "8",
        "--batch",
        "64",
    ]);
    assert!(ok, "{msg}");
    assert!(msg.contains("1 skipped"), "{msg}");
    assert!(msg.contains("HR@10"), "{msg}");
    assert!(Path::new(&out).join("metrics.json").is_file());
    // The ablation runs on a log without impressions too.
    let ab = dir.path().join("ablate");
    let (ok, msg) = transact(&[
        "ablate",
        "--data",
        r,
        "--skip-bad",
        "--out",
        ab.to_str().expect("utf-8"),
        "--epochs",
        "1",
        "--seq-len",
        "8",
        "--batch",
        "64",
    ]);
    assert!(ok, "{msg}");
    let md = std::fs::read_to_string(ab.join("ablation.md")).expect("ablation.md");
    assert!(
        md.contains("+ NAL, impression + in-batch negatives"),
        "{md}"
    );
}

#[test]
fn ablate_writes_its_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ablate");
    let mut args = vec!["ablate", "--out", out.to_str().expect("utf-8")];
    args.extend_from_slice(TINY);
    let (ok, text) = transact(&args);
    assert!(ok, "{text}");
    let md = std::fs::read_to_string(out.join("ablation.md")).expect("ablation.md");
    for row in [
        "no sequence",
        "TransAct (realtime sequence)",
        "+ NAL, in-batch negatives",
        // The synthetic world's defaults add impressions to the in-batch
        // negatives.
        "+ NAL, impression + in-batch negatives",
    ] {
        assert!(md.contains(row), "{md}");
    }
    // The synthetic world's ceiling comes with the table.
    assert!(
        md.contains("Ceiling (ranked by the world's ground truth): HIT@3 repin"),
        "{md}"
    );
    assert!(out.join("ablation.json").is_file());
    let svg = std::fs::read_to_string(out.join("ablation.svg")).expect("ablation.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("<rect"),
        "not a bar chart"
    );
}

#[test]
fn ablate_over_seeds_reports_mean_and_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ablate");
    let mut args = vec![
        "ablate",
        "--seeds",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(TINY);
    let (ok, text) = transact(&args);
    assert!(ok, "{text}");
    let md = std::fs::read_to_string(out.join("ablation.md")).expect("ablation.md");
    assert!(md.contains("step repin (min … max)"), "{md}");
    assert!(md.contains("### Training seed 1"), "{md}");
    assert!(md.contains("### Training seed 2"), "{md}");
    // Each seed has its own run directories.
    assert!(out.join("seed-1").is_dir() && out.join("seed-2").is_dir());
    // The JSON holds both seeds' rows and the summary; the summary's mean is
    // the mean of the two runs.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).expect("json"))
            .expect("valid JSON");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let a = runs[0][1]["hit3"][0].as_f64().expect("hit3");
    let b = runs[1][1]["hit3"][0].as_f64().expect("hit3");
    let m = json["summary"][1]["mean"][0].as_f64().expect("mean");
    assert!((m - (a + b) / 2.0).abs() < 1e-12, "{m} vs {a}, {b}");
    // Zero seeds is refused by name.
    let (ok, text) = transact(&["ablate", "--seeds", "0"]);
    assert!(!ok && text.contains("--seeds"), "{text}");
}
