//! A stable-toolchain fuzz driver: a blind mutation loop over a target's
//! corpus (no coverage feedback — `cargo fuzz` with libFuzzer does that on
//! nightly; see `docs/fuzzing.md`).
//!
//! ```text
//! transact-fuzz <target> --seconds N [--corpus DIR] [--artifacts DIR]
//!               [--seed S] [--max-len BYTES] [--max-alloc-mb MB] [--timeout-s S]
//! transact-fuzz list
//! transact-fuzz seed-corpus [--out DIR]
//! transact-fuzz replay <target> FILE...
//! ```
//!
//! Each execution mutates a corpus input (bit flips, byte insert / delete /
//! duplicate, splices of two inputs, interesting integers, ASCII numbers)
//! and calls the target under [`std::panic::catch_unwind`]. A panicking
//! input is saved to `fuzz/artifacts/<target>/crash-<hash>` with its
//! message and backtrace beside it (`.txt`); the first few per panic
//! location are kept. The input in flight is also written to
//! `<artifacts>/in-flight` before each execution, so an abort the driver
//! cannot catch (a single allocation over `--max-alloc-mb`, which this
//! driver's allocator turns into a report and an abort; an execution over
//! `--timeout-s`, which the watchdog aborts; the OS killing it) leaves the
//! input behind. It prints executions, seconds and panics found.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Largest single allocation allowed (bytes); `usize::MAX` = no limit.
static ALLOC_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Set while reporting an over-limit allocation (the report allocates).
static REPORTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, refusing (with a report and an abort) any single
/// allocation above [`ALLOC_LIMIT`], as libFuzzer's `-malloc_limit_mb`.
struct LimitedAlloc;

impl LimitedAlloc {
    fn check(size: usize) {
        if size > ALLOC_LIMIT.load(Ordering::Relaxed) && !REPORTING.swap(true, Ordering::SeqCst) {
            let bt = std::backtrace::Backtrace::force_capture();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "==transact-fuzz== single allocation of {size} bytes exceeds --max-alloc-mb; \
                 the input is in <artifacts>/in-flight\n{bt}"
            );
            std::process::abort();
        }
    }
}

// SAFETY: forwards every call to `System` unchanged; `check` only reads an
// atomic and, over the limit, reports and aborts.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: LimitedAlloc = LimitedAlloc;

const USAGE: &str = "usage:
  transact-fuzz <target> --seconds N [--corpus DIR] [--artifacts DIR] [--seed S]
                [--max-len BYTES] [--max-alloc-mb MB] [--timeout-s S]
  transact-fuzz list
  transact-fuzz seed-corpus [--out DIR]
  transact-fuzz replay <target> FILE...";

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Options {
    target: String,
    seconds: f64,
    corpus: PathBuf,
    artifacts: PathBuf,
    seed: u64,
    max_len: usize,
    max_alloc_mb: usize,
    timeout_s: u64,
}

fn parse_options(target: String, args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        corpus: repo_root().join("fuzz/corpus").join(&target),
        artifacts: repo_root().join("fuzz/artifacts").join(&target),
        target,
        seconds: 60.0,
        seed: 0,
        max_len: 64 << 10,
        max_alloc_mb: 1024,
        timeout_s: 20,
    };
    let mut seed_given = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--seconds" => {
                let v = value()?;
                o.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: `{v}` is not a number"))?;
            }
            "--corpus" => o.corpus = PathBuf::from(value()?),
            "--artifacts" => o.artifacts = PathBuf::from(value()?),
            "--seed" => {
                o.seed = num(value()?)?;
                seed_given = true;
            }
            "--max-len" => o.max_len = num(value()?)? as usize,
            "--max-alloc-mb" => o.max_alloc_mb = num(value()?)? as usize,
            "--timeout-s" => o.timeout_s = num(value()?)?,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if !seed_given {
        o.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        Some("list") => {
            for (name, _) in transact_fuzz::TARGETS {
                println!("{name}");
            }
            0
        }
        Some("seed-corpus") => seed_corpus(&args[1..]),
        Some("replay") => replay(&args[1..]),
        Some(name) => match transact_fuzz::target(name) {
            None => {
                eprintln!("unknown target `{name}` (`transact-fuzz list` lists them)\n{USAGE}");
                2
            }
            Some(t) => match parse_options(name.to_string(), &args[1..]) {
                Ok(o) => fuzz(t, &o),
                Err(e) => {
                    eprintln!("{e}\n{USAGE}");
                    2
                }
            },
        },
    };
    std::process::exit(code);
}

