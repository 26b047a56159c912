//! Tests of the V2 block and encoder against the naive oracle, and of the
//! masking, causality, normalisation, serialisation and input checks.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::block::blocks_forward_with;
use super::naive::block_forward_naive;
use super::*;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Lengths for `batch` rows that include 0, 1 and `seq` whenever the batch
/// is large enough, the rest random.
fn lens_for(rng: &mut ChaCha8Rng, batch: usize, seq: usize) -> Vec<usize> {
    (0..batch)
        .map(|b| match b % 4 {
            0 => seq,
            1 => 0,
            2 => 1.min(seq),
            _ => rng.random_range(0..=seq),
        })
        .collect()
}

fn stack(d: usize, f: usize, layers: usize, seed: u64) -> Vec<V2Block> {
    (0..layers)
        .map(|i| V2Block::new_random(d, f, seed + i as u64).unwrap())
        .collect()
}

fn naive_stack(
    blocks: &[V2Block],
    x: &mut [f32],
    b: usize,
    s: usize,
    lens: &[usize],
    causal: bool,
) {
    for blk in blocks {
        block_forward_naive(blk, x, b, s, lens, causal, 1e-5);
    }
}

struct EncCase {
    enc: V2Encoder,
    batch: usize,
    seq: usize,
    lens: Vec<usize>,
    items: Vec<f32>,
    masks: Vec<u32>,
    surfaces: Vec<u16>,
    cands: Vec<f32>,
}

impl EncCase {
    fn new(cfg: V2Config, batch: usize, seq: usize, seed: u64) -> Self {
        let enc = V2Encoder::new_random(cfg.clone(), seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xABCD);
        let di = cfg.item_emb_dim;
        let lens = lens_for(&mut rng, batch, seq);
        let items = rand_vec(&mut rng, batch * seq * di, 1.0);
        let masks = (0..batch * seq)
            .map(|_| rng.random_range(0..(1u64 << cfg.num_action_types)) as u32)
            .collect();
        let surfaces = (0..batch * seq)
            .map(|_| rng.random_range(0..cfg.num_surfaces) as u16)
            .collect();
        let cands = rand_vec(&mut rng, batch * di, 1.0);
        Self {
            enc,
            batch,
            seq,
            lens,
            items,
            masks,
            surfaces,
            cands,
        }
    }

    fn req(&self) -> V2Request<'_> {
        V2Request {
            batch: self.batch,
            seq: self.seq,
            lens: &self.lens,
            item_embeddings: &self.items,
            action_masks: &self.masks,
            surfaces: &self.surfaces,
            candidates: &self.cands,
        }
    }

    fn run(&self) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0.0; self.batch * self.enc.output_dim()];
        self.enc.forward(&self.req(), &mut out)?;
        Ok(out)
    }

    fn run_naive(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.batch * self.enc.output_dim()];
        self.enc.forward_naive(&self.req(), &mut out).unwrap();
        out
    }
}

