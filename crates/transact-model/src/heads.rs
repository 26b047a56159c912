//! Ranking heads (placeholder: being written).
/// The heads.
pub struct RankingHeads;
