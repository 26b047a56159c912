// Element-wise helpers around the GEMMs of the V1 encoder and the ranking
// heads (the products themselves run on shaders/gemm.wgsl).
//
// Shared bindings: 1 src (read, u32 words: f32 data is bit-cast), 2 dst
// (read_write), 3 aux (read). Entry points:
//
// - `bias_rows`: dst[off + r·ld + c] = src[soff + r·sld + c] (if HAS_SRC)
//                + aux[c] (if HAS_BIAS), for r < rows, c < cols. Starts a
//                `Linear` (the GEMM then accumulates x·Wᵀ on top) or a
//                residual (src = the residual input).
// - `assemble`:  the ranking features after the encoder columns:
//                dst[off + b·n + od + j] = [e_c(b) ; user ; context][j]
//                from the request's upload (`off` places a request's rows
//                in a batch of several).
// - `cross`:     one DCN v2 step after t = W x_l + b: dst (= x_l) +=
//                src (= x_0) ⊙ aux (= t), element-wise over `total`.

struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    off: u32,
    sld: u32,
    soff: u32,
    has_src: u32,
    has_bias: u32,
    n: u32,
    od: u32,
    cand_off: u32,
    user_off: u32,
    ctx_off: u32,
    di: u32,
    ue: u32,
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;

fn flat(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

@compute @workgroup_size(64, 1, 1)
fn bias_rows(@builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(lid, wid, nwg);
    if (i >= p.rows * p.cols) {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    var v = 0.0;
    if (p.has_src != 0u) {
        v = bitcast<f32>(src[p.soff + r * p.sld + c]);
    }
    if (p.has_bias != 0u) {
        v += aux[c];
    }
    dst[p.off + r * p.ld + c] = v;
}

@compute @workgroup_size(64, 1, 1)
fn assemble(@builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(lid, wid, nwg);
    if (i >= p.total) {
        return;
    }
    let w = p.n - p.od;
    let b = i / w;
    let j = i % w;
    var word: u32;
    if (j < p.di) {
        word = src[p.cand_off + b * p.di + j];
    } else if (j < p.di + p.ue) {
        word = src[p.user_off + j - p.di];
    } else {
        word = src[p.ctx_off + j - p.di - p.ue];
    }
    dst[p.off + b * p.n + p.od + j] = bitcast<f32>(word);
}

@compute @workgroup_size(64, 1, 1)
fn cross(@builtin(local_invocation_id) lid: vec3<u32>,
         @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(lid, wid, nwg);
    if (i >= p.total) {
        return;
    }
    dst[i] = fma(bitcast<f32>(src[i]), aux[i], dst[i]);
}
