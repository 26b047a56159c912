//! The whole ranking model (placeholder: being written).
/// The ranking model.
pub struct RankingModel;
