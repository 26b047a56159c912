//! The V1 forward against outputs recorded from the reference PyTorch module.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn v1_matches_pytorch_with_future_actions_and_padding() {
    let report = transact::model::parity::check_parity_file(&fixture("parity_v1.safetensors"))
        .expect("parity file loads and runs");
    assert_eq!(report.batch, 8);
    assert_eq!(report.out_dim, 1056);
    assert!(report.max_abs_diff <= 1e-4, "{report:?}");
}

#[test]
fn v1_matches_pytorch_with_left_aligned_masks() {
    let report =
        transact::model::parity::check_parity_file(&fixture("parity_v1_left_aligned.safetensors"))
            .expect("parity file loads and runs");
    assert_eq!(report.batch, 6);
    assert!(report.max_abs_diff <= 1e-4, "{report:?}");
    let fast = report
        .max_abs_diff_fast
        .expect("zeroed masked rows: the fast path is checked too");
    assert!(fast <= 1e-4, "{report:?}");
}

#[test]
fn cli_parity_passes_on_the_fixtures_and_fails_on_a_tampered_file() {
    let exe = env!("CARGO_BIN_EXE_transact");
    let ok = Command::new(exe)
        .arg("parity")
        .arg(fixture("parity_v1.safetensors"))
        .arg(fixture("parity_v1_left_aligned.safetensors"))
        .output()
        .expect("run transact parity");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // Perturb one expected value by 1e-3: the check must fail.
    let mut map =
        transact::model::TensorMap::load(&fixture("parity_v1.safetensors")).expect("load fixture");
    match map.tensors.get_mut("expected.output") {
        Some(transact::model::weights::Tensor::F32 { data, .. }) => data[17] += 1e-3,
        _ => panic!("fixture has no f32 expected.output"),
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.safetensors");
    map.save(&bad).expect("save tampered copy");
    let out = Command::new(exe)
        .arg("parity")
        .arg(&bad)
        .output()
        .expect("run transact parity");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
