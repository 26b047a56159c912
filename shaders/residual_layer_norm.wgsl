// Residual add fused with LayerNorm (no gain or bias) and the padding mask:
// y = LN(x + r) on valid rows, exact zeros on padded rows.
//
// Rows come in sequences of `seq`: row t of sequence b is valid when
// t < max(lens[b], 1) (an empty sequence keeps its token 0, as the CPU
// model does). One thread per row; statistics in two passes (mean, then
// squared deviations; biased variance). Buffers hold `st` (alias prepended
// by the host); math is f32.

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
@group(0) @binding(2) var<storage, read> r: array<st>;
@group(0) @binding(3) var<storage, read> lens: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<st>;

@compute @workgroup_size(64, 1, 1)
fn add_layer_norm_masked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.d;
    let t = row % p.seq;
    let n = max(lens[row / p.seq], 1u);
    if (t >= n) {
        for (var c = 0u; c < p.d; c++) {
            y[base + c] = st(0.0);
        }
        return;
    }
    var sum = 0.0;
    for (var c = 0u; c < p.d; c++) {
        sum += f32(x[base + c]) + f32(r[base + c]);
    }
    let mean = sum / f32(p.d);
    var sq = 0.0;
    for (var c = 0u; c < p.d; c++) {
        let v = f32(x[base + c]) + f32(r[base + c]) - mean;
        sq += v * v;
    }
    let rstd = inverseSqrt(sq / f32(p.d) + p.eps);
    for (var c = 0u; c < p.d; c++) {
        y[base + c] = st((f32(x[base + c]) + f32(r[base + c]) - mean) * rstd);
    }
}
