// One whole TransAct V2 encoder block in one dispatch (in the spirit of
// Pinterest's SKUT kernel):
//
//   x1 = LN(x + softmax(x A xᵀ + M_pad + M_causal) x Wv)     A = Wq Wkᵀ/√d
//   y  = LN(x1 + relu(x1 W1) W2)
//
// LayerNorm has no gain or bias. One workgroup = 64 query rows of one
// sequence, one thread per row. The block's weights [A | Wv | W1 | W2] are
// read from workgroup memory: the kernel runs in four phases (query
// projection, attention, value projection + LayerNorm, FFN + LayerNorm),
// and before each one the workgroup copies the weights that phase needs
// (A, then Wv, then W1 and W2) into one shared region of
// max(D², 2·D·F) values, so every weight is loaded once per workgroup and
// the region fits in 32 KiB for D = 64, F = 32.
//
// Attention uses (P x) Wv = P (x Wv): the keys and the values are both the
// raw input rows, staged 16 at a time in workgroup memory, so no projected
// keys or values are ever written to memory; the thread's softmax runs
// online (running max and denominator, rescaled once per key tile), and
// the D-wide average is multiplied by Wv at the end. The FFN never stores
// its hidden layer: each hidden unit is computed, rectified and folded into
// the output at once.
//
// Padding: keys j ≥ n = max(lens[b], 1) are masked (a len-0 sequence keeps
// its token 0, as the CPU model does), rows t ≥ n are written as zeros.
// Input and output must be different buffers (other workgroups read the
// input rows as keys). Buffers hold `st` (alias prepended by the host);
// math is f32.

struct Params {
    seq: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    eps: f32,
    _pad3: f32,
    _pad4: f32,
    _pad5: f32,
}

// Model width (at most MAX_D) and FFN width.
override D: u32 = 64u;
override F: u32 = 32u;
override CAUSAL: bool = false;
// Length of the shared weight region, max(D·D, 2·D·F) (set by the host).
override W_LEN: u32 = 4096u;
// Length of the key tile, KT·D (set by the host).
override KT_LEN: u32 = 1024u;

const MAX_D: u32 = 128u;
const ROWS: u32 = 64u;
const KT: u32 = 16u;
const NEG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> weights: array<st>;
@group(0) @binding(3) var<storage, read> lens: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<st>;

var<workgroup> w: array<f32, W_LEN>;
var<workgroup> k_tile: array<f32, KT_LEN>;

// In-place LayerNorm of the first D values of `v` (two passes).
fn layer_norm(v: ptr<function, array<f32, MAX_D>>) {
    var sum = 0.0;
    for (var c = 0u; c < D; c++) {
        sum += (*v)[c];
    }
    let mean = sum / f32(D);
    var sq = 0.0;
    for (var c = 0u; c < D; c++) {
        let t = (*v)[c] - mean;
        sq += t * t;
    }
    let rstd = inverseSqrt(sq / f32(D) + p.eps);
    for (var c = 0u; c < D; c++) {
        (*v)[c] = ((*v)[c] - mean) * rstd;
    }
}

// Copies `len` weights starting at `off` into `w` (all threads take part).
fn load_weights(lid: u32, off: u32, len: u32) {
    for (var e = lid; e < len; e += ROWS) {
        w[e] = f32(weights[off + e]);
    }
}

@compute @workgroup_size(64, 1, 1)
fn v2_block(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.y;
    let t = wid.x * ROWS + lid.x;
    let n = max(lens[b], 1u);
    let base = b * p.seq;
    let live = t < n;
    var kend = n;
    if (CAUSAL) {
        kend = min(n, wid.x * ROWS + ROWS);
    }
    var lim = n;
    if (CAUSAL) {
        lim = min(n, t + 1u);
    }

    // Phase 1: q = x_t A (the score scale is folded into A).
    load_weights(lid.x, 0u, D * D);
    workgroupBarrier();
    var q: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    if (live) {
        for (var c = 0u; c < D; c++) {
            q[c] = 0.0;
            acc[c] = 0.0;
        }
        for (var k = 0u; k < D; k++) {
            let xv = f32(x[(base + t) * D + k]);
            for (var c = 0u; c < D; c++) {
                q[c] = fma(xv, w[k * D + c], q[c]);
            }
        }
    }
    workgroupBarrier();

    // Phase 2: online softmax over key tiles; keys and values are both the
    // input rows.
    var m = NEG;
    var l = 0.0;
    for (var j0 = 0u; j0 < kend; j0 += KT) {
        for (var e = lid.x; e < KT_LEN; e += ROWS) {
            let j = j0 + e / D;
            var kv = 0.0;
            if (j < kend) {
                kv = f32(x[(base + j) * D + e % D]);
            }
            k_tile[e] = kv;
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
                    acc[c] = fma(pr, k_tile[r * D + c], acc[c]);
                }
            }
            m = mx;
        }
        workgroupBarrier();
    }

    // Phase 3: x1 = LN(x + (acc / l) Wv).
    load_weights(lid.x, D * D, D * D);
    workgroupBarrier();
    var h: array<f32, MAX_D>;
    if (live) {
        let inv = 1.0 / l;
        for (var c = 0u; c < D; c++) {
            h[c] = f32(x[(base + t) * D + c]);
        }
        for (var k = 0u; k < D; k++) {
            let u = acc[k] * inv;
            for (var c = 0u; c < D; c++) {
                h[c] = fma(u, w[k * D + c], h[c]);
            }
        }
        layer_norm(&h);
    }
    workgroupBarrier();

    // Phase 4: y = LN(x1 + relu(x1 W1) W2), one hidden unit at a time
    // (W1 at w[0 .. D·F], W2 after it).
    load_weights(lid.x, 2u * D * D, 2u * D * F);
    workgroupBarrier();
    if (t >= p.seq) {
        return;
    }
    let ob = (base + t) * D;
    if (!live) {
        for (var c = 0u; c < D; c++) {
            y[ob + c] = st(0.0);
        }
        return;
    }
    for (var c = 0u; c < D; c++) {
        acc[c] = h[c];
    }
    let w2 = D * F;
    for (var j = 0u; j < F; j++) {
        var z = 0.0;
        for (var k = 0u; k < D; k++) {
            z = fma(h[k], w[k * F + j], z);
        }
        z = max(z, 0.0);
        for (var c = 0u; c < D; c++) {
            acc[c] = fma(z, w[w2 + j * D + c], acc[c]);
        }
    }
    layer_norm(&acc);
    for (var c = 0u; c < D; c++) {
        y[ob + c] = st(acc[c]);
    }
}
