// y = x·Wᵀ + b for a FEW rows of x (the ranking heads, the candidate part
// of the first V1 layer, the max-pool projection): one thread per output
// value, each a dot product over the full inner dimension. The tiled GEMM
// computes 32-row blocks, so with 4 rows it would spend 7/8 of its work on
// padding; here every multiply is useful.
//
// x is [M × K] (row stride ldx, from xoff), W is [N × K] (row stride ldw,
// from woff, PyTorch `Linear` layout), y is [M × N] (row stride ldy, from
// yoff). Options: add a bias, add to what y holds, then ReLU.
// Buffers hold `st` (alias prepended by the host); arithmetic is f32.
// Bindings: 1 x, 2 W, 3 bias (any buffer when unused), 4 y.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    ldx: u32,
    xoff: u32,
    ldw: u32,
    woff: u32,
    ldy: u32,
    yoff: u32,
    has_bias: u32,
    accumulate: u32,
    relu: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> w: array<st>;
@group(0) @binding(3) var<storage, read> bias: array<st>;
@group(0) @binding(4) var<storage, read_write> y: array<st>;

@compute @workgroup_size(64, 1, 1)
fn linear_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let r = gid.y;
    if (o >= p.n || r >= p.m) {
        return;
    }
    let xb = p.xoff + r * p.ldx;
    let wb = p.woff + o * p.ldw;
    // Four partial sums: shorter dependency chains.
    var s = vec4<f32>(0.0);
    let k4 = p.k & ~3u;
    for (var i = 0u; i < k4; i += 4u) {
        let xv = vec4<f32>(vec4<st>(x[xb + i], x[xb + i + 1u], x[xb + i + 2u], x[xb + i + 3u]));
        let wv = vec4<f32>(vec4<st>(w[wb + i], w[wb + i + 1u], w[wb + i + 2u], w[wb + i + 3u]));
        s = fma(xv, wv, s);
    }
    var v = (s.x + s.y) + (s.z + s.w);
    for (var i = k4; i < p.k; i++) {
        v = fma(f32(x[xb + i]), f32(w[wb + i]), v);
    }
    if (p.has_bias != 0u) {
        v += f32(bias[o]);
    }
    let yi = p.yoff + r * p.ldy + o;
    if (p.accumulate != 0u) {
        v += f32(y[yi]);
    }
    if (p.relu != 0u) {
        v = max(v, 0.0);
    }
    y[yi] = st(v);
}
