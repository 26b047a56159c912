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
    // Probability threshold on 16-bit draws: kept iff draw >= p·65536.
    let thr = (p * 65_536.0).ceil() as u64;
    let mut i = 0usize;
    while i < x.len() {
        let c = first + i as u64;
        let h = mix64(key ^ (c / 4).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut lane = (c % 4) as usize;
        while lane < 4 && i < x.len() {
            let draw = (h >> (16 * lane)) & 0xFFFF;
            x[i] = if draw >= thr { x[i] * scale } else { 0.0 };
            lane += 1;
            i += 1;
        }
    }
}

/// Backward of [`dropout_forward`] in place on the gradient: the same
/// mask and scale (dropout is linear).
pub fn dropout_backward(dx: &mut [f32], p: f32, key: u64, first: u64) {
    dropout_forward(dx, p, key, first);
}
