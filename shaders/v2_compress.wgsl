// TransAct V2's output compression, before its projection (model-spec §3):
// for candidate b and column j < d of the blocks' output y [B × S × d]
// (padded rows zero, as the blocks leave them), with n_b = max(lens[b], 1):
//
//   pool[b·d + j]             = max over all S rows t of y[b, t, j]
//   feats[b·n + d + kk·d + j] = y[b, n_b − 1 − kk, j]  for kk < min(kv, n_b)
//                             = 0                       for the other kk < k
//
// `feats` is the heads' feature matrix (row width n); its first d columns
// are written afterwards by the projection W_o·pool + b_o (a GEMM), the
// columns after the kept rows by `dcn_heads.wgsl::assemble`. One thread per
// (b, j). `y` holds `st` (alias prepended by the host); math is f32.

struct Params {
    batch: u32,
    seq: u32,
    d: u32,
    k: u32,
    kv: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<st>;
@group(0) @binding(2) var<storage, read> lens: array<u32>;
@group(0) @binding(3) var<storage, read_write> pool: array<f32>;
@group(0) @binding(4) var<storage, read_write> feats: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn compress(@builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (i >= p.batch * p.d) {
        return;
    }
    let b = i / p.d;
    let j = i % p.d;
    let base = b * p.seq * p.d + j;
    var m = f32(y[base]);
    for (var t = 1u; t < p.seq; t = t + 1u) {
        m = max(m, f32(y[base + t * p.d]));
    }
    pool[i] = m;
    let nb = max(lens[b], 1u);
    let keep = min(p.kv, nb);
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        var v = 0.0;
        if (kk < keep) {
            v = f32(y[base + (nb - 1u - kk) * p.d]);
        }
        feats[b * p.n + p.d + kk * p.d + j] = v;
    }
}
