//! `GpuV2Blocks` against `transact_model::v2::blocks_forward`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{max_rel_err, random, test_context};
use proptest::prelude::*;
use transact_gpu::{GpuError, GpuV2Blocks, Precision, Variant};
use transact_model::v2::{V2Block, blocks_forward};

const EPS: f32 = 1e-5;

fn blocks(d: usize, f: usize, layers: usize, seed: u64) -> Vec<V2Block> {
    (0..layers)
        .map(|i| V2Block::new_random(d, f, seed.wrapping_add(i as u64)).unwrap())
        .collect()
}

/// Runs the CPU and every GPU variant on the same input; returns the worst
/// error per variant.
#[allow(clippy::too_many_arguments)]
fn compare(
    ctx: &std::sync::Arc<transact_gpu::GpuContext>,
    blks: &[V2Block],
    batch: usize,
    seq: usize,
    lens: &[usize],
    causal: bool,
    seed: u64,
    precision: Precision,
) -> Vec<(Variant, f32)> {
    let d = blks[0].d_model();
    let mut x = random(batch * seq * d, 1.0, seed);
    // Garbage in the padded slots must not matter.
    for (b, &l) in lens.iter().enumerate() {
        for v in &mut x[(b * seq + l.max(1)) * d..(b + 1) * seq * d] {
            *v = 1e3;
        }
    }
    let mut cpu = x.clone();
    blocks_forward(blks, &mut cpu, batch, seq, lens, causal, EPS).unwrap();
    [Variant::Unfused, Variant::Fused]
        .into_iter()
        .map(|v| {
            let g = GpuV2Blocks::new(ctx.clone(), blks, v, precision).unwrap();
            let out = g.forward(&x, batch, seq, lens, causal, EPS).unwrap();
            (g.variant(), max_rel_err(&out, &cpu))
        })
        .collect()
}

#[test]
fn edge_cases_match_cpu() {
    let Some(ctx) = test_context() else { return };
    let blks = blocks(64, 32, 2, 11);
    // (batch, seq, lens): B = 1, S = 1, a len-0 row, one-token rows, full
    // rows, padded tails, S not a multiple of any tile.
    let cases: Vec<(usize, usize, Vec<usize>)> = vec![
        (1, 1, vec![1]),
        (1, 1, vec![0]),
        (3, 5, vec![0, 1, 5]),
        (2, 17, vec![17, 3]),
        (2, 65, vec![65, 1]),
        (1, 70, vec![64]),
    ];
    for (batch, seq, lens) in cases {
        for causal in [false, true] {
            for (v, e) in compare(&ctx, &blks, batch, seq, &lens, causal, 3, Precision::F32) {
                assert!(
                    e < 1e-4,
                    "{v:?} B {batch} S {seq} lens {lens:?} causal {causal}: {e}"
                );
            }
        }
    }
}

#[test]
fn longest_sequence_matches_cpu() {
    let Some(ctx) = test_context() else { return };
    let blks = blocks(64, 32, 2, 5);
    for (v, e) in compare(&ctx, &blks, 2, 192, &[192, 100], true, 9, Precision::F32) {
        assert!(e < 1e-4, "{v:?}: {e}");
    }
}

#[test]
fn fused_runs_where_it_fits_and_falls_back_where_not() {
    let Some(ctx) = test_context() else { return };
    let limit = ctx.limits().max_compute_workgroup_storage_size as usize;
    let small = blocks(64, 32, 1, 1);
    let g = GpuV2Blocks::new(ctx.clone(), &small, Variant::Fused, Precision::F32).unwrap();
    let want = if transact_gpu::v2::fused_workgroup_bytes(64, 32) <= limit {
        Variant::Fused
    } else {
        Variant::Unfused
    };
    assert_eq!(g.variant(), want);
    // d = 128 with a wide FFN needs far more than any device's workgroup memory.
    let big = blocks(128, 512, 1, 1);
    let g = GpuV2Blocks::new(ctx.clone(), &big, Variant::Fused, Precision::F32).unwrap();
    assert_eq!(g.variant(), Variant::Unfused);
    let x = random(2 * 3 * 128, 1.0, 4);
    let mut cpu = x.clone();
    blocks_forward(&big, &mut cpu, 2, 3, &[3, 2], false, EPS).unwrap();
    let out = g.forward(&x, 2, 3, &[3, 2], false, EPS).unwrap();
    assert!(max_rel_err(&out, &cpu) < 1e-4);
}

