//! TransAct V2's token selection: a user's three sequences → the tokens
//! each candidate's encoder row holds ([`crate::LifelongConfig`]).

use transact_embed::select::{NO_TOKEN, SelectScratch as NnScratch, select_nearest_i8};
use transact_seq::{ItemId, TokenBuf, UserSequences};

use crate::builder::Kind;
use crate::{FeatureBuilder, FeatureError, LifelongConfig, SequenceFeatures, UnknownItem};

/// Which sequence a selected token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenPart {
    /// The lifelong sequence (`NN(S_LL, c)`).
    Lifelong,
    /// The realtime sequence (`S_RT[:r]` and `NN(S_RT[r:], c)`).
    Realtime,
    /// The impressions (`NN(S_imp, c)`).
    Impression,
}

impl TokenPart {
    /// The part's stable one-byte code (0 lifelong, 1 realtime, 2
    /// impression), as feature logs store it.
    pub const fn code(self) -> u8 {
        match self {
            TokenPart::Lifelong => 0,
            TokenPart::Realtime => 1,
            TokenPart::Impression => 2,
        }
    }

    /// The part of a [`TokenPart::code`]; `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(TokenPart::Lifelong),
            1 => Some(TokenPart::Realtime),
            2 => Some(TokenPart::Impression),
            _ => None,
        }
    }
}

/// The selected tokens of one request: a pool of the request's distinct
/// tokens (the user's sequences, sent once) and, per candidate, the pool
/// indices of its row, oldest first. Buffers are reused across requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelectedTokens {
    /// Width of the int8 codes.
    pub dim: usize,
    /// Item of each pool token.
    pub item_ids: Vec<ItemId>,
    /// Multi-hot action field of each pool token (bit `i`: the `i`-th id of
    /// the vocabulary).
    pub action_masks: Vec<u32>,
    /// Surface of each pool token (below the config's `num_surfaces`).
    pub surfaces: Vec<u16>,
    /// Time of each pool token, ms.
    pub times_ms: Vec<i64>,
    /// Where each pool token came from.
    pub parts: Vec<TokenPart>,
    /// `[tokens × dim]` int8 item codes (zeros for an item without a row).
    pub codes: Vec<i8>,
    /// Per pool token, the codes' scale (value = `code · scale / 127`; 0 for
    /// an item without a row).
    pub scales: Vec<f32>,
    /// Slots per candidate row (`r + k_LL + k_RT + k_imp`).
    pub slots: usize,
    /// Per candidate, its number of tokens.
    pub lens: Vec<usize>,
    /// `[candidates × slots]` pool indices, oldest first; [`NO_TOKEN`] past
    /// the row's length.
    pub rows: Vec<u32>,
    /// Sequence actions on items without a row (left out or zero, by the
    /// config's `unknown_item`).
    pub unknown_items: usize,
    /// Lifelong tokens whose types are all outside the vocabulary, and
    /// realtime actions outside it.
    pub unknown_actions: usize,
}

impl SelectedTokens {
    /// Number of candidates.
    pub fn candidates(&self) -> usize {
        self.lens.len()
    }

    /// Number of pool tokens.
    pub fn pool_len(&self) -> usize {
        self.item_ids.len()
    }

    /// Candidate `b`'s pool indices, oldest first.
    pub fn row(&self, b: usize) -> &[u32] {
        let start = b * self.slots;
        &self.rows[start..start + self.lens[b]]
    }

    fn clear(&mut self, dim: usize) {
        self.dim = dim;
        self.item_ids.clear();
        self.action_masks.clear();
        self.surfaces.clear();
        self.times_ms.clear();
        self.parts.clear();
        self.codes.clear();
        self.scales.clear();
        self.lens.clear();
        self.rows.clear();
        self.unknown_items = 0;
        self.unknown_actions = 0;
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        item: ItemId,
        mask: u32,
        surface: u16,
        t: i64,
        part: TokenPart,
        codes: Option<(&[i8], f32)>,
    ) {
        self.item_ids.push(item);
        self.action_masks.push(mask);
        self.surfaces.push(surface);
        self.times_ms.push(t);
        self.parts.push(part);
        match codes {
            Some((c, s)) => {
                self.codes.extend_from_slice(c);
                self.scales.push(s);
            }
            None => {
                self.codes.resize(self.codes.len() + self.dim, 0);
                self.scales.push(0.0);
            }
        }
    }

