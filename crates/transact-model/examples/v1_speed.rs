//! Times the de-duplicated V1 forward on the benchmark shape: one request of
//! B = 256 candidates against a full, unmasked sequence of S = 100 actions,
//! with the reference dimensions (d = 96, L = 2, h = 2, K = 10).
//!
//! ```text
//! cargo run --release -p transact-model --example v1_speed [-- B S runs]
//! ```
//!
//! Prints the median and the spread over the timed runs (after warm-up).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_model::{ModelError, TransActV1, V1Config, V1Request};

fn main() -> Result<(), ModelError> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let b = args.first().copied().unwrap_or(256);
    let s = args.get(1).copied().unwrap_or(100);
    let runs = args.get(2).copied().unwrap_or(20);
    let cfg = V1Config {
        seq_len: s,
        ..V1Config::default()
    };
    let di = cfg.item_emb_dim;
    let model = TransActV1::new_random(cfg.clone(), 1)?;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let ids: Vec<i64> = (0..s).map(|_| rng.random_range(1..20)).collect();
    let items: Vec<f32> = (0..s * di).map(|_| rng.random_range(-1.0..1.0)).collect();
    let now = 1_700_000_000_000i64;
    let times: Vec<i64> = (0..s as i64).map(|i| now - 1_000 * (i + 1)).collect();
    let cands: Vec<f32> = (0..b * di).map(|_| rng.random_range(-1.0..1.0)).collect();
    let req = V1Request {
        action_types: &ids,
        item_embeddings: &items,
        action_times_ms: &times,
        request_time_ms: now,
        candidates: &cands,
    };
    let mut out = vec![0.0f32; b * model.output_dim()];
    for _ in 0..5 {
        model.forward_request(&req, &mut out)?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        model.forward_request(&req, &mut out)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!(
        "V1 forward_request B={b} S={s} d={} L={} h={} K={} threads={}: median {median:.2} ms \
         (min {:.2}, max {:.2}, {runs} runs); {:.0} candidates/s",
        cfg.d_model(),
        cfg.num_layer,
        cfg.nhead,
        cfg.latest_n_emb,
        rayon::current_num_threads(),
        ms[0],
        ms[ms.len() - 1],
        b as f64 / median * 1e3,
    );
    Ok(())
}
