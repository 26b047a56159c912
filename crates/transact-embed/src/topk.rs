//! Top-k selection over scores with a fixed, deterministic order.
//!
//! The order used everywhere in this module ("better first"):
//!
//! 1. higher score first;
//! 2. equal scores: **lower index first**. Sequences are stored newest
//!    first, so a lower index is a newer action: ties go to the newest;
//! 3. NaN scores come after every real number (including −∞), and among
//!    themselves by index. A NaN is therefore never selected while a real
//!    score is left.
//!
//! `-0.0` and `0.0` compare equal (so the index decides between them).
//!
//! Both functions run in `O(n log k)` at worst and close to `O(n + k log k)`
//! on typical data. On 64-bit targets each candidate is packed into one
//! integer (order-preserving score bits, then the inverted index) and `out`
//! serves as a min-heap of the `k` best so far, so most candidates cost one
//! integer comparison; `out` never grows beyond `k` entries. Elsewhere
//! (32-bit targets, or more than 2³² scores) a `select_nth_unstable_by`
//! path is used, which grows `out` to `scores.len()` before truncating.
//! `out` is cleared first; reusing it across calls avoids allocation after
//! the first one.

use std::cmp::Ordering;

/// Compares indices `a` and `b` by the "better first" order of this module.
#[inline]
fn better_first(scores: &[f32], a: usize, b: usize) -> Ordering {
    let (sa, sb) = (scores[a], scores[b]);
    let by_score = match (sa.is_nan(), sb.is_nan()) {
        (false, false) => sb.partial_cmp(&sa).unwrap_or(Ordering::Equal),
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (true, true) => Ordering::Equal,
    };
    by_score.then(a.cmp(&b))
}

