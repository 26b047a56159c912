//! TransAct V2 examples: each example's selected tokens, built by the
//! serving contract ([`transact_features::FeatureBuilder::select`]) from
//! the user's sequences as a store configured by [`replay_store_config`]
//! would have held them at the request ([`transact_seq::SequenceReplay`]).
//!
//! Token and candidate embeddings are the int8 codes of the dataset's
//! pretrained embeddings ([`token_table`], quantised per row); the export
//! ships the same table (keyed by raw ids) in the serving bundle, so the
//! ranker's tokens are the trainer's.

use transact_embed::{ItemTable, Precision};
use transact_features::{FeatureBuilder, SelectScratch, SelectedTokens, TokenPart};
use transact_seq::{Action, SequenceLimits, SequenceReplay, StoreConfig, UserSequences};

use crate::batch::Batch;
use crate::data::Dataset;

/// The store configuration training replays histories with: the
/// [`StoreConfig`] defaults (lifelong 16,384 tokens, impressions 4,096,
/// realtime 1,024 actions, no multi-hot merging). Serve a V2 model from a
/// store configured alike.
pub fn replay_store_config() -> StoreConfig {
    StoreConfig::default()
}

/// The int8 token table of a dataset, keyed by item index: its pretrained
/// embeddings quantised per row. Fails without pretrained embeddings.
pub fn token_table(data: &Dataset, keys: impl Fn(usize) -> u64) -> Result<ItemTable, String> {
    let e = data.items.embeddings.as_ref().ok_or_else(|| {
        format!(
            "TransAct V2 selects tokens by their int8 item embeddings, and {} has no pretrained \
             embeddings",
            data.name
        )
    })?;
    let mut t = ItemTable::new(e.dim, Precision::Int8PerRow).map_err(|x| x.to_string())?;
    t.try_reserve(data.items.count).map_err(|x| x.to_string())?;
    for (i, row) in e.data.chunks_exact(e.dim).enumerate() {
        t.insert(keys(i), row).map_err(|x| x.to_string())?;
    }
    Ok(t)
}

/// What the featurizer keeps for V2 examples.
pub(crate) struct V2Features {
    /// Keyed by item index.
    pub(crate) tokens: ItemTable,
    pub(crate) store: StoreConfig,
    /// Tokens embed the item table's rows (`v2_rows`), not the codes.
    item_rows: bool,
    /// The item table's zero padding row.
    pad_row: u32,
}

/// Reusable buffers of one fill.
#[derive(Default)]
pub(crate) struct V2Scratch {
    seqs: UserSequences,
    select: SelectScratch,
    sel: SelectedTokens,
    cand: Vec<i8>,
    items: Vec<f32>,
    masks: Vec<u32>,
    surfaces: Vec<u16>,
}

impl V2Features {
    pub(crate) fn new(data: &Dataset, item_rows: bool, pad_row: u32) -> Result<Self, String> {
        Ok(Self {
            tokens: token_table(data, |i| i as u64)?,
            store: replay_store_config(),
            item_rows,
            pad_row,
        })
    }

    /// Slots per example.
    pub(crate) fn slots(builder: &FeatureBuilder) -> usize {
        builder
            .config()
            .lifelong
            .as_ref()
            .map_or(0, |l| l.max_tokens())
    }

    /// Prepares `batch`'s V2 fields for `n` examples.
    pub(crate) fn reset(&self, builder: &FeatureBuilder, n: usize, batch: &mut Batch) {
        let s = Self::slots(builder);
        let di = self.tokens.dim();
        batch.v2_seq = s;
        batch.v2_lens.clear();
        batch.v2_lens.resize(n, 0);
        batch.v2_items.clear();
        batch.v2_items.resize(n * s * di, 0.0);
        batch.v2_masks.clear();
        batch.v2_masks.resize(n * s, 0);
        batch.v2_surfaces.clear();
        batch.v2_surfaces.resize(n * s, 0);
        batch.v2_cand.clear();
        batch.v2_cand.resize(n * di, 0.0);
        batch.v2_rows.clear();
        if self.item_rows {
            batch.v2_rows.resize(n * s, self.pad_row);
        }
    }

