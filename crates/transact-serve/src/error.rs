//! Errors the server answers with: a status and a JSON body naming what
//! was wrong.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use transact_rank::RankError;
use transact_seq::SeqError;

use crate::wire::ParseError;

/// The JSON body of every error answer: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code: `invalid_request`, `body_too_large`,
    /// `too_many_candidates`, `too_many_actions`, `overloaded`, `timeout`,
    /// `store_unavailable`, `shutting_down`, `not_found`, `reload_failed`,
    /// `internal`.
    pub code: String,
    /// The JSON path of the field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A sentence for a person.
    pub message: String,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body's `code`.
    pub code: &'static str,
    /// The body's `field`.
    pub field: Option<String>,
    /// The body's `message`.
    pub message: String,
    /// Seconds for a `Retry-After` header (503s).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// A 4xx/5xx without a field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A 400 `invalid_request` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).with_field(field)
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds `Retry-After: s`.
    pub fn retry_after(mut self, s: u64) -> Self {
        self.retry_after_s = Some(s);
        self
    }

    /// A 503 for a request turned away at the door (the queue is full).
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry_after(1)
    }

    /// The answer to a store failure: input errors are 400s naming the
    /// action, everything else a 503 the client may retry.
    pub fn from_store(e: &SeqError, field: impl Into<String>) -> Self {
        match e {
            SeqError::UnknownActionType { .. }
            | SeqError::FutureTimestamp { .. }
            | SeqError::NegativeTimestamp { .. }
            | SeqError::BatchTooLarge { .. } => Self::invalid(field, e.to_string()),
            _ => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("sequence store: {e}"),
            )
            .retry_after(1),
        }
    }

    /// The answer to a ranking failure.
    pub fn from_rank(e: &RankError) -> Self {
        match e {
            RankError::NoCandidates { .. } => Self::invalid("candidates", e.to_string()),
            RankError::TooManyCandidates { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "too_many_candidates",
                e.to_string(),
            )
            .with_field("candidates"),
            RankError::CandidateDimension { index, .. }
            | RankError::CandidateNonFinite { index, .. } => {
                Self::invalid(format!("candidates[{index}].embedding"), e.to_string())
            }
            RankError::UnknownCandidate { index, .. } => {
                Self::invalid(format!("candidates[{index}]"), e.to_string())
            }
            RankError::UserFeatureGiven { .. } => Self::invalid("user_embedding", e.to_string()),
            RankError::Store(s) => Self::from_store(s, "user"),
            RankError::Model(transact_model::ModelError::BadInput { name, detail }) => {
                Self::invalid(name.clone(), detail.clone())
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{} {}: {field}: {}",
                self.status.as_u16(),
                self.code,
                self.message
            ),
            None => write!(
                f,
                "{} {}: {}",
                self.status.as_u16(),
                self.code,
                self.message
            ),
        }
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                field: self.field,
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
