// TransAct V1 input side: token gather with early fusion.
//
// The host uploads ONE buffer per request (read here as `src`, u32 words;
// f32 values are stored as their bit patterns):
//   [kept positions (se)] [embedding rows of those positions (se)]
//   [K-position map (used later)] [item embeddings, n × di, as given]
//   [candidate embeddings, B × di] [optional user / context features]
// Only unmasked positions are kept ("packed"), so the encoder never sees a
// masked key and masked output rows are simply absent (they are zero).
//
// `gather`: x[b, t] = [E_act(row_t) ; e_{pos_t} ; e_c(b)] for each of the
// `bc` candidate copies (without early fusion bc = 1 and the candidate part
// is absent), and xu[t] = [E_act ; e] once (the user part, which the first
// layer projects once per request). The action table, x and xu hold the
// encoder's storage type `st` (alias prepended by the host).
// Bindings: 1 src, 2 x (out), 3 action table, 4 xu (out).

struct Params {
    se: u32,
    da: u32,
    di: u32,
    d: u32,
    bc: u32,
    n_given: u32,
    pos_off: u32,
    rows_off: u32,
    item_off: u32,
    cand_off: u32,
    total: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
    _p3: u32,
    _p4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<st>;
@group(0) @binding(3) var<storage, read> aux: array<st>;
@group(0) @binding(4) var<storage, read_write> dst2: array<st>;

// Flat thread index over a 2-D grid of 64-wide workgroups (the host splits
// large counts over y to stay under the per-dimension limit).
fn flat(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

@compute @workgroup_size(64, 1, 1)
fn gather(@builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(lid, wid, nwg);
    if (i >= p.total) {
        return;
    }
    let r = i / p.d;
    let c = i % p.d;
    let b = r / p.se;
    let t = r % p.se;
    let pos = src[p.pos_off + t];
    let row = src[p.rows_off + t];
    var v = 0.0;
    if (c < p.da) {
        v = f32(aux[row * p.da + c]);
    } else if (c < p.da + p.di) {
        if (pos < p.n_given) {
            v = bitcast<f32>(src[p.item_off + pos * p.di + (c - p.da)]);
        }
    } else {
        v = bitcast<f32>(src[p.cand_off + b * p.di + (c - p.da - p.di)]);
    }
    dst[i] = st(v);
    let du = p.da + p.di;
    if (b == 0u && c < du) {
        dst2[t * du + c] = st(v);
    }
}
