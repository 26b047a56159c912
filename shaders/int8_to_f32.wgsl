// int8 codes to f32 values: `dst[4w + j] = f32(byte j of src[w])` (signed
// bytes, lowest first) for w < words. The first step of the unfused
// nearest-neighbour path (`v2_select.wgsl` has the fused one): the codes
// become floats that the GEMM multiplies exactly (integer products and
// sums stay below 2^24). The token's scale is applied later, once, to the
// dot product, as the fused kernel does, so both paths score alike.
// One thread per word over a 2-D grid of 64-wide workgroups.
// Bindings: 1 src (u32 words), 2 dst (f32, out).

struct Params {
    words: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn int8_to_f32(@builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (w >= p.words) {
        return;
    }
    let v = src[w];
    dst[w] = vec4<f32>(
        f32(bitcast<i32>(v << 24u) >> 24u),
        f32(bitcast<i32>(v << 16u) >> 24u),
        f32(bitcast<i32>(v << 8u) >> 24u),
        f32(bitcast<i32>(v) >> 24u),
    );
}