#[test]
fn f16_is_used_only_where_the_device_has_it() {
    let Some(ctx) = test_context() else { return };
    let blks = blocks(16, 8, 1, 2);
    let g = GpuV2Blocks::new(ctx.clone(), &blks, Variant::Fused, Precision::F16).unwrap();
    let expect = if ctx.has_f16() {
        Precision::F16
    } else {
        Precision::F32
    };
    assert_eq!(g.precision(), expect);
    assert_eq!(Precision::best(&ctx), expect);
    let lens = [4, 0, 2];
    let tol = if ctx.has_f16() { 1e-2 } else { 1e-4 };
    for (v, e) in compare(&ctx, &blks, 3, 4, &lens, true, 8, Precision::F16) {
        assert!(e < tol, "{v:?}: {e}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let Some(ctx) = test_context() else { return };
    let blks = blocks(8, 4, 1, 1);
    let g = GpuV2Blocks::new(ctx.clone(), &blks, Variant::Unfused, Precision::F32).unwrap();
    let x = vec![0.0; 2 * 3 * 8];
    let bad = |r: Result<Vec<f32>, GpuError>| {
        assert!(matches!(r, Err(GpuError::BadInput { .. })), "{r:?}")
    };
    bad(g.forward(&x[1..], 2, 3, &[3, 3], false, EPS));
    bad(g.forward(&x, 2, 3, &[3], false, EPS));
    bad(g.forward(&x, 2, 3, &[3, 4], false, EPS));
    bad(g.forward(&x, 2, 3, &[3, 3], false, 0.0));
    bad(g.forward(&x, 2, 3, &[3, 3], false, f32::NAN));
    bad(g.forward(&[], 2, 0, &[0, 0], false, EPS));
    // Mixed widths.
    let mixed = vec![
        V2Block::new_random(8, 4, 1).unwrap(),
        V2Block::new_random(4, 4, 1).unwrap(),
    ];
    assert!(GpuV2Blocks::new(ctx.clone(), &mixed, Variant::Fused, Precision::F32).is_err());
    // Empty batch and no blocks are fine.
    assert_eq!(
        g.forward(&[], 0, 3, &[], false, EPS).unwrap(),
        Vec::<f32>::new()
    );
    let none = GpuV2Blocks::new(ctx.clone(), &[], Variant::Fused, Precision::F32).unwrap();
    assert_eq!(none.forward(&x, 2, 3, &[3, 1], false, EPS).unwrap(), x);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_blocks_match_cpu(
        d in prop::sample::select(vec![8usize, 24, 64]),
        f in prop::sample::select(vec![1usize, 16, 32]),
        layers in 1usize..=2,
        batch in 1usize..4,
        seq in 1usize..100,
        fracs in prop::collection::vec(0.0f64..=1.0, 3),
        causal: bool,
        seed: u64,
    ) {
        let Some(ctx) = test_context() else { return Ok(()) };
        let lens: Vec<usize> = (0..batch).map(|b| (fracs[b] * seq as f64).round() as usize).collect();
        let blks = blocks(d, f, layers, seed);
        for (v, e) in compare(&ctx, &blks, batch, seq, &lens, causal, seed ^ 7, Precision::F32) {
            prop_assert!(e < 1e-4, "{:?} d {} f {} L {} lens {:?}: {}", v, d, f, layers, lens, e);
        }
    }
}

#[test]
fn concurrent_requests_agree() {
    let Some(ctx) = test_context() else { return };
    let blks = blocks(64, 32, 2, 11);
    let (batch, seq, lens) = (3usize, 5usize, vec![0usize, 1, 5]);
    let x = random(batch * seq * 64, 1.0, 3);
    let mut cpu = x.clone();
    blocks_forward(&blks, &mut cpu, batch, seq, &lens, false, EPS).unwrap();
    let g = std::sync::Arc::new(
        GpuV2Blocks::new(ctx.clone(), &blks, Variant::Unfused, Precision::F32).unwrap(),
    );
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    let out = g.forward(&x, batch, seq, &lens, false, EPS).unwrap();
                    let e = max_rel_err(&out, &cpu);
                    assert!(e < 1e-4, "{e}");
                }
            });
        }
    });
}