fn seed_corpus(args: &[String]) -> i32 {
    let out = match args {
        [] => repo_root().join("fuzz/corpus"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    for (name, _) in transact_fuzz::TARGETS {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        let seeds = transact_fuzz::seeds::seeds(name);
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        for (file, data) in &seeds {
            std::fs::write(dir.join(file), data).expect("write a corpus file");
        }
        println!("{name}: {} seeds, {bytes} bytes", seeds.len());
    }
    0
}

fn replay(args: &[String]) -> i32 {
    let Some((name, files)) = args.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let Some(t) = transact_fuzz::target(name) else {
        eprintln!("unknown target `{name}`");
        return 2;
    };
    // As the fuzz loop: a single allocation over 1 GiB is reported, then aborts.
    ALLOC_LIMIT.store(1 << 30, Ordering::SeqCst);
    let mut failed = 0;
    for f in files {
        let data = std::fs::read(f).expect("read the input");
        let start = Instant::now();
        let ok = panic::catch_unwind(|| t(&data)).is_ok();
        let secs = start.elapsed().as_secs_f64();
        if ok {
            println!("{f}: ok in {secs:.3} s");
        } else {
            failed += 1;
            println!("{f}: PANIC after {secs:.3} s");
        }
    }
    i32::from(failed > 0)
}

/// What the panic hook saw last (message and location, backtrace).
#[derive(Default)]
struct PanicInfo {
    location: String,
    report: String,
}

std::thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<PanicInfo>> = const { std::cell::RefCell::new(None) };
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Interesting values, written little-endian (and a few big-endian, as
/// MessagePack and Parquet's Thrift lengths are).
const INTERESTING: [u64; 16] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    (64 << 20) + 1,
    1 << 40,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// ASCII tokens for the text formats.
const TOKENS: [&str; 18] = [
    "0",
    "-1",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "-0.0",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "4294967295",
    ",",
    "::",
    "\t",
    "\n",
    "\"\"",
    "[[[[[[[[[[[[[[[[",
];

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    let rounds = 1 + rng.random_range(0..4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.random_range(0..11) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = 1 + rng.random_range(0..8);
                for _ in 0..n {
                    input.insert(i, rng.random());
                }
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = 1 + rng.random_range(0..(len - i).min(64));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = 1 + rng.random_range(0..(len - i).min(256));
                let chunk = input[i..i + n].to_vec();
                let at = rng.random_range(0..=len);
                input.splice(at..at, chunk);
            }
            5 if !corpus.is_empty() => {
                // Splice: a prefix of this input, a suffix of another.
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 | 7 if len > 0 => {
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)].min(len);
                let i = rng.random_range(0..=len - width);
                let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
                let bytes = if rng.random_bool(0.8) {
                    &le[..width]
                } else {
                    &be[8 - width..]
                };
                input[i..i + width].copy_from_slice(bytes);
            }
            8 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                let i = rng.random_range(0..=len);
                if rng.random_bool(0.5) || len == 0 {
                    input.splice(i..i, t.iter().copied());
                } else {
                    // Replace a run of digits / letters at `i` with the token.
                    let j = (i..len)
                        .find(|&j| !input[j].is_ascii_alphanumeric() && input[j] != b'.')
                        .unwrap_or(len);
                    input.splice(i..j.max(i), t.iter().copied());
                }
            }
            9 if len > 0 => {
                input.truncate(rng.random_range(0..len));
            }
            _ => {
                if len > 0 {
                    let i = rng.random_range(0..len);
                    input[i] = input[i].wrapping_add(rng.random_range(1..=16));
                }
            }
        }
    }
    input.truncate(max_len);
}

