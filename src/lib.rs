//! TransAct: sequence-aware ranking (placeholder facade).
pub use transact_embed as embed;
pub use transact_model as model;
pub use transact_rank as rank;
pub use transact_seq as seq;
