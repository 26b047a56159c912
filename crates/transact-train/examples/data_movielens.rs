//! Random and popularity baselines under the SASRec protocol on a MovieLens
//! (or any importable) log: HR@10 and NDCG@10 with 100 seeded negatives.
//!
//! `cargo run --release -p transact-train --example data_movielens -- PATH [SEED]`

use std::path::PathBuf;
use transact_train::data::import::{ImportOptions, import_path};
use transact_train::eval::{PopularityScorer, RandomScorer, sasrec_eval, sasrec_split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: data_movielens PATH [SEED]")?);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(42);
    let (data, report) = import_path(&path, &ImportOptions::default())?;
    println!(
        "{}: {} users, {} items, {} actions ({:?})",
        path.display(),
        data.users.len(),
        data.items.count,
        report.actions,
        report.format
    );
    let split = sasrec_split(&data);
    let random = sasrec_eval(&data, &split, 100, seed, &RandomScorer::new(seed))?;
    let pop = PopularityScorer::from_split(&data, &split);
    let popular = sasrec_eval(&data, &split, 100, seed, &pop)?;
    for (name, m) in [("random", random), ("popularity", popular)] {
        println!(
            "{name:>10}: HR@10 {:.3}  NDCG@10 {:.3}  ({} users, {} short of negatives)",
            m.hr, m.ndcg, m.users, m.short_of_negatives
        );
    }
    Ok(())
}
