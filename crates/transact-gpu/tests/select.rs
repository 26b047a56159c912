//! Nearest-neighbour selection on the GPU (fused, fused with the unpacked
//! dot product, unfused) against the CPU's `select_nearest_i8`.

#![allow(clippy::unwrap_used)]

mod common;

use common::test_context;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_embed::select::{NO_TOKEN, SelectScratch, select_nearest_i8};
use transact_gpu::kernels::select::{
    INT8_TO_F32, SelectInput, SelectOptions, SelectShape, SelectUpload, record_select_nearest,
    select_nearest,
};
use transact_gpu::{GpuContext, GpuError, KernelSpec, Variant};

/// The three GPU paths.
const PATHS: [SelectOptions; 3] = [
    SelectOptions {
        variant: Variant::Fused,
        packed_dot: true,
    },
    SelectOptions {
        variant: Variant::Fused,
        packed_dot: false,
    },
    SelectOptions {
        variant: Variant::Unfused,
        packed_dot: true,
    },
];

struct Case {
    history: Vec<i8>,
    scales: Vec<f32>,
    candidates: Vec<i8>,
    dim: usize,
    k: usize,
}

impl Case {
    /// Codes in `-span/2 ..= span/2` (small spans make many ties); scales
    /// from `scale_kind`: 0 one positive value, 1 a mix with zeros and
    /// negatives, 2 random signs and magnitudes.
    #[allow(clippy::too_many_arguments)]
    fn random(
        n: usize,
        b: usize,
        dim: usize,
        k: usize,
        span: i32,
        scale_kind: u8,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let half = span / 2;
        let code = |rng: &mut ChaCha8Rng| rng.random_range(-half..=half).clamp(-128, 127) as i8;
        let history = (0..n * dim).map(|_| code(&mut rng)).collect();
        let candidates = (0..b * dim).map(|_| code(&mut rng)).collect();
        let scales = (0..n)
            .map(|t| match scale_kind {
                0 => 0.65,
                1 => [0.5, 0.0, -0.25, 0.5, -0.0, 1.5][t % 6],
                _ => {
                    let m: f32 = rng.random_range(0.001..2.0);
                    if rng.random_bool(0.3) { -m } else { m }
                }
            })
            .collect();
        Self {
            history,
            scales,
            candidates,
            dim,
            k,
        }
    }

