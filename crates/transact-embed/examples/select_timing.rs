//! Times `select_nearest_i8` on the `nn-16k-x256-top96` shape: min and
//! median over many runs, on 1 and 2 threads, for each path this CPU has;
//! on 1 thread also the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`,
//! Linux), which other load on the machine inflates much less than wall
//! time.
//! `cargo run --release -p transact-embed --example select_timing [runs]`
use std::time::Instant;

use transact_embed::select::{SelectIsa, SelectScratch, select_nearest_i8};

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let (n, b, dim, k) = (16_384, 256, 32, 96);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut code = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x % 255) as i64 - 127) as i8
    };
    let history: Vec<i8> = (0..n * dim).map(|_| code()).collect();
    let cands: Vec<i8> = (0..b * dim).map(|_| code()).collect();
    let scales = vec![0.65f32; n];
    let mut out = vec![0u32; b * k];
    let isas: Vec<SelectIsa> = match std::env::var("ISA") {
        Ok(v) => v.split(',').filter_map(SelectIsa::from_name).collect(),
        Err(_) => vec![SelectIsa::Avx512Vnni, SelectIsa::Avx2],
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        for &isa in &isas {
            let mut scratch = SelectScratch::with_isa(isa);
            let mut t = Vec::with_capacity(runs);
            let mut cpu = Vec::with_capacity(runs);
            pool.install(|| {
                for _ in 0..3 {
                    select_nearest_i8(&history, &scales, &cands, dim, k, &mut scratch, &mut out)
                        .expect("select");
                }
                for _ in 0..runs {
                    let c = on_cpu_ns();
                    let s = Instant::now();
                    select_nearest_i8(&history, &scales, &cands, dim, k, &mut scratch, &mut out)
                        .expect("select");
                    t.push(s.elapsed().as_secs_f64() * 1e3);
                    if let (Some(a), Some(b)) = (c, on_cpu_ns()) {
                        cpu.push((b - a) as f64 / 1e6);
                    }
                }
            });
            t.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            let on_cpu = if threads == 1 && !cpu.is_empty() {
                format!(
                    "  on-CPU min {:.3} median {:.3} ms",
                    cpu[0],
                    cpu[cpu.len() / 2]
                )
            } else {
                String::new()
            };
            println!(
                "threads {threads} {:?}: wall min {:.3} median {:.3} ms{on_cpu}",
                scratch.isa(),
                t[0],
                t[t.len() / 2]
            );
        }
    }
}

/// Nanoseconds of CPU time this thread has used.
#[cfg(target_os = "linux")]
fn on_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn on_cpu_ns() -> Option<u64> {
    None
}
