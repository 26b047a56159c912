//! The error type of this crate.

use transact_embed::EmbedError;
use transact_model::ModelError;
use transact_seq::{SeqError, UserId};

/// Everything that can go wrong ranking one request.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    /// The request has no candidates.
    #[error("user {user}: the request has no candidates")]
    NoCandidates {
        /// The requesting user.
        user: UserId,
    },
    /// The request has more candidates than the ranker accepts.
    #[error("user {user}: {count} candidates is more than the limit of {max}")]
    TooManyCandidates {
        /// The requesting user.
        user: UserId,
        /// Candidates in the request.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// A candidate's embedding has the wrong width.
    #[error(
        "candidate {index} (item {item}): embedding has {got} values, the model reads {expected}"
    )]
    CandidateDimension {
        /// Position in the request.
        index: usize,
        /// The candidate's item id.
        item: u64,
        /// The model's item width.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// A candidate's embedding holds NaN or infinity.
    #[error("candidate {index} (item {item}): embedding value {value_index} is not finite")]
    CandidateNonFinite {
        /// Position in the request.
        index: usize,
        /// The candidate's item id.
        item: u64,
        /// Index of the first bad value.
        value_index: usize,
    },
    /// A candidate id is not in the item table (and the table has no fallback).
    #[error("candidate {index}: {source}")]
    UnknownCandidate {
        /// Position in the request.
        index: usize,
        /// The lookup error (names the item id).
        #[source]
        source: EmbedError,
    },
    /// The request carries a user embedding, but the bundle derives the
    /// user feature from the user's history.
    #[error(
        "user {user}: user_embedding given, but this bundle derives the user feature from the history"
    )]
    UserFeatureGiven {
        /// The requesting user.
        user: UserId,
    },
    /// The bundle's parts disagree.
    #[error(transparent)]
    Bundle(#[from] crate::BundleError),
    /// The ranker's configuration does not fit its model.
    #[error("ranker configuration: {0}")]
    Config(String),
    /// The sequence store failed.
    #[error(transparent)]
    Store(#[from] SeqError),
    /// The model rejected the input or failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An item table operation failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The feature logger failed, under [`crate::OnLogError::FailRank`].
    #[error("{0}")]
    FeatureLog(String),
}