    fn input(&self) -> SelectInput<'_> {
        SelectInput {
            history: &self.history,
            scales: &self.scales,
            candidates: &self.candidates,
            dim: self.dim,
            k: self.k,
        }
    }

    fn cpu(&self) -> Vec<u32> {
        let b = self.candidates.len() / self.dim;
        let mut out = vec![0u32; b * self.k];
        select_nearest_i8(
            &self.history,
            &self.scales,
            &self.candidates,
            self.dim,
            self.k,
            &mut SelectScratch::default(),
            &mut out,
        )
        .unwrap();
        out
    }

    /// Every GPU path's output equals the CPU's.
    fn check(&self, ctx: &GpuContext) -> Result<(), String> {
        let want = self.cpu();
        for o in PATHS {
            let got = select_nearest(ctx, &self.input(), o).map_err(|e| e.to_string())?;
            if got != want {
                let i = got.iter().zip(&want).position(|(a, b)| a != b);
                return Err(format!(
                    "{o:?}: first difference at {i:?} (n {}, dim {}, k {})",
                    self.scales.len(),
                    self.dim,
                    self.k
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn gpu_paths_match_the_cpu_on_edge_shapes() {
    let Some(ctx) = test_context() else { return };
    // (n, b, dim, k, span): n = 0, n < k, n = k, k = 1, one candidate,
    // constant codes (every score tied), dim = 4 and 128.
    let cases = [
        (0, 3, 8, 5, 255),
        (3, 2, 8, 5, 255),
        (5, 2, 8, 5, 255),
        (40, 3, 8, 1, 255),
        (40, 1, 4, 7, 1),
        (300, 2, 128, 33, 255),
        (257, 3, 16, 256, 3),
    ];
    for (i, &(n, b, dim, k, span)) in cases.iter().enumerate() {
        for kind in 0..3 {
            let c = Case::random(n, b, dim, k, span, kind, i as u64);
            c.check(&ctx).unwrap();
        }
    }
}

#[test]
fn long_histories_take_the_sampled_threshold_and_still_match() {
    let Some(ctx) = test_context() else { return };
    // n ≥ 2,048 uses the sample's threshold; narrow codes tie so many
    // scores that it is dropped or reached by far more than k tokens.
    for (seed, span, kind) in [(1, 255, 0), (2, 255, 2), (3, 3, 0), (4, 2, 1)] {
        let c = Case::random(3_000, 3, 32, 20, span, kind, seed);
        c.check(&ctx).unwrap();
    }
}

#[test]
fn histories_past_lavapipes_loop_budget_still_match() {
    let Some(ctx) = test_context() else { return };
    // lavapipe ends an invocation's loops after 65,535 iterations in all:
    // 70,000 tokens, with the fast path and (all codes 0: every score tied)
    // the fallback over all keys.
    Case::random(70_000, 9, 16, 50, 255, 2, 7)
        .check(&ctx)
        .unwrap();
    Case::random(70_000, 9, 16, 50, 1, 0, 8)
        .check(&ctx)
        .unwrap();
}

#[test]
fn candidates_the_fast_path_cannot_take_are_selected_over_all_keys() {
    let Some(ctx) = test_context() else { return };
    // Every code 0: 3,000 equal scores, more than a candidate's list holds.
    Case::random(3_000, 9, 16, 20, 1, 0, 5).check(&ctx).unwrap();
    // A sample that lies: the sampled tokens (every 4th of 4,096) score
    // high and the others low, so fewer than k tokens reach the sample's
    // threshold. Nine candidates: two workgroups of the fused kernel, the
    // second with one live invocation.
    let mut c = Case::random(4_096, 9, 8, 20, 11, 2, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for (t, row) in c.history.chunks_exact_mut(8).enumerate() {
        if t % 4 == 0 {
            row.iter_mut().for_each(|v| *v = rng.random_range(50..=100));
        }
    }
    c.scales.iter_mut().for_each(|s| *s = s.abs());
    c.candidates
        .iter_mut()
        .for_each(|v| *v = rng.random_range(1..=3));
    c.check(&ctx).unwrap();
}

#[test]
fn selection_recorded_into_a_request_feeds_a_later_kernel() {
    let Some(ctx) = test_context() else { return };
    let c = Case::random(200, 4, 16, 9, 255, 2, 9);
    let input = c.input();
    let shape = input.shape().unwrap();
    let mut req = ctx.request("select then read on the device");
    let up = SelectUpload::new(&ctx, &input).unwrap();
    let out = ctx.storage(shape.out_len() as u64 * 4).unwrap();
    record_select_nearest(
        &ctx,
        &mut req,
        shape,
        SelectOptions::default(),
        up.buffers(&out),
    )
    .unwrap();
    // A later dispatch of the same command buffer reads the indices where
    // they are: int8_to_f32 spreads each index's four bytes into floats.
    let len = shape.out_len();
    let spread = ctx.storage(len as u64 * 16).unwrap();
    let k = ctx
        .kernel(&KernelSpec::new(INT8_TO_F32, "int8_to_f32"))
        .unwrap();
    let params = [len as u32, 0, 0, 0];
    req.dispatch(
        &k,
        &params,
        &[&out, &spread],
        [(len as u32).div_ceil(64), 1, 1],
    )
    .unwrap();
    let got = req.finish_read::<f32>(&spread, 4 * len).unwrap().data;
    let want: Vec<f32> = c
        .cpu()
        .iter()
        .flat_map(|w| w.to_le_bytes().map(|b| f32::from(b.cast_signed())))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let Some(ctx) = test_context() else { return };
    let ok = Case::random(10, 2, 8, 3, 255, 0, 1);
    let input = ok.input();
    let bad = [
        SelectInput { dim: 6, ..input },
        SelectInput {
            history: &ok.history[1..],
            ..input
        },
        SelectInput {
            scales: &[f32::NAN; 10],
            ..input
        },
    ];
    for b in bad {
        assert!(matches!(
            select_nearest(&ctx, &b, SelectOptions::default()),
            Err(GpuError::BadInput { .. } | GpuError::Unsupported(_))
        ));
    }
    // Buffers too small for the shape given to the recorder.
    let mut req = ctx.request("short buffers");
    let up = SelectUpload::new(&ctx, &input).unwrap();
    let out = ctx.storage(4).unwrap();
    let shape = SelectShape {
        candidates: 1_000,
        ..input.shape().unwrap()
    };
    assert!(matches!(
        record_select_nearest(
            &ctx,
            &mut req,
            shape,
            SelectOptions::default(),
            up.buffers(&out)
        ),
        Err(GpuError::BadInput { .. })
    ));
    assert_eq!(NO_TOKEN, transact_gpu::kernels::select::NO_TOKEN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn fused_equals_unfused_equals_cpu(
        n in 0usize..400,
        b in 1usize..5,
        dim4 in 1usize..10,
        k in 1usize..80,
        span in prop::sample::select(vec![1, 2, 3, 7, 255]),
        kind in 0u8..3,
        seed in any::<u64>(),
    ) {
        let Some(ctx) = test_context() else { return Ok(()) };
        let c = Case::random(n, b, 4 * dim4, k, span, kind, seed);
        prop_assert!(c.check(&ctx).is_ok(), "{:?}", c.check(&ctx));
    }
}