fn small_cfg(
    di: usize,
    f: usize,
    layers: usize,
    seq_len: usize,
    k: usize,
    causal: bool,
) -> V2Config {
    V2Config {
        seq_len,
        item_emb_dim: di,
        num_action_types: 5,
        num_surfaces: 3,
        num_layer: layers,
        dim_feedforward: f,
        latest_n_emb: k,
        causal,
        ..V2Config::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn block_stack_matches_naive(
        batch in 1usize..5, seq in 1usize..21, di in 2usize..9, f in 1usize..9,
        layers in 1usize..4, causal: bool, seed in 0u64..1000,
    ) {
        let d = 2 * di;
        let blocks = stack(d, f, layers, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lens = lens_for(&mut rng, batch, seq);
        let x0 = rand_vec(&mut rng, batch * seq * d, 2.0);
        let mut fast = x0.clone();
        blocks_forward(&blocks, &mut fast, batch, seq, &lens, causal, 1e-5).unwrap();
        let mut slow = x0.clone();
        naive_stack(&blocks, &mut slow, batch, seq, &lens, causal);
        prop_assert!(max_diff(&fast, &slow) < 1e-4, "max diff {}", max_diff(&fast, &slow));
        // One block at a time gives the same as the fused stack.
        let mut one = x0;
        for b in &blocks {
            b.block_forward(&mut one, batch, seq, &lens, causal, 1e-5).unwrap();
        }
        prop_assert!(max_diff(&fast, &one) < 1e-5);
    }

    #[test]
    fn encoder_matches_naive(
        batch in 1usize..5, seq in 1usize..21, extra in 0usize..4, di in 2usize..9, f in 1usize..9,
        layers in 1usize..4, k in 0usize..6, causal: bool, seed in 0u64..1000,
    ) {
        let c = EncCase::new(small_cfg(di, f, layers, seq + extra, k, causal), batch, seq, seed);
        let fast = c.run().unwrap();
        let slow = c.run_naive();
        prop_assert!(max_diff(&fast, &slow) < 1e-4, "max diff {}", max_diff(&fast, &slow));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Widths that are multiples of 16 take the AVX-512 kernels where the
    /// CPU has them; the portable path is checked on the same inputs.
    #[test]
    fn both_code_paths_match_naive_at_simd_widths(
        batch in 1usize..6, seq in 1usize..70, di in prop::sample::select(vec![8usize, 16, 32]),
        f in prop::sample::select(vec![16usize, 32]), layers in 1usize..3, causal: bool,
        seed in 0u64..1000,
    ) {
        let d = 2 * di;
        let blocks = stack(d, f, layers, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lens = lens_for(&mut rng, batch, seq);
        let x0 = rand_vec(&mut rng, batch * seq * d, 2.0);
        let mut slow = x0.clone();
        naive_stack(&blocks, &mut slow, batch, seq, &lens, causal);
        for portable in [false, true] {
            let mut fast = x0.clone();
            blocks_forward_with(&blocks, &mut fast, batch, seq, &lens, causal, 1e-5, portable)
                .unwrap();
            let diff = max_diff(&fast, &slow);
            prop_assert!(diff < 1e-4, "portable {}: max diff {}", portable, diff);
        }
    }
}

#[test]
fn default_width_encoder_matches_naive() {
    // d = 64, FFN 32: the production shape, on whichever path the CPU takes.
    let cfg = V2Config {
        seq_len: 50,
        ..V2Config::default()
    };
    let c = EncCase::new(cfg, 7, 45, 17);
    assert!(max_diff(&c.run().unwrap(), &c.run_naive()) < 1e-4);
}

#[test]
fn long_rows_use_several_query_tiles_and_chunks() {
    // S well past the query tile, enough candidates for several chunks.
    let (batch, seq, d, f) = (11, 77, 16, 8);
    for causal in [true, false] {
        let blocks = stack(d, f, 2, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut lens = lens_for(&mut rng, batch, seq);
        lens[3] = 33;
        lens[7] = 64;
        let x0 = rand_vec(&mut rng, batch * seq * d, 2.0);
        let mut fast = x0.clone();
        blocks_forward(&blocks, &mut fast, batch, seq, &lens, causal, 1e-5).unwrap();
        let mut slow = x0;
        naive_stack(&blocks, &mut slow, batch, seq, &lens, causal);
        assert!(
            max_diff(&fast, &slow) < 1e-4,
            "causal {causal}: {}",
            max_diff(&fast, &slow)
        );
    }
    let c = EncCase::new(small_cfg(8, 8, 2, 80, 10, true), 13, 77, 4);
    assert!(max_diff(&c.run().unwrap(), &c.run_naive()) < 1e-4);
}

#[test]
fn padded_inputs_never_change_the_output() {
    let (batch, seq, d, f) = (4, 12, 8, 4);
    let blocks = stack(d, f, 2, 1);
    let lens = [12, 5, 0, 1];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x0 = rand_vec(&mut rng, batch * seq * d, 1.0);
    let mut a = x0.clone();
    blocks_forward(&blocks, &mut a, batch, seq, &lens, true, 1e-5).unwrap();
    let mut x1 = x0;
    for (b, &len) in lens.iter().enumerate() {
        for t in len.max(1)..seq {
            for c in 0..d {
                x1[(b * seq + t) * d + c] = if c == 0 { f32::NAN } else { 1e6 * (c as f32) };
            }
        }
    }
    blocks_forward(&blocks, &mut x1, batch, seq, &lens, true, 1e-5).unwrap();
    assert_eq!(a, x1);

    // The encoder: garbage (even invalid values) in padded slots is ignored.
    let mut c = EncCase::new(small_cfg(4, 4, 2, 12, 4, true), 4, 12, 8);
    c.lens = vec![12, 5, 0, 1];
    let before = c.run().unwrap();
    let di = 4;
    for (b, &len) in c.lens.clone().iter().enumerate() {
        for t in len.max(1)..12 {
            let slot = b * 12 + t;
            c.items[slot * di..(slot + 1) * di].fill(f32::NAN);
            c.masks[slot] = u32::MAX;
            c.surfaces[slot] = 999;
        }
    }
    assert_eq!(before, c.run().unwrap());
    // ...whereas changing a valid token does change it (the test can fail).
    c.items[5 * di] += 1.0;
    assert_ne!(before, c.run().unwrap());
}

#[test]
fn causal_outputs_of_older_positions_ignore_newer_tokens() {
    let (batch, seq, d, f) = (3, 40, 8, 4);
    let blocks = stack(d, f, 3, 2);
    let lens = [40, 37, 20];
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x0 = rand_vec(&mut rng, batch * seq * d, 1.0);
    for causal in [true, false] {
        let mut base = x0.clone();
        blocks_forward(&blocks, &mut base, batch, seq, &lens, causal, 1e-5).unwrap();
        for t in [1usize, 17, 19, 33] {
            let mut x = x0.clone();
            for b in 0..batch {
                x[(b * seq + t) * d] += 3.0;
            }
            blocks_forward(&blocks, &mut x, batch, seq, &lens, causal, 1e-5).unwrap();
            let older = |v: &[f32], b: usize| v[b * seq * d..(b * seq + t) * d].to_vec();
            let moved = (0..batch)
                .map(|b| max_diff(&older(&base, b), &older(&x, b)))
                .fold(0.0, f32::max);
            if causal {
                assert!(moved < 1e-6, "token {t} moved older outputs by {moved}");
            } else {
                assert!(
                    moved > 1e-3,
                    "without the mask token {t} should matter ({moved})"
                );
            }
        }
    }
}

#[test]
fn block_rows_are_normalised_and_padding_is_zero() {
    let (batch, seq, d, f) = (3, 30, 12, 6);
    let blocks = stack(d, f, 2, 6);
    let lens = [30, 9, 0];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut x = rand_vec(&mut rng, batch * seq * d, 3.0);
    blocks_forward(&blocks, &mut x, batch, seq, &lens, true, 1e-5).unwrap();
    for (b, &len) in lens.iter().enumerate() {
        for t in 0..seq {
            let row = &x[(b * seq + t) * d..(b * seq + t + 1) * d];
            if t < len.max(1) {
                let mean = row.iter().sum::<f32>() / d as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                assert!(mean.abs() < 1e-5, "row {b}/{t} mean {mean}");
                assert!((var - 1.0).abs() < 1e-3, "row {b}/{t} var {var}");
            } else {
                assert!(row.iter().all(|&v| v == 0.0), "padded row {b}/{t} not zero");
            }
        }
    }
}

#[test]
fn empty_row_behaves_like_a_one_token_row() {
    let mut c = EncCase::new(small_cfg(4, 4, 2, 6, 3, true), 2, 6, 12);
    c.lens = vec![0, 1];
    // Same position-0 inputs in both rows and the same candidate.
    let di = 4;
    let first = c.items[..di].to_vec();
    c.items[6 * di..7 * di].copy_from_slice(&first);
    c.masks[6] = c.masks[0];
    c.surfaces[6] = c.surfaces[0];
    let cand = c.cands[..di].to_vec();
    c.cands[di..].copy_from_slice(&cand);
    let out = c.run().unwrap();
    let od = c.enc.output_dim();
    assert_eq!(out[..od], out[od..]);
    // The newest row is kept and the rest of the kept rows are zero.
    let d = 8;
    assert!(out[d..2 * d].iter().any(|&v| v != 0.0));
    assert!(out[2 * d..od].iter().all(|&v| v == 0.0));
}

#[test]
fn save_and_load_round_trip() {
    let c = EncCase::new(small_cfg(4, 6, 2, 10, 3, true), 3, 10, 21);
    let map = c.enc.to_tensors();
    let bytes = map.to_bytes().unwrap();
    let back = V2Encoder::from_tensors(&TensorMap::from_bytes(&bytes, "mem").unwrap()).unwrap();
    assert_eq!(back, c.enc);
    let before = c.run().unwrap();
    let mut out = vec![0.0; before.len()];
    back.forward(&c.req(), &mut out).unwrap();
    assert_eq!(before, out);
    assert!(map.tensors.contains_key("v2.blocks.1.w2"));
    assert!(map.tensors.contains_key("v2.out.weight"));
    // A wrong shape is reported by name.
    let mut broken = map.clone();
    broken
        .insert_f32("v2.blocks.0.wq", vec![3, 3], vec![0.0; 9])
        .unwrap();
    let err = V2Encoder::from_tensors(&broken).unwrap_err().to_string();
    assert!(err.contains("v2.blocks.0.wq"), "{err}");
    let mut no_cfg = map;
    no_cfg.metadata.clear();
    assert!(V2Encoder::from_tensors(&no_cfg).is_err());
}

#[test]
fn bad_inputs_are_reported_by_name() {
    let base = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    let msg = |c: &EncCase| c.run().unwrap_err().to_string();
    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.lens = vec![8, 8];
    c.items[(8 + 3) * 4 + 2] = f32::NAN;
    let e = msg(&c);
    assert!(
        e.contains("item_embeddings") && e.contains(&((8 + 3) * 4 + 2).to_string()),
        "{e}"
    );

    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.lens = vec![8, 8];
    c.masks[9] = 1 << 5;
    let e = msg(&c);
    assert!(e.contains("action_masks[9]") && e.contains("bit 5"), "{e}");

    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.lens = vec![8, 8];
    c.surfaces[10] = 3;
    let e = msg(&c);
    assert!(e.contains("surfaces[10]"), "{e}");

    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.lens = vec![8, 9];
    assert!(msg(&c).contains("lens[1]"));

    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.cands[5] = f32::INFINITY;
    assert!(msg(&c).contains("candidates"));

    let mut c = EncCase::new(small_cfg(4, 4, 1, 8, 2, true), 2, 8, 31);
    c.items.pop();
    assert!(matches!(c.run(), Err(ModelError::Shape { .. })));

    // S above the model's seq_len.
    let big = EncCase::new(small_cfg(4, 4, 1, 9, 2, true), 2, 9, 31);
    let mut out = vec![0.0; 2 * base.enc.output_dim()];
    let e = base
        .enc
        .forward(&big.req(), &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("seq_len"), "{e}");

    // Output buffer of the wrong size.
    let mut out = vec![0.0; 3];
    assert!(base.enc.forward(&base.req(), &mut out).is_err());

    // Block-level checks.
    let blk = V2Block::new_random(8, 4, 0).unwrap();
    let mut x = vec![0.0; 2 * 3 * 8];
    assert!(
        blk.block_forward(&mut x, 2, 3, &[3, 4], true, 1e-5)
            .is_err()
    );
    assert!(blk.block_forward(&mut x, 2, 3, &[3], true, 1e-5).is_err());
    assert!(
        blk.block_forward(&mut x[1..], 2, 3, &[3, 3], true, 1e-5)
            .is_err()
    );
    assert!(blk.block_forward(&mut x, 2, 3, &[3, 3], true, 0.0).is_err());
    assert!(V2Block::new_random(0, 4, 0).is_err());
    assert!(
        V2Block::from_weights(
            2,
            1,
            vec![0.0; 4],
            vec![0.0; 4],
            vec![0.0; 3],
            vec![0.0; 2],
            vec![0.0; 2]
        )
        .is_err()
    );
}

#[test]
fn block_input_blocks_and_compress_are_the_forward() {
    // The split a GPU backend uses: tokens here, blocks anywhere, compression here.
    for (causal, seed) in [(true, 3), (false, 4)] {
        let cfg = small_cfg(8, 24, 2, 12, 3, causal);
        let c = EncCase::new(cfg.clone(), 9, 12, seed);
        let req = c.req();
        let mut y = c.enc.block_input(&req).unwrap();
        blocks_forward(
            c.enc.blocks(),
            &mut y,
            c.batch,
            c.seq,
            &c.lens,
            cfg.causal,
            cfg.layer_norm_eps,
        )
        .unwrap();
        let mut out = vec![0.0; c.batch * c.enc.output_dim()];
        c.enc.compress(&y, c.seq, &c.lens, &mut out).unwrap();
        assert!(max_diff(&out, &c.run().unwrap()) < 1e-5);
        assert!(max_diff(&out, &c.run_naive()) < 1e-4);
    }
    let c = EncCase::new(small_cfg(4, 8, 1, 6, 2, true), 2, 6, 5);
    let mut out = vec![0.0; 2 * c.enc.output_dim()];
    let err = c
        .enc
        .compress(&[0.0; 10], 6, &c.lens, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains('y'), "{err}");
    let mut bad = c.req();
    let lens = [7, 1];
    bad.lens = &lens;
    assert!(c.enc.block_input(&bad).is_err());
}
