// LayerNorm over rows (biased variance, two passes: mean, then squared
// deviations), one thread per row.
//
// Entry points:
// - `layer_norm`:             y = LN(x)
// - `layer_norm_affine`:      y = LN(x) · gamma + beta
//
// Buffers hold `st` (alias prepended by the host); math is f32.

struct Params {
    rows: u32,
    d: u32,
    seq: u32,
    _pad: u32,
    eps: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read_write> y: array<st>;
@group(0) @binding(3) var<storage, read> gamma: array<st>;
@group(0) @binding(4) var<storage, read> beta: array<st>;

// Mean and 1/sqrt(var + eps) of row `r` of x.
fn stats(r: u32) -> vec2<f32> {
    let base = r * p.d;
    var sum = 0.0;
    for (var c = 0u; c < p.d; c++) {
        sum += f32(x[base + c]);
    }
    let mean = sum / f32(p.d);
    var sq = 0.0;
    for (var c = 0u; c < p.d; c++) {
        let t = f32(x[base + c]) - mean;
        sq += t * t;
    }
    return vec2<f32>(mean, inverseSqrt(sq / f32(p.d) + p.eps));
}

@compute @workgroup_size(64, 1, 1)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let s = stats(r);
    let base = r * p.d;
    for (var c = 0u; c < p.d; c++) {
        y[base + c] = st((f32(x[base + c]) - s.x) * s.y);
    }
}

@compute @workgroup_size(64, 1, 1)
fn layer_norm_affine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let s = stats(r);
    let base = r * p.d;
    for (var c = 0u; c < p.d; c++) {
        let v = (f32(x[base + c]) - s.x) * s.y;
        y[base + c] = st(v * f32(gamma[c]) + f32(beta[c]));
    }
}