    /// The dense layout of a V2 request: per candidate slot (`candidates ×
    /// slots`) the dequantised item embedding (`dim` values), the action
    /// mask and the surface; slots past a row's length are zero.
    pub fn expand(
        &self,
        item_embeddings: &mut Vec<f32>,
        action_masks: &mut Vec<u32>,
        surfaces: &mut Vec<u16>,
    ) {
        let d = self.dim;
        self.expand_with(
            d,
            |p, out| dequantize(&self.codes[p * d..(p + 1) * d], self.scales[p], out),
            item_embeddings,
            action_masks,
            surfaces,
        );
    }

    /// [`SelectedTokens::expand`] with each slot's embedding (`width`
    /// values) written by `embed(pool index, out)` instead of the
    /// dequantised codes (e.g. the rows of a learned item table).
    pub fn expand_with(
        &self,
        width: usize,
        mut embed: impl FnMut(usize, &mut [f32]),
        item_embeddings: &mut Vec<f32>,
        action_masks: &mut Vec<u32>,
        surfaces: &mut Vec<u16>,
    ) {
        let (b, s, d) = (self.candidates(), self.slots, width);
        item_embeddings.clear();
        item_embeddings.resize(b * s * d, 0.0);
        action_masks.clear();
        action_masks.resize(b * s, 0);
        surfaces.clear();
        surfaces.resize(b * s, 0);
        for c in 0..b {
            for (t, &p) in self.row(c).iter().enumerate() {
                let (p, slot) = (p as usize, c * s + t);
                embed(p, &mut item_embeddings[slot * d..(slot + 1) * d]);
                action_masks[slot] = self.action_masks[p];
                surfaces[slot] = self.surfaces[p];
            }
        }
    }
}

/// `code · scale / 127`, the int8 tables' dequantisation.
pub fn dequantize(codes: &[i8], scale: f32, out: &mut [f32]) {
    for (o, &q) in out.iter_mut().zip(codes) {
        *o = transact_embed::quant::dequantize_value_i8(q, scale);
    }
}

/// Reusable buffers of [`FeatureBuilder::select`].
#[derive(Clone, Debug, Default)]
pub struct SelectScratch {
    realtime: SequenceFeatures,
    nn: NnScratch,
    picks: [Vec<u32>; 3],
}

/// The pool ranges of the three parts.
struct Parts {
    lifelong: std::ops::Range<usize>,
    realtime: std::ops::Range<usize>,
    impressions: std::ops::Range<usize>,
}

