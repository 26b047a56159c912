//! Finite-difference checks of every layer's backward.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::attention::*;
use super::cross::*;
use super::dropout::*;
use super::embed::*;
use super::encoder::*;
use super::gradcheck::{Tolerance, check_gradient};
use super::linear::*;
use super::loss::*;
use super::norm::*;
use super::pool::*;

fn cfg(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7A11_5EED),
        failure_persistence: None,
        ..Config::default()
    }
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `Σ r_i·y_i` in f64: a random projection of a layer's output to a scalar.
fn proj(r: &[f32], y: &[f32]) -> f64 {
    r.iter()
        .zip(y)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

fn check(name: &str, x: &mut [f32], g: &[f32], loss: impl FnMut(&[f32]) -> f64) {
    if let Err(e) = check_gradient(name, x, g, None, Tolerance::default(), loss) {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(cfg(12))]

    #[test]
    fn linear_backward_matches_finite_differences(m in 1usize..5, di in 1usize..6, d_out in 1usize..6, seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = rand_vec(&mut rng, m * di, 1.0);
        let mut w = rand_vec(&mut rng, d_out * di, 1.0);
        let mut b = rand_vec(&mut rng, d_out, 1.0);
        let r = rand_vec(&mut rng, m * d_out, 1.0);
        let f = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; m * d_out];
            linear_forward(m, di, d_out, x, w, Some(b), &mut y).unwrap();
            proj(&r, &y)
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; m * di], vec![0.0; d_out * di], vec![0.0; d_out]);
        linear_backward(m, di, d_out, &x, &w, &r, Some(&mut dx), &mut dw, Some(&mut db), &mut Vec::new()).unwrap();
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("dx", &mut x, &dx, |x| f(x, &w0, &b0));
        check("dw", &mut w, &dw, |w| f(&x0, w, &b0));
        check("db", &mut b, &db, |b| f(&x0, &w0, b));
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences(rows in 1usize..4, d in 2usize..9, affine in any::<bool>(), seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = rand_vec(&mut rng, rows * d, 2.0);
        let mut g = rand_vec(&mut rng, d, 1.5);
        let mut b = rand_vec(&mut rng, d, 1.0);
        let r = rand_vec(&mut rng, rows * d, 1.0);
        let f = |x: &[f32], g: &[f32], b: &[f32]| {
            let (mut y, mut m, mut s) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
            let (g, b) = if affine { (Some(g), Some(b)) } else { (None, None) };
            layer_norm_forward(rows, d, x, g, b, 1e-5, &mut y, &mut m, &mut s).unwrap();
            proj(&r, &y)
        };
        let (mut y, mut mean, mut rstd) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
        let (ga, ba) = if affine { (Some(g.as_slice()), Some(b.as_slice())) } else { (None, None) };
        layer_norm_forward(rows, d, &x, ga, ba, 1e-5, &mut y, &mut mean, &mut rstd).unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; rows * d], vec![0.0; d], vec![0.0; d]);
        layer_norm_backward(rows, d, &x, &mean, &rstd, ga, &r, &mut dx,
            affine.then_some(dg.as_mut_slice()), affine.then_some(db.as_mut_slice())).unwrap();
        let (g0, b0, x0) = (g.clone(), b.clone(), x.clone());
        check("dx", &mut x, &dx, |x| f(x, &g0, &b0));
        if affine {
            check("dgain", &mut g, &dg, |g| f(&x0, g, &b0));
            check("dbias", &mut b, &db, |b| f(&x0, &g0, b));
        }
    }

    #[test]
    fn attention_backward_matches_finite_differences(
        lens in prop::collection::vec(1usize..5, 1..3), heads in 1usize..3, dh in 1usize..4,
        masked in any::<bool>(), causal in any::<bool>(), seed in 0u64..1000,
    ) {
        let d = heads * dh;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut offsets = vec![0];
        for l in &lens { offsets.push(offsets.last().unwrap() + l); }
        let m = *offsets.last().unwrap();
        let mask: Vec<bool> = (0..m).map(|_| masked && rng.random_bool(0.4)).collect();
        let mut x = rand_vec(&mut rng, m * d, 1.0);
        let mut p: Vec<Vec<f32>> = [3 * d * d, 3 * d, d * d, d].iter().map(|&n| rand_vec(&mut rng, n, 0.8)).collect();
        let r = rand_vec(&mut rng, m * d, 1.0);
        let run = |x: &[f32], p: &[Vec<f32>], cache: &mut MhaCache| {
            let w = MhaWeights { w_in: &p[0], b_in: &p[1], w_out: &p[2], b_out: &p[3] };
            let mut out = vec![0.0; m * d];
            mha_forward(d, heads, &offsets, x, Some(&mask), causal, &w, cache, &mut out, &mut MhaScratch::default()).unwrap();
            out
        };
        let mut cache = MhaCache::default();
        run(&x, &p, &mut cache);
        let mut dx = vec![0.0; m * d];
        let mut gs: Vec<Vec<f32>> = p.iter().map(|v| vec![0.0; v.len()]).collect();
        {
            let w = MhaWeights { w_in: &p[0], b_in: &p[1], w_out: &p[2], b_out: &p[3] };
            let [a, b, c, e] = &mut gs[..] else { unreachable!() };
            let mut g = MhaGrads { w_in: a, b_in: b, w_out: c, b_out: e };
            mha_backward(d, heads, &offsets, &x, &w, &cache, &r, &mut dx, &mut g, &mut MhaScratch::default()).unwrap();
        }
        let p0 = p.clone();
        check("dx", &mut x.clone(), &dx, |x| proj(&r, &run(x, &p0, &mut MhaCache::default())));
        for i in 0..4 {
            let mut t = p[i].clone();
            check(&format!("param {i}"), &mut t, &gs[i], |t| {
                let mut q = p0.clone();
                q[i] = t.to_vec();
                proj(&r, &run(&x, &q, &mut MhaCache::default()))
            });
            p[i] = t;
        }
        x.clear();
    }

    #[test]
    fn encoder_layer_backward_matches_finite_differences(
        lens in prop::collection::vec(1usize..5, 1..3), heads in 1usize..3, dh in 3usize..5, ff in 1usize..5,
        p_drop in prop::sample::select(vec![0.0f32, 0.3]), causal in any::<bool>(), seed in 0u64..1000,
    ) {
        // d ≥ 3: LayerNorm over two values is a smoothed sign function, too
        // sharp for finite differences.
        let dims = EncoderDims { d: heads * dh, heads, ff, eps: 1e-5, causal };
        let d = dims.d;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut offsets = vec![0];
        for l in &lens { offsets.push(offsets.last().unwrap() + l); }
        let m = *offsets.last().unwrap();
        // Masked rows (the masked-row rule) and masked keys.
        let mask: Vec<bool> = (0..m).map(|i| !offsets.contains(&i) && rng.random_bool(0.3)).collect();
        let x = rand_vec(&mut rng, m * d, 1.0);
        let mut block = rand_vec(&mut rng, dims.len(), 0.7);
        let keys: Vec<u64> = (0..lens.len() as u64).map(|i| dropout_key(seed, i, 0, 0)).collect();
        let drop = Some(LayerDropout { p: p_drop, keys: &keys });
        let r = rand_vec(&mut rng, m * d, 1.0);
        let run = |x: &[f32], block: &[f32], cache: &mut EncoderCache| {
            let w = EncoderWeights::split(block, &dims).unwrap();
            encoder_layer_forward(&dims, &offsets, x, Some(&mask), &w, drop, cache, &mut EncoderScratch::default()).unwrap();
            let mut y = cache.y[..m * d].to_vec();
            mask_rows_forward(d, &mask, &mut y);
            proj(&r, &y)
        };
        let mut cache = EncoderCache::default();
        run(&x, &block, &mut cache);
        let mut dy = r.clone();
        mask_rows_backward(d, &mask, &mut dy);
        let mut dx = vec![0.0; m * d];
        let mut gblock = vec![0.0; dims.len()];
        {
            let w = EncoderWeights::split(&block, &dims).unwrap();
            let mut g = EncoderGrads::split(&mut gblock, &dims).unwrap();
            encoder_layer_backward(&dims, &offsets, &x, &w, drop, &cache, &dy, &mut dx, &mut g, &mut EncoderScratch::default()).unwrap();
        }
        let b0 = block.clone();
        check("dx", &mut x.clone(), &dx, |x| run(x, &b0, &mut EncoderCache::default()));
        check("parameters", &mut block, &gblock, |b| run(&x, b, &mut EncoderCache::default()));
    }

    #[test]
    fn embedding_backward_matches_finite_differences(n in 1usize..6, dim in 1usize..4, seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut table = rand_vec(&mut rng, 4 * dim, 1.0);
        // Repeated rows accumulate.
        let rows: Vec<u32> = (0..n).map(|_| rng.random_range(0..4)).collect();
        let r = rand_vec(&mut rng, n * dim, 1.0);
        let f = |t: &[f32]| {
            let mut out = vec![0.0; n * dim];
            embedding_forward(t, dim, &rows, &mut out).unwrap();
            proj(&r, &out)
        };
        let mut g = vec![0.0; table.len()];
        embedding_backward(&mut g, dim, &rows, &r).unwrap();
        check("table", &mut table, &g, f);
        prop_assert!(embedding_forward(&table, dim, &[4], &mut vec![0.0; dim]).is_err());
    }

    #[test]
    fn early_fusion_backward_matches_finite_differences(n in 1usize..5, da in 1usize..4, di in 1usize..4, cand in any::<bool>(), seed in 0u64..1000) {
        let dims = FusionDims { d_act: da, d_item: di, with_candidate: cand };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (arows, irows) = (4usize, 5usize);
        let mut at = rand_vec(&mut rng, arows * da, 1.0);
        let mut it = rand_vec(&mut rng, irows * di, 1.0);
        let actions: Vec<u32> = (0..n).map(|_| rng.random_range(1..arows as u32)).collect();
        let items: Vec<u32> = (0..n).map(|_| rng.random_range(0..irows as u32)).collect();
        let c = rng.random_range(0..irows as u32);
        let r = rand_vec(&mut rng, n * dims.width(), 1.0);
        let f = |at: &[f32], it: &[f32]| {
            let mut out = vec![0.0; n * dims.width()];
            early_fusion_forward(&dims, at, it, &actions, &items, c, &mut out).unwrap();
            proj(&r, &out)
        };
        let (mut da_, mut di_) = (vec![0.0; at.len()], vec![0.0; it.len()]);
        early_fusion_backward(&dims, Some(&mut da_), Some(&mut di_), &actions, &items, c, &r).unwrap();
        let (a0, i0) = (at.clone(), it.clone());
        check("action table", &mut at, &da_, |a| f(a, &i0));
        check("item table", &mut it, &di_, |i| f(&a0, i));
        // The padding row takes no gradient.
        let mut dpad = vec![0.0; at.len()];
        early_fusion_backward(&dims, Some(&mut dpad), None, &vec![0; n], &items, c, &r).unwrap();
        prop_assert!(dpad.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn compression_backward_matches_finite_differences(
        s in 1usize..6, d in 1usize..5, kept in 1usize..4, max_pool in any::<bool>(), seed in 0u64..1000,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let kept = kept.min(s);
        let dims = CompressDims { d, seq_len: s, kept, max_pool };
        let positions: Vec<usize> = (0..s).filter(|&p| p == 0 || rng.random_bool(0.6)).collect();
        let n = positions.len();
        let mut y = rand_vec(&mut rng, n * d, 1.0);
        let mut w = rand_vec(&mut rng, d * d, 1.0);
        let mut b = rand_vec(&mut rng, d, 1.0);
        let r = rand_vec(&mut rng, dims.out_dim(), 1.0);
        let f = |y: &[f32], w: &[f32], b: &[f32]| {
            let mut out = vec![0.0; dims.out_dim()];
            let (mut pooled, mut am) = (vec![0.0; d], vec![0; d]);
            compress_forward(&dims, &positions, y, Some((w, b)), &mut pooled, &mut am, &mut out).unwrap();
            proj(&r, &out)
        };
        let mut out = vec![0.0; dims.out_dim()];
        let (mut pooled, mut am) = (vec![0.0; d], vec![0; d]);
        compress_forward(&dims, &positions, &y, Some((&w, &b)), &mut pooled, &mut am, &mut out).unwrap();
        let (mut dy, mut dw, mut db) = (vec![0.0; n * d], vec![0.0; d * d], vec![0.0; d]);
        compress_backward(&dims, &positions, Some((&w, &b)), &pooled, &am, &r, &mut dy,
            Some((&mut dw, &mut db)), &mut Vec::new(), &mut vec![0.0; d]).unwrap();
        let (y0, w0, b0) = (y.clone(), w.clone(), b.clone());
        check("dy", &mut y, &dy, |y| f(y, &w0, &b0));
        if max_pool {
            check("dW_o", &mut w, &dw, |w| f(&y0, w, &b0));
            check("db_o", &mut b, &db, |b| f(&y0, &w0, b));
        }
    }

    #[test]
    fn cross_and_mlp_backward_match_finite_differences(m in 1usize..4, n in 1usize..6, h in 1usize..5, seed in 0u64..1000) {
        // x1 = cross(x0, x0); x2 = cross(x0, x1); z = W·relu(V·x2 + c) + e.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x0 = rand_vec(&mut rng, m * n, 1.0);
        let p: Vec<Vec<f32>> = [n * n, n, n * n, n, h * n, h, 2 * h, 2].iter().map(|&k| rand_vec(&mut rng, k, 0.8)).collect();
        let r = rand_vec(&mut rng, m * 2, 1.0);
        struct Acts { t1: Vec<f32>, x1: Vec<f32>, t2: Vec<f32>, x2: Vec<f32>, hid: Vec<f32>, z: Vec<f32> }
        let fwd = |x0: &[f32], p: &[Vec<f32>]| {
            let (mut t1, mut x1, mut t2, mut x2) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
            cross_forward(m, n, x0, x0, &p[0], &p[1], &mut t1, &mut x1).unwrap();
            cross_forward(m, n, x0, &x1, &p[2], &p[3], &mut t2, &mut x2).unwrap();
            let mut hid = vec![0.0; m * h];
            linear_forward(m, n, h, &x2, &p[4], Some(&p[5]), &mut hid).unwrap();
            relu_forward(&mut hid);
            let mut z = vec![0.0; m * 2];
            linear_forward(m, h, 2, &hid, &p[6], Some(&p[7]), &mut z).unwrap();
            Acts { t1, x1, t2, x2, hid, z }
        };
        let a = fwd(&x0, &p);
        let mut g: Vec<Vec<f32>> = p.iter().map(|v| vec![0.0; v.len()]).collect();
        let (mut dt, mut sc) = (Vec::new(), Vec::new());
        let mut dhid = vec![0.0; m * h];
        {
            let [g0, g1, g2, g3, g4, g5, g6, g7] = &mut g[..] else { unreachable!() };
            linear_backward(m, h, 2, &a.hid, &p[6], &r, Some(&mut dhid), g6, Some(g7), &mut sc).unwrap();
            relu_backward(&a.hid, &mut dhid);
            let mut dx2 = vec![0.0; m * n];
            linear_backward(m, n, h, &a.x2, &p[4], &dhid, Some(&mut dx2), g4, Some(g5), &mut sc).unwrap();
            let (mut dx1, mut dx0) = (vec![0.0; m * n], vec![0.0; m * n]);
            cross_backward(m, n, &x0, &a.x1, &p[2], &a.t2, &dx2, &mut dx1, &mut dx0, g2, g3, &mut dt, &mut sc).unwrap();
            let mut dxa = vec![0.0; m * n];
            cross_backward(m, n, &x0, &x0, &p[0], &a.t1, &dx1, &mut dxa, &mut dx0, g0, g1, &mut dt, &mut sc).unwrap();
            dx0.iter_mut().zip(&dxa).for_each(|(a, b)| *a += b);
            let p0 = p.clone();
            check("dx0", &mut x0, &dx0, |x| proj(&r, &fwd(x, &p0).z));
        }
        let x00 = x0.clone();
        for i in 0..p.len() {
            let p0 = p.clone();
            let mut t = p[i].clone();
            check(&format!("param {i}"), &mut t, &g[i], |t| {
                let mut q = p0.clone();
                q[i] = t.to_vec();
                proj(&r, &fwd(&x00, &q).z)
            });
        }
        prop_assert!(a.z.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn losses_match_finite_differences(n in 1usize..6, dim in 1usize..5, seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut z = rand_vec(&mut rng, n, 4.0);
        let labels: Vec<f32> = (0..n).map(|_| f32::from(u8::from(rng.random_bool(0.5)))).collect();
        let weights = rand_vec(&mut rng, n, 1.0).into_iter().map(f32::abs).collect::<Vec<_>>();
        let mut dz = vec![0.0; n];
        bce_forward_backward(&z, &labels, &weights, 0.5, &mut dz).unwrap();
        check("bce dz", &mut z, &dz, |z| bce_forward_backward(z, &labels, &weights, 0.5, &mut vec![0.0; n]).unwrap());
        let mut u = rand_vec(&mut rng, dim, 1.0);
        let mut t = rand_vec(&mut rng, n * dim, 1.0);
        let (mut du, mut dtg) = (vec![0.0; dim], vec![0.0; n * dim]);
        let mut sc = vec![0.0; n];
        sampled_softmax(dim, n, &u, &t, &mut [], 0.7, &mut du, &mut dtg, &mut sc).unwrap();
        let (u0, t0) = (u.clone(), t.clone());
        let f = |u: &[f32], t: &[f32]| sampled_softmax(dim, n, u, t, &mut [], 0.7, &mut vec![0.0; dim], &mut vec![0.0; n * dim], &mut vec![0.0; n]).unwrap();
        check("nal du", &mut u, &du, |u| f(u, &t0));
        check("nal dtargets", &mut t, &dtg, |t| f(&u0, t));
    }
}

#[test]
fn causal_attention_ignores_newer_rows() {
    // Newest first: row t attends to rows t.. of its sequence only.
    let (d, heads) = (4, 2);
    let offsets = [0, 3, 5];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = rand_vec(&mut rng, 5 * d, 1.0);
    let p: Vec<Vec<f32>> = [3 * d * d, 3 * d, d * d, d]
        .iter()
        .map(|&n| rand_vec(&mut rng, n, 0.8))
        .collect();
    let w = MhaWeights {
        w_in: &p[0],
        b_in: &p[1],
        w_out: &p[2],
        b_out: &p[3],
    };
    let run = |x: &[f32], causal: bool| {
        let mut out = vec![0.0; 5 * d];
        let mut cache = MhaCache::default();
        let mut sc = MhaScratch::default();
        mha_forward(
            d, heads, &offsets, x, None, causal, &w, &mut cache, &mut out, &mut sc,
        )
        .unwrap();
        out
    };
    // Change the newest row of the first sequence.
    let mut x2 = x.clone();
    x2[..d].iter_mut().for_each(|v| *v += 1.0);
    let (a, b) = (run(&x, true), run(&x2, true));
    assert_ne!(a[..d], b[..d]);
    assert_eq!(a[d..], b[d..], "older rows must not see the newest one");
    // Without the mask they do.
    let (a, b) = (run(&x, false), run(&x2, false));
    assert_ne!(a[d..3 * d], b[d..3 * d]);
    assert_eq!(a[3 * d..], b[3 * d..]);
    // The oldest row of a sequence attends to itself alone.
    let (a, b) = (run(&x, true), run(&x, false));
    assert_ne!(a[2 * d..3 * d], b[2 * d..3 * d]);
}

#[test]
fn bce_is_stable_for_large_logits() {
    let (l, g) = bce_with_logits(100.0, 1.0);
    assert!(l < 1e-30 && g.abs() < 1e-6);
    let (l, g) = bce_with_logits(-100.0, 1.0);
    assert!((l - 100.0).abs() < 1e-9 && (g + 1.0).abs() < 1e-6);
}

#[test]
fn dropout_masks_depend_only_on_key_and_counter() {
    let key = dropout_key(7, 3, 1, 0);
    let mut a = vec![1.0f32; 1000];
    dropout_forward(&mut a, 0.25, key, 0);
    let kept_frac = a.iter().filter(|&&v| v != 0.0).count() as f32 / 1000.0;
    assert!((kept_frac - 0.75).abs() < 0.06, "{kept_frac}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    // The second half alone, with its counters, gives the same mask.
    let mut b = vec![1.0f32; 500];
    dropout_forward(&mut b, 0.25, key, 500);
    assert_eq!(&a[500..], &b[..]);
    let mut g = vec![2.0f32; 1000];
    dropout_backward(&mut g, 0.25, key, 0);
    assert!(g.iter().zip(&a).all(|(&g, &m)| (g == 0.0) == (m == 0.0)));
    // Any starting counter agrees with `kept`, element by element.
    let mut d = vec![1.0f32; 37];
    dropout_forward(&mut d, 0.25, key, 3);
    for (i, &v) in d.iter().enumerate() {
        assert_eq!(v != 0.0, kept(key, 3 + i as u64, 0.25), "element {i}");
    }
    let mut c = vec![1.0f32; 1000];
    dropout_forward(&mut c, 0.25, dropout_key(7, 4, 1, 0), 0);
    assert_ne!(a, c);
}

#[test]
fn max_pool_gives_the_gradient_to_the_argmax_and_none_to_a_zero_row() {
    let y = [1.0, -3.0, 2.0, -1.0];
    let (mut out, mut am) = ([0.0; 2], [0u32; 2]);
    max_pool_forward(2, 2, &y, true, &mut out, &mut am).unwrap();
    assert_eq!(out, [2.0, 0.0]);
    assert_eq!(am, [1, ZERO_ROW]);
    let mut dy = [0.0; 4];
    max_pool_backward(2, &am, &[1.0, 1.0], &mut dy).unwrap();
    assert_eq!(dy, [0.0, 0.0, 1.0, 0.0]);
    assert!(max_pool_forward(3, 2, &y, true, &mut out, &mut am).is_err());
}

mod v2 {
    use super::*;
    use crate::layers::v2::*;
    use transact_model::v2::V2Block;

    struct Case {
        dims: V2Dims,
        seq: usize,
        lens: Vec<usize>,
        x: Vec<f32>,
        w: Vec<Vec<f32>>,
    }

    fn case(batch: usize, seq: usize, d: usize, f: usize, causal: bool, seed: u64) -> Case {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lens = (0..batch).map(|_| rng.random_range(0..=seq)).collect();
        let x = rand_vec(&mut rng, batch * seq * d, 1.0);
        let w = [d * d, d * d, d * d, d * f, f * d]
            .iter()
            .map(|&n| rand_vec(&mut rng, n, 0.8))
            .collect();
        Case {
            dims: V2Dims {
                d,
                f,
                eps: 1e-5,
                causal,
            },
            seq,
            lens,
            x,
            w,
        }
    }

    fn run(c: &Case, x: &[f32], w: &[Vec<f32>], cache: &mut V2Cache) -> Vec<f32> {
        let wt = V2Weights {
            wq: &w[0],
            wk: &w[1],
            wv: &w[2],
            w1: &w[3],
            w2: &w[4],
        };
        let mut out = vec![0.0; x.len()];
        v2_block_forward(&c.dims, c.seq, &c.lens, x, &wt, cache, &mut out).unwrap();
        out
    }

    proptest! {
        #![proptest_config(cfg(12))]

        #[test]
        fn v2_forward_matches_the_serving_block(batch in 1usize..4, seq in 1usize..7, d in 2usize..9, f in 1usize..6, causal in any::<bool>(), seed in 0u64..1000) {
            let c = case(batch, seq, d, f, causal, seed);
            let got = run(&c, &c.x, &c.w, &mut V2Cache::default());
            let blk = V2Block::from_weights(d, f, c.w[0].clone(), c.w[1].clone(), c.w[2].clone(), c.w[3].clone(), c.w[4].clone()).unwrap();
            let mut want = c.x.clone();
            blk.block_forward(&mut want, batch, seq, &c.lens, causal, 1e-5).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                prop_assert!((a - b).abs() < 1e-4, "value {i}: {a} vs serving {b}");
            }
        }

        // d ≥ 4: two LayerNorms without affine over three values curve too
        // sharply for f32 central differences.
        #[test]
        fn v2_backward_matches_finite_differences(batch in 1usize..3, seq in 1usize..5, d in 4usize..8, f in 1usize..5, causal in any::<bool>(), seed in 0u64..1000) {
            let c = case(batch, seq, d, f, causal, seed);
            let r = {
                let mut rng = ChaCha8Rng::seed_from_u64(seed + 7);
                rand_vec(&mut rng, c.x.len(), 1.0)
            };
            let mut cache = V2Cache::default();
            run(&c, &c.x, &c.w, &mut cache);
            let mut dx = vec![0.0; c.x.len()];
            let mut gs: Vec<Vec<f32>> = c.w.iter().map(|v| vec![0.0; v.len()]).collect();
            {
                let wt = V2Weights { wq: &c.w[0], wk: &c.w[1], wv: &c.w[2], w1: &c.w[3], w2: &c.w[4] };
                let [a, b, e, g1, g2] = &mut gs[..] else { unreachable!() };
                let mut g = V2Grads { wq: a, wk: b, wv: e, w1: g1, w2: g2 };
                v2_block_backward(&c.dims, c.seq, &c.lens, &wt, &cache, &r, &mut dx, &mut g, &mut V2Scratch::default()).unwrap();
            }
            // Padded input rows get no gradient.
            for (b, &l) in c.lens.iter().enumerate() {
                let pad = &dx[(b * c.seq + l.max(1)) * d..(b + 1) * c.seq * d];
                prop_assert!(pad.iter().all(|&v| v == 0.0));
            }
            check("dx", &mut c.x.clone(), &dx, |x| proj(&r, &run(&c, x, &c.w, &mut V2Cache::default())));
            for i in 0..5 {
                let mut t = c.w[i].clone();
                check(&format!("weight {i}"), &mut t, &gs[i], |t| {
                    let mut w = c.w.clone();
                    w[i] = t.to_vec();
                    proj(&r, &run(&c, &c.x, &w, &mut V2Cache::default()))
                });
            }
        }
    }
}
