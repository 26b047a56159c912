//! `GpuRankingModel::score_v2` against `RankingModel::score_v2`: a whole
//! TransAct V2 model (tokens, blocks, compression, heads) on the device.

#![allow(clippy::unwrap_used)]

mod common;

use common::{max_rel_err, random, test_context};
use transact_gpu::{GpuRankingModel, Precision, Variant};
use transact_model::{HeadsConfig, RankingModel, V1Config, V2Config, V2Request};

fn model(causal: bool, user: usize, context: usize, seed: u64) -> RankingModel {
    let v2 = V2Config {
        seq_len: 20,
        item_emb_dim: 8,
        num_action_types: 4,
        num_surfaces: 3,
        num_layer: 2,
        dim_feedforward: 24,
        latest_n_emb: 3,
        causal,
        ..V2Config::default()
    };
    let heads = HeadsConfig {
        heads: vec!["repin".into(), "hide".into()],
        user_emb_dim: user,
        context_dim: context,
        cross_layers: 1,
        mlp_hidden: vec![16],
    };
    RankingModel::new_random_v2(v2, heads, seed).unwrap()
}

/// One request: `lens` per candidate, `seq` slots, random tokens.
struct Input {
    seq: usize,
    lens: Vec<usize>,
    items: Vec<f32>,
    masks: Vec<u32>,
    surfaces: Vec<u16>,
    cands: Vec<f32>,
    heads: Vec<f32>,
}

impl Input {
    fn new(lens: Vec<usize>, seq: usize, seed: u64) -> Self {
        let b = lens.len();
        let di = 8;
        Self {
            seq,
            items: random(b * seq * di, 1.0, seed),
            masks: (0..b * seq).map(|i| (i as u32 * 7 + 1) % 16).collect(),
            surfaces: (0..b * seq).map(|i| (i % 3) as u16).collect(),
            cands: random(b * di, 1.0, seed + 1),
            heads: random(b * di, 1.0, seed + 2),
            lens,
        }
    }

    fn req(&self) -> V2Request<'_> {
        V2Request {
            batch: self.lens.len(),
            seq: self.seq,
            lens: &self.lens,
            item_embeddings: &self.items,
            action_masks: &self.masks,
            surfaces: &self.surfaces,
            candidates: &self.cands,
        }
    }
}

#[test]
fn v2_scores_match_the_cpu_model() {
    let Some(ctx) = test_context() else { return };
    for (causal, user, context, seed) in [(true, 0, 0, 1), (false, 4, 3, 2)] {
        let m = model(causal, user, context, seed);
        let u = random(user, 1.0, 9);
        let c = random(context, 1.0, 10);
        let (uo, co) = (
            (user > 0).then_some(&u[..]),
            (context > 0).then_some(&c[..]),
        );
        // Full rows, padded rows, an empty row, one-token rows.
        let input = Input::new(vec![20, 7, 0, 1, 13, 20, 2], 20, seed);
        let mut want = vec![0.0; input.lens.len() * 2];
        m.score_v2(&input.req(), &input.heads, uo, co, &mut want)
            .unwrap();
        for variant in [Variant::Unfused, Variant::Fused] {
            let g =
                GpuRankingModel::with_options(ctx.clone(), &m, variant, Precision::F32).unwrap();
            assert!(g.v1().is_none() && g.v2_blocks().is_some());
            let got = g.score_v2(&input.req(), &input.heads, uo, co).unwrap();
            let err = max_rel_err(&got, &want);
            assert!(err < 1e-4, "{variant:?} (ran {:?}): {err}", g.variant());
        }
        // f16 storage where the device has it: looser, still close.
        let g =
            GpuRankingModel::with_options(ctx.clone(), &m, Variant::Fused, Precision::F16).unwrap();
        let got = g.score_v2(&input.req(), &input.heads, uo, co).unwrap();
        let tol = if g.precision() == Precision::F16 {
            5e-2
        } else {
            1e-4
        };
        assert!(max_rel_err(&got, &want) < tol);
    }
}

#[test]
fn v2_bad_inputs_and_wrong_kinds_are_errors() {
    let Some(ctx) = test_context() else { return };
    let m = model(true, 0, 0, 3);
    let g = GpuRankingModel::new(ctx.clone(), &m).unwrap();
    let input = Input::new(vec![5, 3], 6, 4);
    assert!(g.score_v2(&input.req(), &input.heads, None, None).is_ok());
    // Candidates for the heads of the wrong width.
    let err = g
        .score_v2(&input.req(), &input.heads[..8], None, None)
        .unwrap_err();
    assert!(err.to_string().contains("head_candidates"), "{err}");
    // A surface the model does not have.
    let mut bad = Input::new(vec![5, 3], 6, 4);
    bad.surfaces[1] = 9;
    let err = g.score_v2(&bad.req(), &bad.heads, None, None).unwrap_err();
    assert!(err.to_string().contains("surfaces"), "{err}");
    // A user embedding the model has no room for.
    let err = g
        .score_v2(&input.req(), &input.heads, Some(&[1.0]), None)
        .unwrap_err();
    assert!(err.to_string().contains("user_embedding"), "{err}");
    // A V1 model gets no V2 request, and the other way round.
    let v1 = RankingModel::new_random(V1Config::default(), m.heads().config().clone(), 5).unwrap();
    let g1 = GpuRankingModel::new(ctx, &v1).unwrap();
    let err = g1
        .score_v2(&input.req(), &input.heads, None, None)
        .unwrap_err();
    assert!(err.to_string().contains("V1 model"), "{err}");
    assert!(g.v1().is_none());
}
