//! The lifelong-history cases of `transact bench cpu` (TransAct V2's store
//! read, the two ways of getting its int8 embeddings, and the
//! nearest-neighbour selection over them), shared with the criterion
//! benches.

use std::collections::VecDeque;

use transact_embed::select::{SelectIsa, SelectScratch, select_nearest_i8};
use transact_embed::{EmbedError, INT8_GLOBAL_SCALE, ItemTable, Precision};
use transact_seq::{
    Action, ActionType, EmbeddedStore, SeqError, SequenceLimits, SequenceStore, StoreConfig,
    Surface, UserSequences,
};

/// Lifelong tokens of the user in these cases.
pub const LIFELONG: usize = 16_384;
/// Realtime actions a V2 request reads.
pub const REALTIME: usize = 256;
/// Impressions a V2 request reads.
pub const IMPRESSIONS: usize = 1_024;
/// Width of the int8 item embeddings (model-spec §1).
pub const DIM: usize = 32;
/// Items in the int8 table the embeddings are gathered from.
pub const TABLE_ITEMS: u64 = 1_000_000;

/// The ids of the user's history, in a spread over the table.
fn item(i: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) % TABLE_ITEMS
}

/// A V2 request's store read: one user with 16,384 lifelong tokens (repins
/// and clicks), 4,096 impressions and a full realtime sequence; reads every
/// lifelong token, the newest 256 realtime actions and the newest 1,024
/// impressions into warm buffers.
pub struct LifelongReadCase {
    store: EmbeddedStore,
    out: UserSequences,
}

impl LifelongReadCase {
    /// Name used in reports.
    pub const NAME: &'static str = "store-read-v2-16k";
    /// What one run reads.
    pub const LIMITS: SequenceLimits = SequenceLimits {
        lifelong: LIFELONG,
        realtime: REALTIME,
        impressions: IMPRESSIONS,
        at_or_before_ms: None,
    };

    /// An in-memory store holding the user.
    pub fn new() -> Result<Self, SeqError> {
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        let now = 1_700_000_000_000i64;
        let n = LIFELONG + 4_096;
        let actions: Vec<Action> = (0..n as u64)
            .map(|i| Action {
                item_id: item(i),
                // Every fifth an impression; repins and clicks otherwise.
                action_type: match i % 5 {
                    0 => ActionType::IMPRESSION,
                    k => ActionType((k % 2 + 1) as u16),
                },
                timestamp_ms: now - (n as i64 - i as i64) * 1_000,
                surface: Surface((i % 4) as u16),
            })
            .collect();
        store.append(1, &actions)?;
        let mut out = UserSequences::default();
        store.read_sequences(1, &Self::LIMITS, &mut out)?;
        Ok(Self { store, out })
    }

    /// One read; returns the number of lifelong tokens read.
    pub fn run(&mut self) -> Result<usize, SeqError> {
        self.store.read_sequences(1, &Self::LIMITS, &mut self.out)?;
        Ok(self.out.lifelong.len())
    }

    /// The sequences the last run read.
    pub fn sequences(&self) -> &UserSequences {
        &self.out
    }
}

/// The chosen layout's second half: the int8 codes of a V2 read
/// (16,384 + 256 + 1,024 ids) gathered from a 1,000,000-item int8 table into
/// one contiguous block, as selection needs them.
pub struct GatherI8Case {
    table: ItemTable,
    ids: Vec<u64>,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl GatherI8Case {
    /// Name used in reports.
    pub const NAME: &'static str = "gather-i8-v2-16k";
    /// Ids per run.
    pub const LEN: usize = LIFELONG + REALTIME + IMPRESSIONS;

    /// Builds the table (int8, global scale) and the ids.
    pub fn new() -> Result<Self, EmbedError> {
        let mut table = ItemTable::new(DIM, Precision::Int8Global)?;
        table.try_reserve(TABLE_ITEMS as usize)?;
        let mut row = [0.0f32; DIM];
        for id in 0..TABLE_ITEMS {
            for (k, v) in row.iter_mut().enumerate() {
                *v = ((id as usize * 7 + k * 13) % 101) as f32 / 101.0 - 0.5;
            }
            table.insert(id, &row)?;
        }
        let ids: Vec<u64> = (0..Self::LEN as u64).map(item).collect();
        Ok(Self {
            table,
            codes: vec![0; Self::LEN * DIM],
            scales: vec![0.0; Self::LEN],
            ids,
        })
    }

    /// One gather; returns how many ids had no row.
    pub fn run(&mut self) -> Result<usize, EmbedError> {
        self.table
            .gather_i8(&self.ids, &mut self.codes, &mut self.scales)
    }

    /// Heap bytes of the table.
    pub fn table_bytes(&self) -> usize {
        self.table.bytes()
    }
}

/// The layout not chosen, measured for comparison: the int8 codes stored
/// with each lifelong token, so a read copies a 32-byte column out of the
/// ring as well (what the read costs on top of [`LifelongReadCase`]).
pub struct InlineI8Case {
    column: VecDeque<[i8; DIM]>,
    out: Vec<[i8; DIM]>,
}

impl InlineI8Case {
    /// Name used in reports.
    pub const NAME: &'static str = "inline-i8-16k";
    /// Tokens per run.
    pub const LEN: usize = LIFELONG;