    /// Fills examples `first..first + candidates.len()` of `batch` (after
    /// [`V2Features::reset`]): the tokens selected for each of
    /// `candidates` (item indices) at a request at `request_ms` of a user
    /// whose history up to the request is `history` (oldest first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill(
        &self,
        builder: &FeatureBuilder,
        history: &[Action],
        request_ms: i64,
        candidates: &[u32],
        first: usize,
        batch: &mut Batch,
        sc: &mut V2Scratch,
    ) -> Result<(), String> {
        let di = self.tokens.dim();
        let mut replay = SequenceReplay::new(self.store.clone());
        for a in history {
            replay.push(a);
        }
        let limits = SequenceLimits {
            at_or_before_ms: Some(builder.config().newest_visible_ms(request_ms)),
            ..SequenceLimits::ALL
        };
        replay.read(&limits, &mut sc.seqs);
        sc.cand.clear();
        for &c in candidates {
            match self.tokens.row_i8(u64::from(c)) {
                Some((codes, _)) => sc.cand.extend_from_slice(codes),
                None => sc.cand.resize(sc.cand.len() + di, 0),
            }
        }
        builder
            .select(
                &sc.seqs,
                request_ms,
                |item| self.tokens.row_i8(item),
                &sc.cand,
                di,
                &mut sc.select,
                &mut sc.sel,
            )
            .map_err(|e| e.to_string())?;
        sc.sel
            .expand(&mut sc.items, &mut sc.masks, &mut sc.surfaces);
        let s = batch.v2_seq;
        let n = candidates.len();
        batch.v2_lens[first..first + n].copy_from_slice(&sc.sel.lens);
        batch.v2_items[first * s * di..(first + n) * s * di].copy_from_slice(&sc.items);
        batch.v2_masks[first * s..(first + n) * s].copy_from_slice(&sc.masks);
        batch.v2_surfaces[first * s..(first + n) * s].copy_from_slice(&sc.surfaces);
        if self.item_rows {
            for c in 0..n {
                let rows = &mut batch.v2_rows[(first + c) * s..(first + c + 1) * s];
                for (r, &p) in rows.iter_mut().zip(sc.sel.row(c)) {
                    let item = sc.sel.item_ids[p as usize];
                    *r = u32::try_from(item)
                        .ok()
                        .filter(|&i| i < self.pad_row)
                        .unwrap_or(self.pad_row);
                }
            }
        }
        for (j, &c) in candidates.iter().enumerate() {
            let out = &mut batch.v2_cand[(first + j) * di..(first + j + 1) * di];
            match self.tokens.row_i8(u64::from(c)) {
                Some((codes, scale)) => transact_features::dequantize(codes, scale, out),
                None => out.fill(0.0),
            }
        }
        Ok(())
    }

    /// The realtime tokens before the newest of the first candidate of the
    /// last [`V2Features::fill`], as `(slot, time ms, item index)`: the
    /// positions that predict a next action at every position.
    pub(crate) fn realtime_slots(sc: &V2Scratch) -> impl Iterator<Item = (usize, i64, u64)> + '_ {
        let sel = &sc.sel;
        let row: &[u32] = if sel.candidates() > 0 {
            sel.row(0)
        } else {
            &[]
        };
        let inner = row.len().saturating_sub(1);
        row[..inner]
            .iter()
            .enumerate()
            .filter(|&(_, &p)| sel.parts[p as usize] == TokenPart::Realtime)
            .map(|(t, &p)| (t, sel.times_ms[p as usize], sel.item_ids[p as usize]))
    }

    /// Fills example `b` of `batch` (after [`V2Features::reset`]) from
    /// logged tokens (checked against the batch's shapes): dequantised as
    /// [`transact_features::SelectedTokens::expand`] does, so the example
    /// equals the one the selection would have built. With item-table
    /// tokens, each token's row is its item's index (`item_index` maps the
    /// logged store key; the padding row for an item the dataset lacks, as
    /// the ranker embeds zeros for an item without a row).
    pub(crate) fn fill_logged(
        &self,
        t: &super::LoggedTokens<'_>,
        item_index: impl Fn(u64) -> Option<u32>,
        b: usize,
        batch: &mut Batch,
    ) {
        let (s, di) = (batch.v2_seq, t.candidate_codes.len());
        batch.v2_lens[b] = t.len();
        for (j, (&scale, codes)) in t.scales.iter().zip(t.codes.chunks_exact(di)).enumerate() {
            let slot = b * s + j;
            transact_features::dequantize(
                codes,
                scale,
                &mut batch.v2_items[slot * di..(slot + 1) * di],
            );
            batch.v2_masks[slot] = t.action_masks[j];
            batch.v2_surfaces[slot] = t.surfaces[j];
            if self.item_rows {
                batch.v2_rows[slot] = t
                    .item_ids
                    .get(j)
                    .and_then(|&key| item_index(key))
                    .filter(|&i| i < self.pad_row)
                    .unwrap_or(self.pad_row);
            }
        }
        transact_features::dequantize(
            t.candidate_codes,
            t.candidate_scale,
            &mut batch.v2_cand[b * di..(b + 1) * di],
        );
    }
}