impl FeatureBuilder {
    /// Selects each candidate's tokens for a request at `request_ms` from
    /// the user's three sequences (newest first, as a store reads them),
    /// by the config's [`LifelongConfig`]. `codes(item)` gives an item's
    /// int8 codes (`dim` of them) and scale, `None` without a row;
    /// `candidates` holds the candidates' codes, `[B × dim]`.
    ///
    /// # Errors
    /// [`FeatureError::InvalidConfig`] if the config has no lifelong part;
    /// [`FeatureError::Input`] if `candidates` is not a multiple of `dim`
    /// or an item's codes are not `dim` wide.
    #[allow(clippy::too_many_arguments)]
    pub fn select<'t>(
        &self,
        seqs: &UserSequences,
        request_ms: i64,
        codes: impl Fn(ItemId) -> Option<(&'t [i8], f32)>,
        candidates: &[i8],
        dim: usize,
        scratch: &mut SelectScratch,
        out: &mut SelectedTokens,
    ) -> Result<(), FeatureError> {
        let Some(cfg) = self.config().lifelong.clone() else {
            return Err(FeatureError::InvalidConfig {
                field: "lifelong",
                detail: "is not set: the features are those of a realtime-only model".into(),
            });
        };
        if dim == 0 || !candidates.len().is_multiple_of(dim) {
            return Err(FeatureError::Input {
                what: "candidate codes",
                detail: format!(
                    "{} values are not a multiple of width {dim}",
                    candidates.len()
                ),
            });
        }
        out.clear(dim);
        let codes = |item: ItemId| -> Result<Option<(&'t [i8], f32)>, FeatureError> {
            match codes(item) {
                Some((c, _)) if c.len() != dim => Err(FeatureError::Input {
                    what: "item codes",
                    detail: format!(
                        "item {item} has {} codes, the request width is {dim}",
                        c.len()
                    ),
                }),
                other => Ok(other),
            }
        };
        let parts = self.fill_pool(seqs, request_ms, &cfg, &codes, scratch, out)?;
        let b = candidates.len() / dim;
        out.slots = cfg.max_tokens();
        out.lens.resize(b, 0);
        out.rows.resize(b * out.slots, NO_TOKEN);
        let keep = cfg.rt_keep.min(parts.realtime.len());
        let rt_rest = parts.realtime.start + keep..parts.realtime.end;
        let ks = [cfg.k_lifelong, cfg.k_realtime, cfg.k_impression];
        let ranges = [parts.lifelong.clone(), rt_rest, parts.impressions.clone()];
        for ((range, &k), picks) in ranges.iter().zip(&ks).zip(&mut scratch.picks) {
            picks.clear();
            picks.resize(b * k, NO_TOKEN);
            if k == 0 || range.is_empty() {
                continue;
            }
            select_nearest_i8(
                &out.codes[range.start * dim..range.end * dim],
                &out.scales[range.clone()],
                candidates,
                dim,
                k,
                &mut scratch.nn,
                picks,
            )
            .map_err(|e| FeatureError::Input {
                what: "selection",
                detail: e.to_string(),
            })?;
        }
        // Per candidate: three newest-first lists (lifelong picks, the kept
        // and then the picked realtime actions, impression picks), merged by
        // time into a row written oldest first.
        let kept = parts.realtime.start..parts.realtime.start + keep;
        let bases = [ranges[0].start, ranges[1].start, ranges[2].start];
        for c in 0..b {
            let lists: [&[u32]; 3] = std::array::from_fn(|i| {
                let all = &scratch.picks[i][c * ks[i]..(c + 1) * ks[i]];
                &all[..all.partition_point(|&p| p != NO_TOKEN)]
            });
            let n = kept.len() + lists.iter().map(|l| l.len()).sum::<usize>();
            let row = &mut out.rows[c * out.slots..c * out.slots + n];
            let times = &out.times_ms;
            let mut heads = [0usize; 3];
            let mut kept_next = kept.start;
            // Fill from the newest end backwards; at equal times the later
            // part is taken as newer, so a row reads lifelong, realtime,
            // impressions, oldest first.
            for slot in row.iter_mut().rev() {
                let mut best: Option<(i64, usize, usize)> = None;
                for part in 0..3 {
                    let head = if part == 1 && kept_next < kept.end {
                        Some(kept_next)
                    } else {
                        lists[part]
                            .get(heads[part])
                            .map(|&p| bases[part] + p as usize)
                    };
                    if let Some(p) = head {
                        let t = times[p];
                        if best.is_none_or(|(bt, bp, _)| (t, part) > (bt, bp)) {
                            best = Some((t, part, p));
                        }
                    }
                }
                let Some((_, part, p)) = best else { break };
                if part == 1 && kept_next < kept.end {
                    kept_next += 1;
                } else {
                    heads[part] += 1;
                }
                *slot = p as u32;
            }
            out.lens[c] = n;
        }
        Ok(())
    }