    /// A full ring of codes, wrapped like a ring that has dropped its oldest.
    pub fn new() -> Self {
        let mut column: VecDeque<[i8; DIM]> = VecDeque::with_capacity(Self::LEN);
        for i in 0..(Self::LEN + Self::LEN / 3) {
            if column.len() == Self::LEN {
                column.pop_back();
            }
            column.push_front([(i % 127) as i8; DIM]);
        }
        Self {
            column,
            out: Vec::with_capacity(Self::LEN),
        }
    }

    /// One copy of the column; returns the tokens copied.
    pub fn run(&mut self) -> usize {
        self.out.clear();
        let (front, back) = self.column.as_slices();
        self.out.extend_from_slice(front);
        self.out.extend_from_slice(back);
        self.out.len()
    }
}

impl Default for InlineI8Case {
    fn default() -> Self {
        Self::new()
    }
}

/// TransAct V2's nearest-neighbour selection: one user's 16,384 int8 codes
/// (d = 32) against 256 candidates, the top 96 tokens per candidate
/// (`transact_embed::select`, both cores).
pub struct NnCase {
    history: Vec<i8>,
    scales: Vec<f32>,
    candidates: Vec<i8>,
    scratch: SelectScratch,
    out: Vec<u32>,
}

impl NnCase {
    /// Name used in reports.
    pub const NAME: &'static str = "nn-16k-x256-top96";
    /// Candidates per run.
    pub const CANDIDATES: usize = 256;
    /// Tokens kept per candidate.
    pub const K: usize = 96;

    /// Random codes (a fixed xorshift stream), global scale. The kernel is
    /// the fastest this CPU has, or the one named by `TRANSACT_SELECT_ISA`
    /// (`avx512vnni`, `avx2`, `portable`) to measure a slower path.
    pub fn new() -> Self {
        Self::with_candidates(Self::CANDIDATES)
    }

    /// The same history with `candidates` candidates (the first 256 are
    /// those of [`NnCase::new`]).
    pub fn with_candidates(candidates: usize) -> Self {
        let isa = std::env::var("TRANSACT_SELECT_ISA")
            .ok()
            .and_then(|name| SelectIsa::from_name(&name))
            .unwrap_or_default();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut code = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 255) as i64 - 127) as i8
        };
        let history: Vec<i8> = (0..LIFELONG * DIM).map(|_| code()).collect();
        let codes: Vec<i8> = (0..candidates * DIM).map(|_| code()).collect();
        Self {
            history,
            scales: vec![INT8_GLOBAL_SCALE; LIFELONG],
            candidates: codes,
            scratch: SelectScratch::with_isa(isa),
            out: vec![0; candidates * Self::K],
        }
    }

    /// The kernel that runs.
    pub fn isa(&self) -> SelectIsa {
        self.scratch.isa()
    }

    /// History codes `[16,384 × 32]`, their scales, candidate codes
    /// `[b × 32]`.
    pub fn inputs(&self) -> (&[i8], &[f32], &[i8]) {
        (&self.history, &self.scales, &self.candidates)
    }

    /// Codes per token.
    pub fn dim(&self) -> usize {
        DIM
    }

    /// The indices of the last [`NnCase::run`], `[b × K]`.
    pub fn output(&self) -> &[u32] {
        &self.out
    }

    /// One selection for every candidate.
    pub fn run(&mut self) -> Result<(), EmbedError> {
        select_nearest_i8(
            &self.history,
            &self.scales,
            &self.candidates,
            DIM,
            Self::K,
            &mut self.scratch,
            &mut self.out,
        )
    }
}

impl Default for NnCase {
    fn default() -> Self {
        Self::new()
    }
}
