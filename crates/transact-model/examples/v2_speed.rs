//! Speed of the V2 block stack on the benchmark shape: B = 256 candidates,
//! S = 192 tokens (all valid), d = 64, FFN 32, L = 2, causal.
//!
//! Run: `cargo run --release -p transact-model --example v2_speed`
//! (optional arguments: `B S runs`). Prints the median (and the minimum)
//! over the runs after a warm-up, for the block stack alone and for the
//! whole encoder. The blocks run in place on the same buffer each time (the
//! output of a block is a valid input: LayerNorm keeps it bounded).

use std::time::Instant;

use transact_model::v2::{V2Block, blocks_forward};
use transact_model::{ModelError, V2Config, V2Encoder, V2Request};

/// Median and minimum wall time of `f` over `runs` calls, after 3 warm-up calls.
fn time_ms(
    mut f: impl FnMut() -> Result<(), ModelError>,
    runs: usize,
) -> Result<(f64, f64), ModelError> {
    for _ in 0..3 {
        f()?;
    }
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok((t[t.len() / 2], t[0]))
}

fn main() -> Result<(), ModelError> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(256);
    let seq = args.get(1).copied().unwrap_or(192);
    let runs = args.get(2).copied().unwrap_or(20);
    let (d, f, layers, eps) = (64, 32, 2, 1e-5f32);
    let blocks: Vec<V2Block> = (0..layers)
        .map(|i| V2Block::new_random(d, f, 11 + i as u64))
        .collect::<Result<_, _>>()?;
    let input: Vec<f32> = (0..batch * seq * d)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0)
        .collect();
    let lens = vec![seq; batch];
    let mut x = input;
    println!(
        "V2 block stack: B={batch} S={seq} d={d} FFN={f} L={layers} causal, {} threads, {runs} runs",
        rayon::current_num_threads()
    );
    let (med, min) = time_ms(
        || blocks_forward(&blocks, &mut x, batch, seq, &lens, true, eps),
        runs,
    )?;
    println!("  blocks_forward (the L blocks per chunk):  median {med:.2} ms  (min {min:.2})");
    let (med, min) = time_ms(
        || {
            for b in &blocks {
                b.block_forward(&mut x, batch, seq, &lens, true, eps)?;
            }
            Ok(())
        },
        runs,
    )?;
    println!("  block_forward, one block at a time:       median {med:.2} ms  (min {min:.2})");
    let (med, min) = time_ms(
        || blocks_forward(&blocks, &mut x, batch, seq, &lens, false, eps),
        runs,
    )?;
    println!("  blocks_forward, not causal:               median {med:.2} ms  (min {min:.2})");

    let cfg = V2Config {
        seq_len: seq,
        ..V2Config::default()
    };
    let enc = V2Encoder::new_random(cfg, 3)?;
    let di = enc.config().item_emb_dim;
    let items: Vec<f32> = (0..batch * seq * di)
        .map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * 0.2)
        .collect();
    let masks = vec![0b11u32; batch * seq];
    let surfaces = vec![1u16; batch * seq];
    let cands: Vec<f32> = (0..batch * di)
        .map(|i| ((i * 13 % 29) as f32 / 29.0 - 0.5) * 0.2)
        .collect();
    let req = V2Request {
        batch,
        seq,
        lens: &lens,
        item_embeddings: &items,
        action_masks: &masks,
        surfaces: &surfaces,
        candidates: &cands,
    };
    let mut out = vec![0.0; batch * enc.output_dim()];
    let (med, min) = time_ms(|| enc.forward(&req, &mut out), runs)?;
    println!(
        "  V2Encoder::forward (embeddings + blocks + output): median {med:.2} ms  (min {min:.2})"
    );
    Ok(())
}
