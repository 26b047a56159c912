// Row-wise adds for the TransAct V1 encoder, in its storage type `st`
// (alias prepended by the host; arithmetic in f32):
//
//   dst[off + r·ld + c] = src[soff + (r mod src_rows)·sld + c]
//                       + bias[boff + (r / bias_div)·bias_ld + c]
//
// for r < rows, c < cols, each term optional. Its uses:
// - a bias broadcast to every row (bias_div ≥ rows, no src), written
//   before a GEMM that accumulates on top;
// - residual + bias (src_rows = rows) before the output projection or the
//   FFN's second GEMM accumulates on top;
// - the first layer's split input projection with early fusion:
//   qkv[b, t] = U[t] + C[b] with src_rows = bias_div = se (U = the user
//   part, once per request; C = the candidate part with the bias).
// One thread per output over a 2-D grid of 64-wide workgroups.
// Bindings: 1 src, 2 dst (out), 3 bias (an unused one may be any buffer).

struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    off: u32,
    sld: u32,
    soff: u32,
    src_rows: u32,
    has_src: u32,
    has_bias: u32,
    bias_div: u32,
    bias_ld: u32,
    boff: u32,
    total: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<st>;
@group(0) @binding(2) var<storage, read_write> dst: array<st>;
@group(0) @binding(3) var<storage, read> bias: array<st>;

@compute @workgroup_size(64, 1, 1)
fn add_rows(@builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (i >= p.total) {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    var v = 0.0;
    if (p.has_src != 0u) {
        v += f32(src[p.soff + (r % p.src_rows) * p.sld + c]);
    }
    if (p.has_bias != 0u) {
        v += f32(bias[p.boff + (r / p.bias_div) * p.bias_ld + c]);
    }
    dst[p.off + r * p.ld + c] = st(v);
}
