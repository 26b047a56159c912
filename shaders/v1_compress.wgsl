// TransAct V1 output compression from the packed encoder output. The
// encoder rows `y` are in its storage type `st` (alias prepended by the
// host); the output, `pooled` and `b_o` are f32.
//
// `y` holds, per sequence, the `se` kept (unmasked) rows in position order;
// the masked rows of the full S-row output are zero. Per candidate b and
// column c (one thread each):
//
// - with max-pool: pooled[b, c] = max over all S rows, i.e. over the kept
//   rows and, when any row is masked or padded (se < S), the value 0; and
//   out[b, c] = b_o[c] (the host then adds pooled · W_oᵀ with a GEMM);
// - the K newest positions: out[b, off + p·d + c] = y[row of p, c] when
//   position p was kept, 0 when it was masked (map: packed index or -1,
//   read from the request's upload).
//
// `y_per_cand` is 0 when the tokens do not depend on the candidate (no
// early fusion): one encoded sequence serves every candidate.
// Bindings: 1 y, 2 upload (u32 words), 3 b_o, 4 pooled (out), 5 out.

struct Params {
    se: u32,
    s: u32,
    d: u32,
    k: u32,
    batch: u32,
    y_per_cand: u32,
    kmap_off: u32,
    ld_out: u32,
    max_pool: u32,
    off: u32,
    // Element offset of candidate 0's output row (a request's place in a
    // batch of several).
    base: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<st>;
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn compress(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let b = gid.y;
    if (c >= p.d || b >= p.batch) {
        return;
    }
    let base = b * p.y_per_cand * p.se;
    let ob = p.base + b * p.ld_out;
    if (p.max_pool != 0u) {
        var m = -3.0e38;
        if (p.se < p.s) {
            m = 0.0;
        }
        for (var i = 0u; i < p.se; i++) {
            m = max(m, f32(y[(base + i) * p.d + c]));
        }
        pooled[b * p.d + c] = m;
        out[ob + c] = bias[c];
    }
    for (var q = 0u; q < p.k; q++) {
        let idx = bitcast<i32>(src[p.kmap_off + q]);
        var v = 0.0;
        if (idx >= 0) {
            v = f32(y[(base + u32(idx)) * p.d + c]);
        }
        out[ob + p.off + q * p.d + c] = v;
    }
}
