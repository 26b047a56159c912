//! The whole loop through the binary on a small shipped MovieLens-format
//! log (`tests/fixtures/ratings-small.csv`, made by
//! `scripts/make_ratings_fixture.py`): train writes a bundle, ingest fills a
//! store from the same log, eval through the serving path reports exactly
//! what training reported, and rank serves the bundle from the store.

mod common;

use common::transact;

const LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ratings-small.csv"
);

fn hit_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("HIT@3 over"))
        .unwrap_or_else(|| panic!("no HIT@3 line in {text}"))
        .to_string()
}

#[test]
fn train_ingest_eval_and_rank_agree_on_a_ratings_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let store = dir.path().join("store");
    let (run_s, store_s) = (run.to_str().expect("utf-8"), store.to_str().expect("utf-8"));
    let bundle = run.join("bundle");
    let bundle_s = bundle.to_str().expect("utf-8");

    let t = transact(
        &[
            "train",
            "--data",
            LOG,
            "--out",
            run_s,
            "--epochs",
            "1",
            "--seq-len",
            "8",
            "--batch",
            "64",
            "--threads",
            "2",
        ],
        None,
    );
    assert!(t.ok, "{}{}", t.stdout, t.stderr);
    let trained = hit_line(&t.stdout);

    let i = transact(&["ingest", LOG, "--store", store_s], None);
    assert!(i.ok, "{}{}", i.stdout, i.stderr);
    assert!(
        i.stdout.contains("ingested 1018 actions of 48 users"),
        "{}",
        i.stdout
    );

    // The evaluation through Ranker over the ingested store reports what
    // training reported, to the last digit.
    let e = transact(
        &[
            "eval", "--bundle", bundle_s, "--store", store_s, "--data", LOG,
        ],
        None,
    );
    assert!(e.ok, "{}{}", e.stdout, e.stderr);
    assert_eq!(hit_line(&e.stdout), trained);

    // One request from flags: every candidate back once, best first, with
    // a probability per head.
    let r = transact(
        &[
            "rank",
            "--bundle",
            bundle_s,
            "--store",
            store_s,
            "--cpu",
            "--user",
            "3",
            "--time-ms",
            "1600000000000",
            "--candidates",
            "269,829,241,10",
        ],
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("one JSON line");
    let ranked = v["ranked"].as_array().expect("ranked");
    assert_eq!(ranked.len(), 4);
    let u: Vec<f64> = ranked
        .iter()
        .map(|x| x["utility"].as_f64().expect("u"))
        .collect();
    assert!(u.windows(2).all(|w| w[0] >= w[1]), "{u:?}");
    for x in ranked {
        for head in ["repin", "click", "hide"] {
            let p = x["probabilities"][head]
                .as_f64()
                .expect("per-head probability");
            assert!((0.0..=1.0).contains(&p));
        }
    }
    assert!(
        v["sequence_len"].as_u64().expect("len") > 0,
        "user 3 has a history"
    );
    assert_eq!(v["backend"], "cpu");

    // JSON lines: the same request by numbers gives the same line; a bad
    // line is reported by number and field, the others still answered, and
    // the exit code says something failed.
    let lines = concat!(
        r#"{"user": 3, "time_ms": 1600000000000, "candidates": [269, 829, 241, 10]}"#,
        "\n",
        r#"{"user": 3, "time_ms": 1600000000000, "candidates": [269], "bogus": 1}"#,
        "\n",
        r#"{"user": "3", "time_ms": 1600000000000, "candidates": ["999999"]}"#,
        "\n"
    );
    let j = transact(
        &["rank", "--bundle", bundle_s, "--store", store_s, "--cpu"],
        Some(lines),
    );
    assert_eq!(j.code, Some(1), "{}{}", j.stdout, j.stderr);
    let first: serde_json::Value =
        serde_json::from_str(j.stdout.lines().next().expect("a line")).expect("json");
    assert_eq!(first["ranked"].as_array().map(Vec::len), Some(4));
    for (a, b) in first["ranked"]
        .as_array()
        .expect("ranked")
        .iter()
        .zip(ranked)
    {
        assert_eq!(a["utility"], b["utility"]);
        assert_eq!(
            a["item"].to_string().trim_matches('"'),
            b["item"].as_str().expect("id")
        );
    }
    assert!(
        j.stderr.contains("stdin line 2") && j.stderr.contains("bogus"),
        "{}",
        j.stderr
    );
    assert!(
        j.stderr.contains("stdin line 3") && j.stderr.contains("999999"),
        "{}",
        j.stderr
    );

    // Bad arguments name themselves and fail.
    let missing = transact(
        &[
            "rank",
            "--bundle",
            store_s,
            "--store",
            store_s,
            "--user",
            "3",
            "--candidates",
            "269",
        ],
        None,
    );
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains("--bundle") && missing.stderr.contains("manifest.json"),
        "{}",
        missing.stderr
    );
    let no_store = transact(
        &[
            "rank",
            "--bundle",
            bundle_s,
            "--store",
            "/nonexistent/store",
            "--user",
            "3",
            "--candidates",
            "269",
        ],
        None,
    );
    assert!(!no_store.ok);
    assert!(
        no_store.stderr.contains("--store /nonexistent/store"),
        "{}",
        no_store.stderr
    );
    let bad_log = dir.path().join("bad.csv");
    std::fs::write(
        &bad_log,
        "userId,movieId,rating,timestamp\n1,2,4.0,100\n1,3,oops,101\n",
    )
    .expect("write");
    let bad = transact(
        &[
            "ingest",
            bad_log.to_str().expect("utf-8"),
            "--store",
            store_s,
        ],
        None,
    );
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("bad.csv:3") && bad.stderr.contains("oops"),
        "{}",
        bad.stderr
    );
    let skipped = transact(
        &[
            "ingest",
            bad_log.to_str().expect("utf-8"),
            "--store",
            store_s,
            "--skip-bad",
        ],
        None,
    );
    assert!(skipped.ok, "{}", skipped.stderr);
}

#[test]
fn the_quick_demo_runs_the_whole_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("demo");
    let d_s = d.to_str().expect("utf-8");
    let out = transact(&["demo", "--quick", "--cpu", "--dir", d_s], None);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    for want in [
        "1. world:",
        "2. store:",
        "3. trained TransAct",
        "no-sequence baseline",
        "TransAct, served from the store (cpu)",
        "ceiling (the world's own probabilities)",
        "candidates of the session topic",
        "5. user",
        "6. served on http://127.0.0.1:",
        "POST /v1/actions of a repin",
        "7. retrained from the checkpoint",
        "POST /v1/admin/reload swapped it in",
    ] {
        assert!(
            out.stdout.contains(want),
            "{want:?} missing:\n{}",
            out.stdout
        );
    }
    // What it leaves serves: the bundle loads, the store ranks.
    let bundle = d.join("runs/transact/bundle");
    let first = transact::rank::Bundle::load(&bundle).expect("the demo's bundle");
    let retrained = transact::rank::Bundle::load(d.join("runs/retrained/bundle"))
        .expect("the retrained bundle");
    assert_ne!(first.version(), retrained.version());
    assert!(
        out.stdout
            .contains(&format!("now ranks with bundle {}", retrained.version())),
        "{}",
        out.stdout
    );
    let again = transact(&["demo", "--quick", "--cpu", "--dir", d_s], None);
    assert!(!again.ok, "a second demo into the same store must refuse");
    assert!(again.stderr.contains("already holds"), "{}", again.stderr);
}
