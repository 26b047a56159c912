//! One mini-batch of training examples, as the network consumes it.
//!
//! An example is one (logged request, candidate) pair. Everything is already
//! resolved to table rows: the trainer maps item ids to rows of the item
//! table and action types to rows of the action table, applies the padding,
//! future and time-window masks, and looks up the per-head weights.

/// Marks "no item" in [`Batch::nal_pos`] and [`Batch::nal_neg`].
pub const NO_ITEM: u32 = u32::MAX;

/// A mini-batch of `len` examples over sequences of `seq_len` positions
/// (newest first).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Examples `B`.
    pub len: usize,
    /// Positions per sequence `S` (the model's `seq_len`).
    pub seq_len: usize,
    /// `B × S` item-table rows of the sequence actions (any row for padding).
    pub seq_items: Vec<u32>,
    /// `B × S` action-table rows (0 = padding; the row is `1 + rank` of the
    /// action id in the vocabulary, as in `VocabMode::Padded`).
    pub seq_actions: Vec<u32>,
    /// `B × S`: `true` where the position is masked (padding, in the future
    /// of the request, or inside the batch's random time window). Position 0
    /// of every example is never masked.
    pub seq_masked: Vec<bool>,
    /// `B` item-table rows of the candidates.
    pub cand_items: Vec<u32>,
    /// `B × user_dim` dense user features (empty when `user_dim` is 0).
    pub user_features: Vec<f32>,
    /// `B × H` labels in {0, 1}, one per head.
    pub labels: Vec<f32>,
    /// `B × H` per-head BCE weights `w_u · w_h` (label-weight matrix times
    /// the user weight); 0 drops the term.
    pub weights: Vec<f32>,
    /// `B × nal_positives` item rows of the user's next positive actions
    /// after the request (the Next Action Loss targets, oldest first),
    /// [`NO_ITEM`] where there is none.
    pub nal_pos: Vec<u32>,
    /// NAL targets per example (0 is read as 1).
    pub nal_positives: usize,
    /// Negatives per example for the Next Action Loss.
    pub nal_negatives: usize,
    /// `B × nal_negatives` item rows of impression negatives ([`NO_ITEM`]
    /// pads a short list). Empty for in-batch negatives.
    pub nal_neg: Vec<u32>,
    /// With the Next Action Loss at every position: `B × S` item rows, at
    /// position `q ≥ 1` the user's next positive after that action (before
    /// the request), [`NO_ITEM`] where there is none (position 0 uses
    /// [`Batch::nal_pos`]). Empty otherwise.
    pub nal_seq: Vec<u32>,
    /// With the Next Action Loss at every position and impression
    /// negatives: `B × S × nal_negatives` item rows, the impressions that
    /// followed each position's action. Empty otherwise.
    pub nal_seq_neg: Vec<u32>,
    /// TransAct V2: token slots per example (`r + k_LL + k_RT + k_imp`; 0
    /// for a V1 batch).
    pub v2_seq: usize,
    /// TransAct V2: `B` selected tokens per example (at most `v2_seq`).
    pub v2_lens: Vec<usize>,
    /// TransAct V2: `B × v2_seq × d_item` dequantised int8 item embeddings
    /// of the selected tokens, oldest first (zeros past the length).
    pub v2_items: Vec<f32>,
    /// TransAct V2: `B × v2_seq` multi-hot action fields.
    pub v2_masks: Vec<u32>,
    /// TransAct V2: `B × v2_seq` surfaces.
    pub v2_surfaces: Vec<u16>,
    /// TransAct V2: `B × d_item` the candidates' dequantised int8 embeddings
    /// (the `e_c` half of every token).
    pub v2_cand: Vec<f32>,
    /// TransAct V2 with tokens from the item table
    /// ([`crate::net::NetConfig::v2_item_tokens`]): `B × v2_seq` item-table
    /// rows of the tokens (the zero padding row past the length and for an
    /// item without a row); the candidates' half is [`Batch::cand_items`].
    /// Empty otherwise.
    pub v2_rows: Vec<u32>,
}

impl Batch {
    /// Heads `H`, from the label count (0 for an empty batch).
    pub fn heads(&self) -> usize {
        self.labels.len().checked_div(self.len).unwrap_or(0)
    }

    /// NAL targets per example: [`Batch::nal_positives`], at least 1.
    pub fn nal_per_example(&self) -> usize {
        self.nal_positives.max(1)
    }
}
