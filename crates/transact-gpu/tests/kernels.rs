//! Each kernel against plain CPU math on small random shapes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{max_rel_err, random, test_context};
use proptest::prelude::*;
use transact_gpu::kernels::{attention, gemm, layer_norm};

fn cpu_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    trans_b: bool,
    relu: bool,
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for kk in 0..k {
                let bv = if trans_b {
                    b[j * k + kk]
                } else {
                    b[kk * n + j]
                };
                s += f64::from(a[i * k + kk]) * f64::from(bv);
            }
            let v = s as f32;
            c[i * n + j] = if relu { v.max(0.0) } else { v };
        }
    }
    c
}

fn cpu_layer_norm(x: &[f32], d: usize, affine: Option<(&[f32], &[f32])>, eps: f32) -> Vec<f32> {
    let mut y = x.to_vec();
    for row in y.chunks_exact_mut(d) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / d as f64;
        let rstd = 1.0 / (var + f64::from(eps)).sqrt();
        for (c, v) in row.iter_mut().enumerate() {
            let mut t = ((f64::from(*v) - mean) * rstd) as f32;
            if let Some((g, b)) = affine {
                t = t * g[c] + b[c];
            }
            *v = t;
        }
    }
    y
}

/// Attention with explicit masks, `len = 0` as one token, padded rows zero.
#[allow(clippy::too_many_arguments)]
fn cpu_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    seq: usize,
    d: usize,
    lens: &[usize],
    causal: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; batch * seq * d];
    for b in 0..batch {
        let n = lens[b].max(1);
        for t in 0..n {
            let lim = if causal { t + 1 } else { n };
            let row = |m: &[f32], j: usize| m[(b * seq + j) * d..(b * seq + j + 1) * d].to_vec();
            let qt = row(q, t);
            let s: Vec<f64> = (0..lim)
                .map(|j| {
                    row(k, j)
                        .iter()
                        .zip(&qt)
                        .map(|(a, b)| f64::from(a * b))
                        .sum()
                })
                .collect();
            let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, ej) in e.iter().enumerate() {
                let vj = row(v, j);
                for c in 0..d {
                    out[(b * seq + t) * d + c] += (ej / sum) as f32 * vj[c];
                }
            }
        }
    }
    out
}

#[test]
fn gemm_matches_cpu_on_fixed_shapes() {
    let Some(ctx) = test_context() else { return };
    for &(m, n, k) in &[
        (1, 1, 1),
        (32, 32, 16),
        (33, 17, 5),
        (70, 100, 64),
        (5, 3, 0),
    ] {
        for trans_b in [false, true] {
            for relu in [false, true] {
                let a = random(m * k, 1.0, 1);
                let b = random(k * n, 1.0, 2);
                let g = gemm(&ctx, m, n, k, &a, &b, trans_b, relu).unwrap();
                let c = cpu_gemm(m, n, k, &a, &b, trans_b, relu);
                let e = max_rel_err(&g, &c);
                assert!(
                    e < 1e-5,
                    "m {m} n {n} k {k} trans {trans_b} relu {relu}: {e}"
                );
            }
        }
    }
}

#[test]
fn naive_gemm_matches_the_cpu_like_the_tiled_one() {
    use transact_gpu::kernels::gemm::{GemmOptions, GemmShape, record_gemm_naive};
    let Some(ctx) = test_context() else { return };
    for &(m, n, k) in &[(1, 1, 1), (33, 70, 5), (7, 130, 64)] {
        for trans_b in [false, true] {
            let a = random(m * k, 1.0, 3);
            let b = random(k * n, 1.0, 4);
            let mut rq = ctx.request("naive gemm test");
            let (ab, bb) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
            // C starts at 1.0 and the product is accumulated, then ReLU.
            let cb = ctx.upload(&vec![1.0f32; m * n]).unwrap();
            let o = GemmOptions {
                trans_b,
                relu: true,
                accumulate: true,
                ..GemmOptions::default()
            };
            let s = GemmShape::dense(m, n, k, trans_b);
            record_gemm_naive(&ctx, &mut rq, s, o, &ab, &bb, &cb).unwrap();
            let g = rq.finish_read::<f32>(&cb, m * n).unwrap().data;
            let c: Vec<f32> = cpu_gemm(m, n, k, &a, &b, trans_b, false)
                .into_iter()
                .map(|v| (v + 1.0).max(0.0))
                .collect();
            let e = max_rel_err(&g, &c);
            assert!(e < 1e-5, "m {m} n {n} k {k} trans {trans_b}: {e}");
        }
    }
}

