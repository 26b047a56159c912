//! Dropout with counter-based masks.
//!
//! Whether element `i` of a tensor is dropped is a hash of a 64-bit key and
//! `i`, so forward and backward regenerate the same mask without storing it,
//! and the mask of an example does not depend on which other examples share
//! its chunk or thread. The key mixes the step seed, the example's index in
//! the batch, the layer and the site ([`dropout_key`]).

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `z`.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one dropout site of one example in one step.
pub fn dropout_key(step_seed: u64, example: u64, layer: u64, site: u64) -> u64 {
    mix64(mix64(mix64(step_seed ^ 0x5EED) ^ example) ^ (layer << 8 | site))
}

/// Whether element `index` under `key` is kept, at drop probability `p`.
/// One hash serves four consecutive counters (16 random bits each).
#[inline]
pub fn kept(key: u64, index: u64, p: f32) -> bool {
    let h = mix64(key ^ (index / 4).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let u = ((h >> (16 * (index % 4))) & 0xFFFF) as f32 * (1.0 / 65_536.0);
    u >= p
}

/// Inverted dropout in place: `x ← x·m/(1−p)` with `m` the mask of `key`
/// (element `i` of `x` uses counter `first + i`). `p ≤ 0` is the identity;
/// `p ≥ 1` zeroes `x`.
pub fn dropout_forward(x: &mut [f32], p: f32, key: u64, first: u64) {
    if p <= 0.0 {
        return;
    }
    if p >= 1.0 {
        x.fill(0.0);
        return;
    }
    let scale = 1.0 / (1.0 - p);
    // Kept iff the 16-bit draw is at least p·65536 (as in [`kept`]).
    let thr = (p * 65_536.0).ceil() as u64;
    let draw = |c: u64| mix64(key ^ (c / 4).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let apply = |v: f32, bits: u64| {
        if bits & 0xFFFF >= thr { v * scale } else { 0.0 }
    };
    // Elements before the first counter that is a multiple of four, then
    // whole groups of four (one hash each), then the tail.
    let lead = (((4 - first % 4) % 4) as usize).min(x.len());
    let (head, rest) = x.split_at_mut(lead);
    for (i, v) in head.iter_mut().enumerate() {
        let c = first + i as u64;
        *v = apply(*v, draw(c) >> (16 * (c % 4)));
    }
    let base = first + lead as u64;
    let whole = rest.len() / 4 * 4;
    let (body, tail) = rest.split_at_mut(whole);
    for (g, quad) in body.chunks_exact_mut(4).enumerate() {
        let h = draw(base + 4 * g as u64);
        for (lane, v) in quad.iter_mut().enumerate() {
            *v = apply(*v, h >> (16 * lane));
        }
    }
    let tb = base + whole as u64;
    for (i, v) in tail.iter_mut().enumerate() {
        let c = tb + i as u64;
        *v = apply(*v, draw(c) >> (16 * (c % 4)));
    }
}

/// Backward of [`dropout_forward`] in place on the gradient: the same
/// mask and scale (dropout is linear).
pub fn dropout_backward(dx: &mut [f32], p: f32, key: u64, first: u64) {
    dropout_forward(dx, p, key, first);
}