/// Maps a score to a `u32` whose unsigned order is the score order of this
/// module: NaN → 0 (below everything), −0.0 and 0.0 → the same key, and the
/// usual sign-flip trick for the rest (−∞ → 0x007F_FFFF, +∞ → 0xFF80_0000).
#[inline]
fn score_key(s: f32) -> u32 {
    if s.is_nan() {
        return 0;
    }
    let bits = (s + 0.0).to_bits(); // −0.0 + 0.0 == +0.0
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Fast path on 64-bit targets: each candidate is packed into one integer,
/// `score_key << 32 | (u32::MAX − index)`, so that "larger packed value" is
/// exactly "better first". `out` is used as a binary min-heap of the `k`
/// best packed values seen so far: one integer comparison rejects most
/// candidates, and only improvements pay the `O(log k)` sift. Returns false
/// (doing nothing) when the indices do not fit in 32 bits.
#[cfg(target_pointer_width = "64")]
fn select_packed(scores: &[f32], k: usize, out: &mut Vec<usize>) -> bool {
    let n = scores.len();
    if n > 0 && u32::try_from(n - 1).is_err() {
        return false;
    }
    out.clear();
    let k = k.min(n);
    if k == 0 {
        return true;
    }
    let pack = |i: usize| -> usize {
        ((u64::from(score_key(scores[i])) << 32) | u64::from(u32::MAX - i as u32)) as usize
    };
    out.extend((0..k).map(pack));
    if k == n {
        return true;
    }
    for root in (0..k / 2).rev() {
        sift_down(out, root);
    }
    // `floor` is the score of the current worst kept entry (−∞ while that
    // entry is a NaN). Later indices lose ties, so a candidate below it, or
    // a NaN, can be skipped with one float comparison.
    let floor_of = |root: usize| {
        let s = scores[unpack_index(root)];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    let mut floor = floor_of(out[0]);
    for (i, &s) in scores.iter().enumerate().skip(k) {
        // Below the floor, or NaN (which compares as `None`): skip.
        if !matches!(
            s.partial_cmp(&floor),
            Some(Ordering::Greater | Ordering::Equal)
        ) {
            continue;
        }
        let p = pack(i);
        if p > out[0] {
            out[0] = p;
            sift_down(out, 0);
            floor = floor_of(out[0]);
        }
    }
    true
}

/// Restores the min-heap property below `pos`.
#[cfg(target_pointer_width = "64")]
#[inline]
fn sift_down(heap: &mut [usize], mut pos: usize) {
    let n = heap.len();
    loop {
        let left = 2 * pos + 1;
        if left >= n {
            return;
        }
        let right = left + 1;
        let child = if right < n && heap[right] < heap[left] {
            right
        } else {
            left
        };
        if heap[child] >= heap[pos] {
            return;
        }
        heap.swap(child, pos);
        pos = child;
    }
}

/// Recovers the index from a packed entry of [`select_packed`].
#[cfg(target_pointer_width = "64")]
#[inline]
fn unpack_index(packed: usize) -> usize {
    (u32::MAX - packed as u32) as usize
}

#[cfg(not(target_pointer_width = "64"))]
fn select_packed(_: &[f32], _: usize, _: &mut Vec<usize>) -> bool {
    false
}

#[cfg(not(target_pointer_width = "64"))]
fn unpack_index(packed: usize) -> usize {
    packed
}

/// Leaves in `out` the indices of the `min(k, n)` best scores, in no order
/// (the general path, comparing through `scores`).
fn select(scores: &[f32], k: usize, out: &mut Vec<usize>) {
    out.clear();
    let n = scores.len();
    let k = k.min(n);
    if k == 0 {
        return;
    }
    out.extend(0..n);
    if k < n {
        out.select_nth_unstable_by(k - 1, |&a, &b| better_first(scores, a, b));
        out.truncate(k);
    }
}

/// Writes into `out` the indices of the `k` largest `scores`, best first.
///
/// Ties are broken by the lower index first (newest first for sequences
/// stored newest first); NaN scores sort after every real number. If
/// `k > scores.len()` every index is returned; `k == 0` gives an empty `out`.
/// `out` is cleared first.
///
/// ```
/// use transact_embed::top_k;
///
/// let scores = [0.5, 2.0, f32::NAN, 2.0, -1.0];
/// let mut out = Vec::new();
/// top_k(&scores, 3, &mut out);
/// assert_eq!(out, vec![1, 3, 0]); // the tie at 2.0 goes to the lower index
///
/// top_k(&scores, 10, &mut out);
/// assert_eq!(out, vec![1, 3, 0, 4, 2]); // NaN last
/// ```
pub fn top_k(scores: &[f32], k: usize, out: &mut Vec<usize>) {
    if select_packed(scores, k, out) {
        out.sort_unstable_by(|a, b| b.cmp(a));
        for v in out.iter_mut() {
            *v = unpack_index(*v);
        }
        return;
    }
    select(scores, k, out);
    out.sort_unstable_by(|&a, &b| better_first(scores, a, b));
}

/// Selects the same indices as [`top_k`] but returns them in ascending index
/// order (so selected sequence tokens keep their time order).
///
/// ```
/// use transact_embed::top_k_sorted_by_index;
///
/// let scores = [0.1, 0.9, 0.3, 0.8];
/// let mut out = Vec::new();
/// top_k_sorted_by_index(&scores, 2, &mut out);
/// assert_eq!(out, vec![1, 3]);
/// ```
pub fn top_k_sorted_by_index(scores: &[f32], k: usize, out: &mut Vec<usize>) {
    if select_packed(scores, k, out) {
        for v in out.iter_mut() {
            *v = unpack_index(*v);
        }
    } else {
        select(scores, k, out);
    }
    out.sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: a full stable sort by the same rule.
    fn naive(scores: &[f32], k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| {
            let key = |i: usize| {
                if scores[i].is_nan() {
                    f32::NEG_INFINITY
                } else {
                    scores[i]
                }
            };
            let nan = |i: usize| scores[i].is_nan();
            nan(a)
                .cmp(&nan(b))
                .then(key(b).partial_cmp(&key(a)).unwrap())
                .then(a.cmp(&b))
        });
        idx.truncate(k);
        idx
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let scores = [1.0, 3.0, 3.0, 1.0, 3.0];
        let mut out = Vec::new();
        top_k(&scores, 2, &mut out);
        assert_eq!(out, vec![1, 2]);
        top_k(&scores, 4, &mut out);
        assert_eq!(out, vec![1, 2, 4, 0]);
    }

    #[test]
    fn nan_is_never_preferred_to_a_number() {
        let scores = [f32::NAN, f32::NEG_INFINITY, f32::NAN, -5.0];
        let mut out = Vec::new();
        top_k(&scores, 2, &mut out);
        assert_eq!(out, vec![3, 1]);
        top_k(&scores, 3, &mut out);
        assert_eq!(out, vec![3, 1, 0]);
        top_k_sorted_by_index(&scores, 2, &mut out);
        assert_eq!(out, vec![1, 3]);
    }

    #[test]
    fn signed_zeros_tie() {
        let scores = [-0.0, 0.0];
        let mut out = Vec::new();
        top_k(&scores, 1, &mut out);
        assert_eq!(out, vec![0]);
    }

    #[test]
    fn edge_sizes() {
        let mut out = vec![7, 8, 9];
        top_k(&[], 3, &mut out);
        assert!(out.is_empty());
        top_k(&[1.0, 2.0], 0, &mut out);
        assert!(out.is_empty());
        top_k(&[1.0, 2.0], 5, &mut out);
        assert_eq!(out, vec![1, 0]);
        top_k_sorted_by_index(&[1.0, 2.0], 5, &mut out);
        assert_eq!(out, vec![0, 1]);
    }

    fn score() -> impl Strategy<Value = f32> {
        // A small value set so ties (and NaNs) are frequent.
        prop_oneof![
            8 => (-3i32..=3).prop_map(|v| v as f32 * 0.5),
            1 => Just(-0.0),
            1 => Just(f32::NAN),
            1 => Just(-f32::NAN),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::INFINITY),
        ]
    }

    #[test]
    fn score_key_is_monotone() {
        let xs = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -1e-40,
            0.0,
            1e-40,
            1.0,
            1e30,
            f32::INFINITY,
        ];
        assert_eq!(score_key(f32::NAN), 0);
        assert_eq!(score_key(-f32::NAN), 0);
        assert!(score_key(f32::NEG_INFINITY) > 0);
        for w in xs.windows(2) {
            assert!(score_key(w[0]) < score_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(score_key(-0.0), score_key(0.0));
    }

    proptest! {
        #[test]
        fn general_path_matches_full_sort(
            scores in prop::collection::vec(score(), 0..80),
            k in 0usize..100,
        ) {
            let mut out = Vec::new();
            select(&scores, k, &mut out);
            out.sort_unstable_by(|&a, &b| better_first(&scores, a, b));
            prop_assert_eq!(out, naive(&scores, k));
        }

        #[test]
        fn matches_full_sort(scores in prop::collection::vec(score(), 0..80), k in 0usize..100) {
            let mut out = Vec::new();
            top_k(&scores, k, &mut out);
            let want = naive(&scores, k);
            prop_assert_eq!(&out, &want);

            top_k_sorted_by_index(&scores, k, &mut out);
            let mut want_sorted = want;
            want_sorted.sort_unstable();
            prop_assert_eq!(out, want_sorted);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Longer inputs and small k: exercises deep heaps and many
        /// replacements of the heap root.
        #[test]
        fn long_inputs_match_full_sort(
            scores in prop::collection::vec(score(), 100..1500),
            k in 1usize..40,
        ) {
            let mut out = Vec::new();
            top_k(&scores, k, &mut out);
            prop_assert_eq!(out, naive(&scores, k));
        }
    }
}