fn fuzz(target: transact_fuzz::Target, o: &Options) -> i32 {
    let mut corpus = load_corpus(&o.corpus);
    if corpus.is_empty() {
        eprintln!(
            "warning: corpus {} is empty; starting from an empty input",
            o.corpus.display()
        );
        corpus.push(Vec::new());
    }
    std::fs::create_dir_all(&o.artifacts).expect("create the artifacts directory");
    let in_flight = o.artifacts.join("in-flight");

    // Build the fixtures before the clock and the allocation limit start.
    target(&corpus[0]);
    ALLOC_LIMIT.store(o.max_alloc_mb.saturating_mul(1 << 20), Ordering::SeqCst);

    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(|| "?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let bt = std::backtrace::Backtrace::force_capture();
        let report = format!("panicked at {location}: {message}\n{bt}");
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(PanicInfo { location, report }));
    }));

    // Watchdog: abort an execution running longer than the timeout.
    let started_ms = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    {
        let started_ms = Arc::clone(&started_ms);
        let timeout_ms = o.timeout_s.saturating_mul(1000);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let s = started_ms.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if s != 0 && now.saturating_sub(s) > timeout_ms {
                    eprintln!(
                        "==transact-fuzz== an execution ran over {timeout_ms} ms; \
                         the input is in <artifacts>/in-flight"
                    );
                    std::process::abort();
                }
            }
        });
    }

    let mut rng = StdRng::seed_from_u64(o.seed);
    let start = Instant::now();
    let budget = Duration::from_secs_f64(o.seconds.max(0.0));
    let mut execs: u64 = 0;
    let mut panics: u64 = 0;
    let mut by_location: HashMap<String, u64> = HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut next_status = Duration::from_secs(10);
    let mut input = Vec::new();
    println!(
        "fuzzing {} for {} s from {} inputs ({}), seed {}, max-len {}, max-alloc {} MB",
        o.target,
        o.seconds,
        corpus.len(),
        o.corpus.display(),
        o.seed,
        o.max_len,
        o.max_alloc_mb
    );
    while start.elapsed() < budget {
        input.clear();
        input.extend_from_slice(&corpus[rng.random_range(0..corpus.len())]);
        mutate(&mut rng, &mut input, &corpus, o.max_len);
        let _ = std::fs::write(&in_flight, &input);
        let t0 = Instant::now();
        started_ms.store(epoch.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        let result = panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
        started_ms.store(0, Ordering::Relaxed);
        slowest = slowest.max(t0.elapsed());
        execs += 1;
        if result.is_err() {
            panics += 1;
            let info = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            let seen = by_location.entry(info.location.clone()).or_insert(0);
            *seen += 1;
            if *seen <= 3 {
                let name = format!("crash-{:016x}", fnv(&input));
                let path = o.artifacts.join(&name);
                let _ = std::fs::write(&path, &input);
                let _ = std::fs::write(o.artifacts.join(format!("{name}.txt")), &info.report);
                println!(
                    "PANIC at {} -> {}\n{}",
                    info.location,
                    path.display(),
                    info.report.lines().next().unwrap_or("")
                );
            }
        }
        if start.elapsed() >= next_status {
            println!(
                "  {:>5.0} s: {execs} execs ({:.0}/s), {panics} panics",
                start.elapsed().as_secs_f64(),
                execs as f64 / start.elapsed().as_secs_f64()
            );
            next_status += Duration::from_secs(10);
        }
    }
    let _ = std::fs::remove_file(&in_flight);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: target {} seconds {:.1} execs {} ({:.0}/s) panics {} distinct {} slowest {:.1} ms",
        o.target,
        secs,
        execs,
        execs as f64 / secs,
        panics,
        by_location.len(),
        slowest.as_secs_f64() * 1e3
    );
    for (loc, n) in &by_location {
        println!("  {n} panics at {loc}");
    }
    if panics > 0 { 1 } else { 0 }
}