    /// Fills the pool — the lifelong tokens older than the realtime
    /// sequence, the realtime sequence, the impressions, each newest first —
    /// and returns their ranges.
    fn fill_pool<'t>(
        &self,
        seqs: &UserSequences,
        request_ms: i64,
        cfg: &LifelongConfig,
        codes: &impl Fn(ItemId) -> Result<Option<(&'t [i8], f32)>, FeatureError>,
        scratch: &mut SelectScratch,
        out: &mut SelectedTokens,
    ) -> Result<Parts, FeatureError> {
        let fc = self.config();
        let surface = |s: u16| if s < cfg.num_surfaces { s } else { 0 };
        let zero_unknown = fc.unknown_item == UnknownItem::ZeroEmbedding;
        // The realtime sequence, by the V1 rules.
        let rt = &mut scratch.realtime;
        self.build(
            seqs.realtime.iter(),
            request_ms,
            |item| codes(item).ok().flatten().is_some(),
            rt,
        );
        out.unknown_items += rt.unknown_items;
        out.unknown_actions += rt.unknown_actions;
        let oldest_rt = rt.times_ms.last().copied().unwrap_or(i64::MAX);

        let ll = &seqs.lifelong;
        let ll_start = out.pool_len();
        for i in 0..ll.len() {
            let t = ll.timestamps_ms[i];
            if t >= oldest_rt || !fc.visible(t, request_ms) {
                continue;
            }
            let (mask, unknown) = self.lifelong_mask(ll, i);
            if mask == 0 {
                if unknown {
                    out.unknown_actions += 1;
                }
                continue;
            }
            let item = ll.item_ids[i];
            let c = codes(item)?;
            if c.is_none() {
                out.unknown_items += 1;
                if !zero_unknown {
                    continue;
                }
            }
            out.push(
                item,
                mask,
                surface(ll.surfaces[i]),
                t,
                TokenPart::Lifelong,
                c,
            );
        }
        let rt_start = out.pool_len();
        for p in 0..rt.len() {
            let action = rt.action_types[p];
            let mask = u16::try_from(action).map_or(0, |a| self.vocab_bit(a));
            let c = if rt.item_known[p] {
                codes(rt.item_ids[p])?
            } else {
                None
            };
            out.push(
                rt.item_ids[p],
                mask,
                surface(rt.surfaces[p]),
                rt.times_ms[p],
                TokenPart::Realtime,
                c,
            );
        }
        let imp_start = out.pool_len();
        for a in seqs.impressions.iter() {
            if !fc.visible(a.timestamp_ms, request_ms) {
                continue;
            }
            let c = codes(a.item_id)?;
            if c.is_none() && !zero_unknown {
                continue;
            }
            out.push(
                a.item_id,
                self.vocab_bit(a.action_type.0),
                surface(a.surface.0),
                a.timestamp_ms,
                TokenPart::Impression,
                c,
            );
        }
        Ok(Parts {
            lifelong: ll_start..rt_start,
            realtime: rt_start..imp_start,
            impressions: imp_start..out.pool_len(),
        })
    }

