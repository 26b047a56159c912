// Multi-head self-attention over packed sequences (TransAct V1), in the
// encoder's storage type `st` (alias prepended by the host; f32 math).
//
// The host keeps only the unmasked positions of the user's sequence
// (padding, actions after the request time; position 0 always stays), in
// the same order for every candidate. Every kept key is therefore valid:
// the padding and time masks are applied by the packing, which is exact
// because masked keys get zero weight and masked rows are zero in the
// output anyway.
//
//   out[b, t, head] = Σ_j softmax_j(q[b,t,head] · k[b,j,head]) v[b,j,head]
//
// `qkv` rows are [q | k | v], each `d` wide, head `h` at columns
// h·dh .. (h+1)·dh of its part; the 1/sqrt(dh) scale is already in q.
// One thread per (query row, head, candidate): grid (⌈seq/64⌉, heads, B).
// Online softmax: a running maximum, denominator and dh accumulators,
// rescaled only when the maximum grows; any sequence length.

struct Params {
    seq: u32,
    heads: u32,
    dh: u32,
    d: u32,
}

const MAX_DH: u32 = 128u;
const NEG: f32 = -1.0e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<st>;
@group(0) @binding(2) var<storage, read_write> out: array<st>;

@compute @workgroup_size(64, 1, 1)
fn mha(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.x * 64u + lid.x;
    if (t >= p.seq) {
        return;
    }
    let head = wid.y;
    let base = wid.z * p.seq;
    let ld = 3u * p.d;
    let qo = (base + t) * ld + head * p.dh;
    var q: array<f32, MAX_DH>;
    var acc: array<f32, MAX_DH>;
    for (var c = 0u; c < p.dh; c++) {
        q[c] = f32(qkv[qo + c]);
        acc[c] = 0.0;
    }
    var m = NEG;
    var l = 0.0;
    for (var j = 0u; j < p.seq; j++) {
        let ko = (base + j) * ld + p.d + head * p.dh;
        let vo = ko + p.d;
        var s = 0.0;
        for (var c = 0u; c < p.dh; c++) {
            s = fma(q[c], f32(qkv[ko + c]), s);
        }
        if (s > m) {
            let sc = exp(m - s);
            l *= sc;
            for (var c = 0u; c < p.dh; c++) {
                acc[c] *= sc;
            }
            m = s;
        }
        let e = exp(s - m);
        l += e;
        for (var c = 0u; c < p.dh; c++) {
            acc[c] = fma(e, f32(qkv[vo + c]), acc[c]);
        }
    }
    let inv = 1.0 / l;
    let oo = (base + t) * p.d + head * p.dh;
    for (var c = 0u; c < p.dh; c++) {
        out[oo + c] = st(acc[c] * inv);
    }
}
