//! Replays the checked-in corpus (`fuzz/corpus/<target>/`) through every
//! target on the stable toolchain: no input may panic. Fails if a target
//! has no corpus directory or an empty one.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_input_replays_without_a_panic() {
    let root = corpus_root();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut total = 0usize;
    for (name, target) in transact_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "corpus directory {} is empty",
            dir.display()
        );
        for file in &files {
            let data = std::fs::read(file).expect("read a corpus file");
            let t0 = Instant::now();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
            let took = t0.elapsed();
            assert!(
                took.as_secs() < 5,
                "{} took {took:?} (a hang?)",
                file.display()
            );
            total += 1;
        }
    }
    assert!(failures.is_empty(), "inputs that panicked: {failures:#?}");
    eprintln!(
        "replayed {total} corpus inputs of {} targets in {:?}",
        transact_fuzz::TARGETS.len(),
        start.elapsed()
    );
}

#[test]
fn every_target_has_a_cargo_fuzz_wrapper() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, _) in transact_fuzz::TARGETS {
        let file = dir.join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{} missing: {e}", file.display()));
        assert!(
            text.contains(&format!("transact_fuzz::{name}(data)")),
            "{} does not call transact_fuzz::{name}",
            file.display()
        );
    }
}

fn read_seed(target: &str, file: &str) -> Vec<u8> {
    let path = corpus_root().join(target).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The valid seeds decode: the fuzzer starts from inputs that reach the
/// whole decoder, not from ones refused at the first check.
#[test]
fn valid_seeds_decode() {
    use transact_seq::EmbeddedStore;

    let fixture = transact_fuzz::store_fixture();
    let dir = transact_fuzz::scratch();
    std::fs::write(
        dir.path().join(&fixture.log_name),
        read_seed("seq_log", "valid"),
    )
    .expect("write log");
    let (store, report) =
        EmbeddedStore::open(dir.path(), transact_fuzz::store_config()).expect("open log");
    assert_eq!((report.users, report.records_replayed), (3, 4));
    assert!(report.truncated_tail.is_none());
    drop(store);

    let dir = transact_fuzz::scratch();
    for (name, bytes) in &fixture.snapshot_dir {
        let bytes = if *name == fixture.snapshot_name {
            read_seed("seq_snapshot", "valid")
        } else {
            bytes.clone()
        };
        std::fs::write(dir.path().join(name), bytes).expect("write store file");
    }
    let (_store, report) =
        EmbeddedStore::open(dir.path(), transact_fuzz::store_config()).expect("open snapshot");
    assert!(report.snapshot_generation.is_some(), "{report:?}");
    assert!(report.skipped_snapshots.is_empty(), "{report:?}");

    for file in ["valid_v1", "valid_v2"] {
        let map = transact_model::TensorMap::from_bytes(&read_seed("weights", file), file)
            .expect("safetensors");
        transact_model::RankingModel::from_tensors(&map).expect("model");
    }
    for file in [
        "valid_bundle_items",
        "valid_f16",
        "valid_int8_per_row",
        "valid_int8_global",
    ] {
        transact_embed::ItemTable::from_safetensors_bytes(
            &read_seed("item_table", file),
            Path::new(file),
        )
        .expect("item table");
    }

    for (i, part) in transact_fuzz::BUNDLE_PARTS.iter().enumerate() {
        let stem = part.split('.').next().expect("stem");
        let seed = read_seed("bundle", &format!("{stem}_valid"));
        assert_eq!(seed[0] as usize, i);
        let dir = transact_fuzz::scratch();
        for (name, bytes) in transact_fuzz::bundle_fixture() {
            let b = if name == part { &seed[1..] } else { bytes };
            std::fs::write(dir.path().join(name), b).expect("write bundle part");
        }
        transact_rank::Bundle::load(dir.path()).expect("bundle");
    }

    let dir = transact_fuzz::scratch();
    let path = dir.path().join("log.parquet");
    std::fs::write(&path, read_seed("feature_log", "valid")).expect("write log");
    let log = transact_log::FeatureLog::open(&path).expect("feature log");
    assert_eq!(log.len(), 4);

    use transact_train::data::import::{ImportOptions, import_path};
    for (target, file_name) in [
        ("import_movielens_csv", "ratings.csv"),
        ("import_movielens_dat", "ratings.dat"),
        ("import_movielens_udata", "u.data"),
        ("import_csv", "log.csv"),
        ("import_whitespace", "log.txt"),
    ] {
        let path = dir.path().join(file_name);
        std::fs::write(&path, read_seed(target, "valid")).expect("write log");
        let (_, report) = import_path(&path, &ImportOptions::default()).expect(target);
        assert!(
            report.actions >= 3 && report.skipped == 0,
            "{target}: {report:?}"
        );
    }
    let log = dir.path().join("events.csv");
    let emb = dir.path().join("items.safetensors");
    std::fs::write(&log, transact_fuzz::EMBEDDINGS_LOG).expect("write log");
    std::fs::write(&emb, read_seed("import_embeddings", "valid")).expect("write embeddings");
    let opts = ImportOptions {
        item_embeddings: Some(emb),
        ..ImportOptions::default()
    };
    let (_, report) = import_path(&log, &opts).expect("import with embeddings");
    assert_eq!(report.items_without_embedding, 1, "{report:?}");

    use transact_serve::wire::{ActionsBody, RankBody, parse};
    let body: RankBody = parse(&read_seed("rank_request", "valid")).expect("rank body");
    assert_eq!(body.to_request().candidates.len(), 3);
    let body: ActionsBody = parse(&read_seed("actions_request", "valid")).expect("actions body");
    assert_eq!(body.actions.len(), 2);
}
