// One-head attention with an online ("flash") softmax over key tiles, for
// a batch of padded sequences:
//
//   out[b, t] = softmax_j(q[b, t] · key[b, j] + mask) · v[b, j]
//
// where keys j ≥ n = max(lens[b], 1) are masked (padding), and with CAUSAL
// also keys j > t. Rows t ≥ n are written as zeros. The score scale is
// folded into q by the caller. An empty sequence (len 0) is computed as a
// one-token sequence, as the CPU model does.
//
// Layout: key rows are [B·S × D] (row stride D); q and v are read from a
// row-major buffer with row stride `qv_ld` at column offsets `q_off` and
// `v_off` (the V2 block computes [x·A | x·Wv] with one GEMM).
//
// One workgroup = 64 query rows of one sequence, one thread per query row.
// Key and value rows go through workgroup memory 16 at a time; each thread
// keeps its running maximum, denominator and D accumulators, rescaling
// them once per key tile. Buffers hold `st` (alias prepended by the host).

struct Params {
    seq: u32,
    qv_ld: u32,
    q_off: u32,
    v_off: u32,
}

// Model width (at most MAX_D).
override D: u32 = 64u;
// Mask keys after the query (attend to the past and itself only).
override CAUSAL: bool = false;

const MAX_D: u32 = 128u;
const ROWS: u32 = 64u;
const KT: u32 = 16u;
// A finite "minus infinity": exp(NEG - m) is exactly 0 for any real score.
const NEG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> keys: array<st>;
@group(0) @binding(2) var<storage, read> qv: array<st>;
@group(0) @binding(3) var<storage, read> lens: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<st>;

var<workgroup> k_tile: array<f32, 2048>;
var<workgroup> v_tile: array<f32, 2048>;

@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.y;
    let t = wid.x * ROWS + lid.x;
    let n = max(lens[b], 1u);
    let seq_base = b * p.seq;
    let live = t < n;
    // Keys this workgroup needs: all valid ones, or up to its last row.
    var kend = n;
    if (CAUSAL) {
        kend = min(n, wid.x * ROWS + ROWS);
    }
    // Keys this thread attends to.
    var lim = n;
    if (CAUSAL) {
        lim = min(n, t + 1u);
    }
    var q: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    if (live) {
        let qb = (seq_base + t) * p.qv_ld + p.q_off;
        for (var c = 0u; c < D; c++) {
            q[c] = f32(qv[qb + c]);
            acc[c] = 0.0;
        }
    }
    var m = NEG;
    var l = 0.0;
    for (var j0 = 0u; j0 < kend; j0 += KT) {
        for (var e = lid.x; e < KT * D; e += ROWS) {
            let r = e / D;
            let c = e % D;
            let j = j0 + r;
            var kv = 0.0;
            var vv = 0.0;
            if (j < kend) {
                kv = f32(keys[(seq_base + j) * D + c]);
                vv = f32(qv[(seq_base + j) * p.qv_ld + p.v_off + c]);
            }
            k_tile[e] = kv;
            v_tile[e] = vv;
        }
        workgroupBarrier();
        if (live && j0 < lim) {
            let cnt = min(KT, lim - j0);
            var s: array<f32, KT>;
            var mx = m;
            for (var r = 0u; r < cnt; r++) {
                var dot = 0.0;
                for (var c = 0u; c < D; c++) {
                    dot = fma(q[c], k_tile[r * D + c], dot);
                }
                s[r] = dot;
                mx = max(mx, dot);
            }
            let scale = exp(m - mx);
            l *= scale;
            for (var c = 0u; c < D; c++) {
                acc[c] *= scale;
            }
            for (var r = 0u; r < cnt; r++) {
                let pr = exp(s[r] - mx);
                l += pr;
                for (var c = 0u; c < D; c++) {
                    acc[c] = fma(pr, v_tile[r * D + c], acc[c]);
                }
            }
            m = mx;
        }
        workgroupBarrier();
    }
    if (t < p.seq) {
        let ob = (seq_base + t) * D;
        if (live) {
            let inv = 1.0 / l;
            for (var c = 0u; c < D; c++) {
                out[ob + c] = st(acc[c] * inv);
            }
        } else {
            for (var c = 0u; c < D; c++) {
                out[ob + c] = st(0.0);
            }
        }
    }
}