    /// The model's multi-hot field of lifelong token `i`: the bits of its
    /// sequence-action types; and whether it has a type outside the
    /// vocabulary.
    fn lifelong_mask(&self, ll: &TokenBuf, i: usize) -> (u32, bool) {
        let mut raw = ll.action_masks[i];
        let (mut mask, mut unknown) = (0u32, false);
        while raw != 0 {
            let t = raw.trailing_zeros() as u16;
            raw &= raw - 1;
            match self.kind(t) {
                Kind::Enter => mask |= self.vocab_bit(t),
                Kind::Exclude => {}
                Kind::Unknown => unknown = true,
            }
        }
        (mask, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureConfig;
    use proptest::prelude::*;
    use transact_seq::{ActionType, SequenceBuf, Surface};

    const DIM: usize = 4;

    /// Codes of item `i` (items ≥ 20 have no row).
    fn codes_of(i: ItemId) -> Option<([i8; DIM], f32)> {
        (i < 20).then(|| {
            let c = std::array::from_fn(|j| ((i as i64 * 7 + j as i64 * 3) % 5 - 2) as i8);
            (c, 0.5 + (i % 3) as f32 * 0.25)
        })
    }

    fn table() -> Vec<([i8; DIM], f32)> {
        (0..20).map(|i| codes_of(i).expect("row")).collect()
    }

    /// The definition: score every token of each part, keep the top k
    /// (ties to the newer), add the newest r realtime actions, order by
    /// (time, part), then older first within a part.
    fn naive(
        b: &FeatureBuilder,
        seqs: &UserSequences,
        request: i64,
        cands: &[i8],
    ) -> Vec<Vec<(ItemId, i64, TokenPart)>> {
        let cfg = b.config().lifelong.clone().expect("lifelong");
        let mut rt = SequenceFeatures::default();
        b.build(
            seqs.realtime.iter(),
            request,
            |i| codes_of(i).is_some(),
            &mut rt,
        );
        let oldest = rt.times_ms.last().copied().unwrap_or(i64::MAX);
        // (item, time, part, index in part)
        let mut ll = Vec::new();
        for i in 0..seqs.lifelong.len() {
            let t = seqs.lifelong.timestamps_ms[i];
            let item = seqs.lifelong.item_ids[i];
            if t < oldest && t < request && b.lifelong_mask(&seqs.lifelong, i).0 != 0 && item < 20 {
                ll.push((item, t));
            }
        }
        let rtv: Vec<(ItemId, i64)> = rt
            .item_ids
            .iter()
            .copied()
            .zip(rt.times_ms.iter().copied())
            .collect();
        let imp: Vec<(ItemId, i64)> = seqs
            .impressions
            .iter()
            .filter(|a| a.timestamp_ms < request && a.item_id < 20)
            .map(|a| (a.item_id, a.timestamp_ms))
            .collect();
        let keep = cfg.rt_keep.min(rtv.len());
        cands
            .chunks_exact(DIM)
            .map(|c| {
                let top = |xs: &[(ItemId, i64)], k: usize, part: TokenPart, base: usize| {
                    let mut s: Vec<(f32, usize)> = xs
                        .iter()
                        .enumerate()
                        .map(|(i, &(item, _))| {
                            let (code, scale) = codes_of(item).expect("row");
                            let dot: i32 = code
                                .iter()
                                .zip(c)
                                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                                .sum();
                            (dot as f32 * scale, i)
                        })
                        .collect();
                    s.sort_by(|a, b| b.0.partial_cmp(&a.0).expect("finite").then(a.1.cmp(&b.1)));
                    s.into_iter()
                        .take(k)
                        .map(|(_, i)| (xs[i].0, xs[i].1, part, base + i))
                        .collect::<Vec<_>>()
                };
                let mut all = top(&ll, cfg.k_lifelong, TokenPart::Lifelong, 0);
                all.extend(
                    rtv[..keep]
                        .iter()
                        .enumerate()
                        .map(|(i, &(it, t))| (it, t, TokenPart::Realtime, i)),
                );
                all.extend(top(&rtv[keep..], cfg.k_realtime, TokenPart::Realtime, keep));
                all.extend(top(&imp, cfg.k_impression, TokenPart::Impression, 0));
                let rank = |p: TokenPart| p as usize;
                all.sort_by(|a, b| (a.1, rank(a.2)).cmp(&(b.1, rank(b.2))).then(b.3.cmp(&a.3)));
                all.into_iter().map(|(i, t, p, _)| (i, t, p)).collect()
            })
            .collect()
    }

    fn action(item: u64, t: u16, ms: i64) -> transact_seq::Action {
        transact_seq::Action {
            item_id: item,
            action_type: ActionType(t),
            timestamp_ms: ms,
            surface: Surface((item % 3) as u16),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn selection_matches_its_definition(
            ll in proptest::collection::vec((0u64..24, 1u64..16, 0i64..40), 0..30),
            rt in proptest::collection::vec((0u64..24, 1u16..5, 0i64..40), 0..20),
            imp in proptest::collection::vec((0u64..24, 0i64..40), 0..20),
            cands in proptest::collection::vec(-2i8..=2, DIM..4 * DIM),
            request in 0i64..45,
            ks in (0usize..4, 0usize..5, 0usize..4, 0usize..4),
        ) {
            let mut seqs = UserSequences::default();
            let mut ll = ll;
            ll.sort_by_key(|x| std::cmp::Reverse(x.2));
            for (item, mask, t) in ll {
                seqs.lifelong.item_ids.push(item);
                seqs.lifelong.action_masks.push(mask << 1);
                seqs.lifelong.timestamps_ms.push(t);
                seqs.lifelong.surfaces.push((item % 3) as u16);
            }
            let mut rt = rt;
            rt.sort_by_key(|x| std::cmp::Reverse(x.2));
            let mut buf = SequenceBuf::default();
            for (item, ty, t) in rt {
                buf.push(&action(item, ty, t));
            }
            seqs.realtime = buf;
            let mut imp = imp;
            imp.sort_by_key(|x| std::cmp::Reverse(x.1));
            let mut buf = SequenceBuf::default();
            for (item, t) in imp {
                buf.push(&action(item, ActionType::IMPRESSION.0, t));
            }
            seqs.impressions = buf;
            let cands = &cands[..cands.len() / DIM * DIM];
            let cfg = FeatureConfig {
                lifelong: Some(LifelongConfig {
                    rt_keep: ks.0.max(1),
                    k_lifelong: ks.1,
                    k_realtime: ks.2,
                    k_impression: ks.3,
                    num_surfaces: 2,
                    ..LifelongConfig::default()
                }),
                ..FeatureConfig::new(6)
            };
            let b = FeatureBuilder::new(cfg).expect("config");
            let t = table();
            let mut out = SelectedTokens::default();
            let mut scratch = SelectScratch::default();
            b.select(
                &seqs,
                request,
                |i| t.get(i as usize).map(|(c, s)| (&c[..], *s)),
                cands,
                DIM,
                &mut scratch,
                &mut out,
            )
            .expect("select");
            let want = naive(&b, &seqs, request, cands);
            prop_assert_eq!(out.candidates(), want.len());
            for (c, w) in want.iter().enumerate() {
                let got: Vec<(ItemId, i64, TokenPart)> = out
                    .row(c)
                    .iter()
                    .map(|&p| {
                        let p = p as usize;
                        (out.item_ids[p], out.times_ms[p], out.parts[p])
                    })
                    .collect();
                prop_assert_eq!(&got, w);
                for &p in out.row(c) {
                    prop_assert!(out.surfaces[p as usize] < 2);
                }
            }
        }
    }

    #[test]
    fn masks_follow_the_vocabulary_and_rows_expand() {
        let b = FeatureBuilder::new(FeatureConfig::lifelong(4)).expect("config");
        // Vocabulary: repin 1, click 2, hide 3, impression 4 → bits 0..3.
        assert_eq!(b.vocab_bit(ActionType::CLICK.0), 0b10);
        assert_eq!(b.vocab_bit(9), 0);
        let mut seqs = UserSequences::default();
        seqs.lifelong.item_ids.extend([3, 4]);
        // Item 3: repin + click (+ unknown type 9); item 4: unknown type only.
        seqs.lifelong.action_masks.extend([0b10_0000_0110, 1 << 9]);
        seqs.lifelong.timestamps_ms.extend([20, 10]);
        seqs.lifelong.surfaces.extend([1, 0]);
        seqs.impressions
            .push(&action(5, ActionType::IMPRESSION.0, 30));
        let t = table();
        let mut out = SelectedTokens::default();
        b.select(
            &seqs,
            100,
            |i| t.get(i as usize).map(|(c, s)| (&c[..], *s)),
            &[1, 0, 0, 0],
            DIM,
            &mut SelectScratch::default(),
            &mut out,
        )
        .expect("select");
        assert_eq!(out.item_ids, [3, 5]);
        assert_eq!(out.action_masks, [0b11, 0b1000]);
        assert_eq!(out.unknown_actions, 1);
        assert_eq!(out.row(0), [0, 1]);
        let (mut e, mut m, mut s) = (Vec::new(), Vec::new(), Vec::new());
        out.expand(&mut e, &mut m, &mut s);
        assert_eq!(e.len(), out.slots * DIM);
        let (c3, s3) = codes_of(3).expect("row");
        assert_eq!(e[0], f32::from(c3[0]) * s3 / 127.0);
        assert_eq!(&m[..3], [0b11, 0b1000, 0]);
        let no_v2 = FeatureBuilder::new(FeatureConfig::new(4)).expect("config");
        let err = no_v2
            .select(
                &seqs,
                100,
                |_| None,
                &[0; DIM],
                DIM,
                &mut SelectScratch::default(),
                &mut out,
            )
            .expect_err("no lifelong part");
        assert!(err.to_string().contains("lifelong"), "{err}");
    }
}
