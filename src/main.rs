//! The `transact` command-line tool.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use transact::bench::{self, BenchResult, RankCase, StoreReadCase, V1Case, V2Case};
use transact::bench_lifelong::{GatherI8Case, InlineI8Case, LifelongReadCase, NnCase};
use transact::bench_v2::V2RankCase;
use transact::model::parity;

/// `println!` that exits quietly when stdout is closed (e.g. piped into `head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

mod demo;
mod demo_serve;
mod loadtest_cli;
mod serve_cli;
mod server_cli;
mod train_cli;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// TransAct: sequence-aware ranking — store, model, ranking API.
#[derive(Parser)]
#[command(name = "transact", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop on embedded defaults: world → store → train → evaluate → rank.
    Demo(demo::DemoArgs),
    /// Check the V1 forward against files recorded from the reference PyTorch module.
    Parity {
        /// Parity files (safetensors: state_dict, inputs, expected output, config).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Largest absolute difference accepted.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
    },
    /// Append a log (any format `train` reads, or `synthetic`) to an embedded store.
    Ingest(serve_cli::IngestArgs),
    /// Rank candidates with a trained bundle over a store: a request from flags, or JSON lines on stdin.
    Rank(serve_cli::RankArgs),
    /// The ranking server: POST /v1/rank and /v1/actions, health, readiness, metrics, hot reload (SIGHUP or POST /v1/admin/reload).
    Serve(server_cli::ServeArgs),
    /// Drive concurrent rank + append traffic against a server; latency percentiles, errors, a chart.
    Loadtest(loadtest_cli::LoadtestArgs),
    /// Train a model (synthetic world or an imported log), evaluate it, keep a run directory.
    Train(train_cli::TrainArgs),
    /// Evaluate a checkpoint, or a bundle through the serving path: HIT@3 per head, optionally HR@10 / NDCG@10.
    Eval(train_cli::EvalArgs),
    /// Train and evaluate the ablation side by side (baseline → TransAct → + NAL).
    Ablate(train_cli::AblateArgs),
    /// Run the benchmark cases.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The CPU cases: V1 forward, V2 block forward, 16k store read.
    Cpu {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Timed runs per case (after warm-up).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Run only the named case.
        #[arg(long)]
        case: Option<String>,
        /// Also write the median latency of every case as an SVG bar chart.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// The GPU paths on the chosen adapter (GEMM naive/tiled, V1 encode and score, V2 block variants, V2 nearest-neighbour selection fused/unfused), whole and per kernel, with CPU times.
    Kernels {
        /// Timed runs per case (after one warm-up).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Candidates per request (shrink it on a software adapter); a
        /// comma-separated list runs every case at each.
        #[arg(long, value_delimiter = ',', default_value = "256")]
        batch: Vec<usize>,
        /// Run only the case of this shape (gemm-qkv-s100-d96, v1-s100-d96, v2-s192-d64, nn-16k-d32-top96, v2-rank-b256-16k).
        #[arg(long)]
        shape: Option<String>,
        /// Also write the whole-path latencies, GPU beside CPU, by case and batch size, as an SVG bar chart.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Batching across requests: k users' requests ranked one call each against one `rank_many` call, on the CPU and on the GPU adapter (software ones included).
    Batch {
        /// Timed runs per row (after one warm-up).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Requests per batch, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        requests: Vec<usize>,
        /// Candidates per request, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8,100")]
        candidates: Vec<usize>,
        /// Only the CPU backend.
        #[arg(long)]
        cpu: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Structured logs on stderr; `RUST_LOG` filters them (default: info).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Ingest(args) => serve_cli::ingest_cmd(args),
        Command::Rank(args) => serve_cli::rank_cmd(args),
        Command::Serve(args) => server_cli::serve_cmd(args),
        Command::Loadtest(args) => loadtest_cli::loadtest_cmd(args),
        Command::Train(args) => train_cli::train(args),
        Command::Eval(args) => train_cli::eval(args),
        Command::Ablate(args) => train_cli::ablate_cmd(args),
        Command::Parity { files, tolerance } => run_parity(&files, tolerance),
        Command::Bench {
            what:
                BenchWhat::Cpu {
                    json,
                    runs,
                    case,
                    svg,
                },
        } => bench_cpu(json, runs, case.as_deref(), svg.as_deref()),
        Command::Bench {
            what:
                BenchWhat::Kernels {
                    runs,
                    json,
                    batch,
                    shape,
                    svg,
                },
        } => bench_kernels(json, runs, &batch, shape.as_deref(), svg.as_deref()),
        Command::Bench {
            what:
                BenchWhat::Batch {
                    runs,
                    requests,
                    candidates,
                    cpu,
                    json,
                },
        } => bench_batch(runs, &requests, &candidates, cpu, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let top = e.to_string();
            eprintln!("error: {top}");
            let mut source = e.source();
            while let Some(s) = source {
                let text = s.to_string();
                if !top.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = s.source();
            }
            ExitCode::from(2)
        }
    }
}

fn run_parity(files: &[PathBuf], tolerance: f32) -> Result<ExitCode> {
    let mut worst = 0.0f32;
    for file in files {
        let report = parity::check_parity_file(file)?;
        say!(
            "{}: B={} width {}, masked rows {:?} (as the reference did for this batch): \
             max |diff| {:.3e} (reference path), {} (de-duplicated path), worst at flat index {}",
            file.display(),
            report.batch,
            report.out_dim,
            report.masked_rows,
            report.max_abs_diff,
            report
                .max_abs_diff_fast
                .map_or("not comparable".to_string(), |d| format!("{d:.3e}")),
            report.worst_index
        );
        worst = worst.max(report.max_abs_diff);
        if let Some(fast) = report.max_abs_diff_fast {
            worst = worst.max(fast);
        }
    }
    say!("largest absolute difference: {worst:e} (tolerance {tolerance:e})");
    Ok(if worst <= tolerance {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn bench_batch(
    runs: usize,
    requests: &[usize],
    candidates: &[usize],
    cpu_only: bool,
    json: bool,
) -> Result<ExitCode> {
    if requests.contains(&0) || candidates.contains(&0) {
        return Err("--requests and --candidates must be at least 1".into());
    }
    let case = transact::bench_batch::BatchCase::new()?;
    let mut backends: Vec<Box<dyn transact::rank::Backend>> =
        vec![Box::new(transact::rank::CpuBackend)];
    if !cpu_only {
        match transact::backend::GpuBackend::new(case.model().clone()) {
            Ok(gpu) => backends.push(Box::new(gpu)),
            Err(e) => say!("no GPU backend ({e}); the CPU only"),
        }
    }
    if !json {
        say!(
            "| backend | requests | candidates each | one call each, ms | one call for all, ms | speed-up |"
        );
        say!("|---|---|---|---|---|---|");
    }
    for backend in backends {
        for row in case.measure(backend, requests, candidates, runs)? {
            if json {
                say!("{}", serde_json::to_string(&row)?);
            } else {
                say!(
                    "| {} | {} | {} | {:.2} | {:.2} | {:.2}× |",
                    row.backend,
                    row.requests,
                    row.candidates,
                    row.alone_ms,
                    row.batched_ms,
                    row.alone_ms / row.batched_ms
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_kernels(
    json: bool,
    runs: usize,
    batches: &[usize],
    shape: Option<&str>,
    svg: Option<&std::path::Path>,
) -> Result<ExitCode> {
    if batches.is_empty() || batches.contains(&0) {
        return Err("--batch must be at least 1".into());
    }
    let ctx = Arc::new(transact::gpu::GpuContext::new_from_env()?);
    let mut all = Vec::new();
    for &batch in batches {
        let results = transact::bench_gpu::run_kernels(&ctx, batch, runs, shape)
            .map_err(|e| -> Box<dyn Error> { e })?;
        if json {
            for r in &results {
                say!("{}", serde_json::to_string(r)?);
            }
        } else {
            print_kernels(&ctx, batch, runs, &results);
        }
        all.extend(results);
    }
    if let Some(path) = svg {
        let whole: Vec<_> = all.iter().filter(|r| r.kernel.is_empty()).collect();
        let cats: Vec<String> = whole
            .iter()
            .map(|r| format!("{} {} B{}", r.shape, r.variant, r.batch))
            .collect();
        let gpu: Vec<f64> = whole.iter().map(|r| r.median_ms).collect();
        let cpu: Vec<f64> = whole
            .iter()
            .map(|r| r.cpu_median_ms.unwrap_or(f64::NAN))
            .collect();
        let gpu_name = format!("gpu: {}", ctx.adapter_name());
        transact::train::plot::write_bars_svg(
            path,
            "whole-path latency by case, batch size and backend",
            "ms (median)",
            &cats,
            &[(gpu_name.as_str(), &gpu), ("cpu", &cpu)],
        )?;
        if !json {
            say!("chart: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_kernels(
    ctx: &transact::gpu::GpuContext,
    batch: usize,
    runs: usize,
    results: &[transact::bench_gpu::KernelResult],
) {
    say!(
        "adapter: {} (f16 {}, timestamps {})",
        ctx.adapter_name(),
        ctx.has_f16(),
        ctx.has_timestamps()
    );
    say!(
        "B = {batch}, median of {} runs after 1 warm-up; per kernel: each dispatch in its own \
         timed compute pass",
        runs.max(1)
    );
    let mut shape = "";
    for r in results {
        if r.shape != shape {
            shape = &r.shape;
            say!("");
            say!(
                "{}",
                match shape {
                    "v1-s100-d96" => "V1: S 100, d 96, L 2, h 2, K 10",
                    "v2-s192-d64" => "V2 blocks: S 192, d 64, FFN 32, L 2, causal",
                    "nn-16k-d32-top96" =>
                        "V2 NN selection: 16,384 int8 tokens × 32, B candidates, top 96",
                    "v2-rank-b256-16k" =>
                        "V2 request, B 256: 16k lifelong + realtime + impressions, \
                         S 192, d 64, L 2 (selection on the CPU)",
                    _ => "GEMM of V1's input projection: M = B·100, N 288, K 96",
                }
            );
            say!(
                "  {:<18} {:<44} {:>5} {:>11} {:>6} {:>6} {:>11} {:>9}",
                "variant",
                "kernel",
                "disp",
                "gpu ms",
                "share",
                "clock",
                "cpu ms",
                "cpu/gpu"
            );
        }
        if r.kernel.is_empty() {
            let (cpu, ratio) = match r.cpu_median_ms {
                Some(c) => (format!("{c:.3}"), format!("{:.2}x", c / r.median_ms)),
                None => (String::new(), String::new()),
            };
            say!(
                "  {:<18} {:<44} {:>5} {:>11.3} {:>6} {:>6} {:>11} {:>9}",
                r.variant,
                "(whole path)",
                r.dispatches,
                r.median_ms,
                "",
                r.clock,
                cpu,
                ratio
            );
        } else {
            let total = results
                .iter()
                .find(|t| t.shape == r.shape && t.variant == r.variant && t.kernel.is_empty())
                .map_or(0.0, |t| t.median_ms);
            let share = if total > 0.0 {
                format!("{:.0}%", 100.0 * r.median_ms / total)
            } else {
                String::new()
            };
            say!(
                "  {:<18} {:<44} {:>5} {:>11.3} {:>6} {:>6}",
                "",
                r.kernel,
                r.dispatches,
                r.median_ms,
                share,
                r.clock
            );
        }
    }
}

fn bench_cpu(
    json: bool,
    runs: usize,
    only: Option<&str>,
    svg: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let threads = rayon::current_num_threads();
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    // A model case: B candidates per run.
    let model_result = |name: &str, ms: f64| BenchResult {
        case: name.into(),
        median_ms: round3(ms),
        candidates_per_s: Some((bench::BATCH as f64 / (ms / 1e3)).round()),
        actions_per_s: None,
        runs,
        threads,
    };
    let mut results = Vec::new();
    if wanted(V1Case::NAME) {
        let mut case = V1Case::new()?;
        let ms = bench::median_ms(runs, 3, || case.run())?;
        results.push(model_result(V1Case::NAME, ms));
    }
    if wanted(RankCase::NAME) || wanted(RankCase::SCORE_NAME) {
        let mut case = RankCase::new()?;
        if wanted(RankCase::SCORE_NAME) {
            let mut score = case.score_only();
            let ms = bench::median_ms(runs, 3, &mut score)?;
            results.push(model_result(RankCase::SCORE_NAME, ms));
        }
        if wanted(RankCase::NAME) {
            let ms = bench::median_ms(runs, 3, || case.run())?;
            results.push(model_result(RankCase::NAME, ms));
        }
    }
    if wanted(V2Case::NAME) {
        let mut case = V2Case::new()?;
        let ms = bench::median_ms(runs, 3, || case.run())?;
        results.push(model_result(V2Case::NAME, ms));
    }
    if [
        V2RankCase::NAME,
        V2RankCase::SELECT_NAME,
        V2RankCase::SCORE_NAME,
    ]
    .iter()
    .any(|n| wanted(n))
    {
        let mut case = V2RankCase::new()?;
        {
            let mut stages = case.stages()?;
            if wanted(V2RankCase::SELECT_NAME) {
                let ms = bench::median_ms(runs, 3, || stages.select())?;
                results.push(model_result(V2RankCase::SELECT_NAME, ms));
            }
            if wanted(V2RankCase::SCORE_NAME) {
                let ms = bench::median_ms(runs, 3, || stages.score())?;
                results.push(model_result(V2RankCase::SCORE_NAME, ms));
            }
        }
        if wanted(V2RankCase::NAME) {
            let ms = bench::median_ms(runs, 3, || case.run())?;
            results.push(model_result(V2RankCase::NAME, ms));
        }
    }
    if wanted(NnCase::NAME) {
        let mut case = NnCase::new();
        eprintln!("{}: selection path {:?}", NnCase::NAME, case.isa());
        let ms = bench::median_ms(runs, 3, || case.run())?;
        results.push(model_result(NnCase::NAME, ms));
    }
    if wanted(StoreReadCase::NAME) {
        let mut case = StoreReadCase::new()?;
        let ms = bench::median_ms(runs.max(200), 20, || case.run().map(|_| ()))?;
        results.push(BenchResult {
            case: StoreReadCase::NAME.into(),
            median_ms: (ms * 1e6).round() / 1e6,
            candidates_per_s: None,
            actions_per_s: Some((StoreReadCase::LEN as f64 / (ms / 1e3)).round()),
            runs: runs.max(200),
            threads,
        });
    }
    // A read case: `len` actions (or tokens, or rows) per run.
    let read_result = |name: &str, ms: f64, len: usize, runs: usize| BenchResult {
        case: name.into(),
        median_ms: (ms * 1e6).round() / 1e6,
        candidates_per_s: None,
        actions_per_s: Some((len as f64 / (ms / 1e3)).round()),
        runs,
        threads,
    };
    if wanted(LifelongReadCase::NAME) {
        let mut case = LifelongReadCase::new()?;
        let runs = runs.max(200);
        let ms = bench::median_ms(runs, 20, || case.run().map(|_| ()))?;
        let s = case.sequences();
        let len = s.lifelong.len() + s.realtime.len() + s.impressions.len();
        results.push(read_result(LifelongReadCase::NAME, ms, len, runs));
    }
    if wanted(GatherI8Case::NAME) {
        let mut case = GatherI8Case::new()?;
        let runs = runs.max(200);
        let ms = bench::median_ms(runs, 20, || case.run().map(|_| ()))?;
        results.push(read_result(GatherI8Case::NAME, ms, GatherI8Case::LEN, runs));
    }
    if wanted(InlineI8Case::NAME) {
        let mut case = InlineI8Case::new();
        let runs = runs.max(200);
        let ms = bench::median_ms(runs, 20, || {
            std::hint::black_box(case.run());
            Ok::<(), std::convert::Infallible>(())
        })?;
        results.push(read_result(InlineI8Case::NAME, ms, InlineI8Case::LEN, runs));
    }
    if results.is_empty() {
        return Err(format!("no benchmark case named {:?}", only.unwrap_or_default()).into());
    }
    for r in &results {
        if json {
            say!("{}", serde_json::to_string(r)?);
        } else {
            say!(
                "{:<16} median {:>9.3} ms  {}",
                r.case,
                r.median_ms,
                match (r.candidates_per_s, r.actions_per_s) {
                    (Some(c), _) => format!("{c:.0} candidates/s"),
                    (_, Some(a)) => format!("{a:.0} actions/s"),
                    _ => String::new(),
                }
            );
        }
    }
    if let Some(path) = svg {
        let cats: Vec<String> = results.iter().map(|r| r.case.clone()).collect();
        let ms: Vec<f64> = results.iter().map(|r| r.median_ms).collect();
        transact::train::plot::write_bars_svg(
            path,
            &format!("CPU cases, {threads} threads"),
            "ms (median)",
            &cats,
            &[("cpu", &ms)],
        )?;
        if !json {
            say!("chart: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