#[test]
fn layer_norm_matches_cpu_with_and_without_affine() {
    let Some(ctx) = test_context() else { return };
    for &(rows, d) in &[(1, 1), (3, 7), (130, 64)] {
        let x = random(rows * d, 3.0, 5);
        let g = random(d, 1.0, 6);
        let b = random(d, 1.0, 7);
        let y = layer_norm(&ctx, &x, d, None, 1e-5).unwrap();
        assert!(max_rel_err(&y, &cpu_layer_norm(&x, d, None, 1e-5)) < 1e-4);
        let y = layer_norm(&ctx, &x, d, Some((&g, &b)), 1e-5).unwrap();
        assert!(max_rel_err(&y, &cpu_layer_norm(&x, d, Some((&g, &b)), 1e-5)) < 1e-4);
    }
}

#[test]
fn kernel_errors_are_errors() {
    let Some(ctx) = test_context() else { return };
    assert!(gemm(&ctx, 2, 2, 2, &[0.0; 3], &[0.0; 4], false, false).is_err());
    assert!(layer_norm(&ctx, &[0.0; 5], 2, None, 1e-5).is_err());
    assert!(layer_norm(&ctx, &[0.0; 4], 2, None, 0.0).is_err());
    let z = vec![0.0; 2 * 3 * 4];
    assert!(attention(&ctx, &z, &z, &z, 2, 3, 4, &[1, 4], false).is_err());
    assert!(attention(&ctx, &z, &z, &z, 2, 3, 4, &[1], false).is_err());
    assert!(attention(&ctx, &z[1..], &z, &z, 2, 3, 4, &[1, 1], false).is_err());
    let wide = vec![0.0; 129];
    assert!(attention(&ctx, &wide, &wide, &wide, 1, 1, 129, &[1], false).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn gemm_random_shapes(m in 1usize..80, n in 1usize..80, k in 1usize..80, trans_b: bool, relu: bool, seed: u64) {
        let Some(ctx) = test_context() else { return Ok(()) };
        let a = random(m * k, 1.0, seed);
        let b = random(k * n, 1.0, seed ^ 1);
        let g = gemm(&ctx, m, n, k, &a, &b, trans_b, relu).unwrap();
        prop_assert!(max_rel_err(&g, &cpu_gemm(m, n, k, &a, &b, trans_b, relu)) < 1e-5);
    }

    #[test]
    fn attention_random_shapes(
        batch in 1usize..4,
        seq in 1usize..150,
        d in prop::sample::select(vec![1usize, 4, 16, 24, 64, 128]),
        causal: bool,
        seed: u64,
        fracs in prop::collection::vec(0.0f64..=1.0, 4),
    ) {
        let Some(ctx) = test_context() else { return Ok(()) };
        let lens: Vec<usize> = (0..batch).map(|b| (fracs[b] * seq as f64).round() as usize).collect();
        let n = batch * seq * d;
        let q = random(n, 1.0, seed);
        let k = random(n, 1.0, seed ^ 2);
        let v = random(n, 1.0, seed ^ 3);
        let g = attention(&ctx, &q, &k, &v, batch, seq, d, &lens, causal).unwrap();
        let c = cpu_attention(&q, &k, &v, batch, seq, d, &lens, causal);
        let e = max_rel_err(&g, &c);
        prop_assert!(e < 1e-4, "err {e} lens {lens:?}");
    }
}
