//! Single-threaded throughput of `Net::forward_backward` and `Net::predict`
//! for the default V1 config (S = 100, d = 96, L = 2, heads 2 × cross +
//! MLP 256 → 64, 3 heads), NAL with impression negatives, dropout 0.1.
//!
//! `cargo run --release -p transact-train --example net_bench [batch] [fill] [threads]`
//! (`fill`: fraction of the 100 positions that are unmasked, default 1.0;
//! `threads`: also time forward+backward split over that many threads, each
//! with its own range, gradients and workspace, as a trainer would).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_train::net::{Net, NetConfig, StepOptions, Workspace};
use transact_train::{Batch, NO_ITEM};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let b: usize = args.get(1).map_or(Ok(256), |s| s.parse())?;
    let fill: f64 = args.get(2).map_or(Ok(1.0), |s| s.parse())?;
    let mut cfg = NetConfig {
        item_rows: 10_000,
        nal: true,
        dropout: 0.1,
        ..NetConfig::default()
    };
    cfg.heads.user_emb_dim = 8;
    let (net, params) = Net::new(cfg.clone(), 1)?;
    let s = cfg.v1.seq_len;
    let h = cfg.heads.heads.len();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let negs = 10;
    let mut batch = Batch {
        len: b,
        seq_len: s,
        nal_negatives: negs,
        ..Batch::default()
    };
    for _ in 0..b {
        let valid = ((s as f64 * fill).round() as usize).clamp(1, s);
        for p in 0..s {
            batch.seq_items.push(rng.random_range(0..10_000));
            batch.seq_actions.push(rng.random_range(1..21));
            batch.seq_masked.push(p >= valid);
        }
        batch.cand_items.push(rng.random_range(0..10_000));
        batch
            .user_features
            .extend((0..8).map(|_| rng.random_range(-1.0f32..1.0)));
        batch
            .labels
            .extend((0..h).map(|_| f32::from(u8::from(rng.random_bool(0.3)))));
        batch.weights.extend((0..h).map(|_| 1.0f32));
        batch.nal_pos.push(if rng.random_bool(0.7) {
            rng.random_range(0..10_000)
        } else {
            NO_ITEM
        });
        batch
            .nal_neg
            .extend((0..negs).map(|_| rng.random_range(0..10_000u32)));
    }
    let opts = StepOptions {
        nal_weight: 0.01,
        in_batch_negatives: false,
        also_in_batch: false,
        dropout: true,
        step_seed: 3,
    };
    let mut ws = Workspace::default();
    let mut grads = vec![0.0f32; params.len()];
    println!(
        "params {}, batch {b}, unmasked positions {:.0}%, single thread",
        params.len(),
        fill * 100.0
    );
    // Warm-up (sizes the workspace).
    net.forward_backward(&params, &batch, 0..b, &opts, &mut grads, &mut ws)?;
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        grads.fill(0.0);
        net.forward_backward(&params, &batch, 0..b, &opts, &mut grads, &mut ws)?;
    }
    let fb = (reps * b) as f64 / t.elapsed().as_secs_f64();
    let mut logits = vec![0.0f32; b * h];
    net.predict_with(&params, &batch, 0..b, &mut logits, &mut ws)?;
    let t = Instant::now();
    for _ in 0..reps {
        net.predict_with(&params, &batch, 0..b, &mut logits, &mut ws)?;
    }
    let pr = (reps * b) as f64 / t.elapsed().as_secs_f64();
    println!("forward+backward: {fb:.0} examples/s");
    println!("predict:          {pr:.0} examples/s");
    let threads: usize = args.get(3).map_or(Ok(0), |s| s.parse())?;
    if threads > 1 {
        let per = b.div_ceil(threads);
        let mut parts: Vec<(Vec<f32>, Workspace)> = (0..threads)
            .map(|_| (vec![0.0f32; params.len()], Workspace::default()))
            .collect();
        let run = |parts: &mut Vec<(Vec<f32>, Workspace)>| {
            std::thread::scope(|s| {
                for (t, (g, ws)) in parts.iter_mut().enumerate() {
                    let (net, params, batch, opts) = (&net, &params, &batch, &opts);
                    s.spawn(move || {
                        g.fill(0.0);
                        let r = (t * per).min(b)..((t + 1) * per).min(b);
                        net.forward_backward(params, batch, r, opts, g, ws)
                    });
                }
            });
        };
        run(&mut parts);
        let t = Instant::now();
        for _ in 0..reps {
            run(&mut parts);
        }
        let mt = (reps * b) as f64 / t.elapsed().as_secs_f64();
        println!(
            "forward+backward on {threads} threads: {mt:.0} examples/s (without summing gradients)"
        );
    }
    Ok(())
}
