//! The JSON wire format of ranking and action requests, shared by the
//! server (`POST /v1/rank`, `POST /v1/actions`) and `transact rank`'s JSON
//! lines.
//!
//! Ids are the log's raw ids, as numbers or strings (`7` and `"7"` are the
//! same id); [`RawId::key`] maps them to the store's and item table's keys
//! by the feature contract's [`transact_features::raw_id_key`].
//!
//! Parsing is strict: unknown fields are refused, and every error names
//! the field (a JSON path such as `candidates[3].embedding`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use transact_features::raw_id_key;
use transact_rank::{Candidate, RankRequest, RankResponse};
use transact_seq::{Action, ActionType, Surface};

/// A raw id as a log writes it: a non-negative integer or a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawId {
    /// A numeric id.
    Number(u64),
    /// A textual id.
    Text(String),
}

impl RawId {
    /// The store and item-table key of this id ([`raw_id_key`] of its text).
    pub fn key(&self) -> u64 {
        match self {
            RawId::Number(n) => raw_id_key(&n.to_string()),
            RawId::Text(s) => raw_id_key(s),
        }
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawId::Number(n) => write!(f, "{n}"),
            RawId::Text(s) => f.write_str(s),
        }
    }
}

struct RawIdVisitor;

impl Visitor<'_> for RawIdVisitor {
    type Value = RawId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a raw id: a non-negative integer or a non-empty string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawId, E> {
        Ok(RawId::Number(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawId, E> {
        u64::try_from(v)
            .map(RawId::Number)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawId, E> {
        if v.is_empty() {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        Ok(RawId::Text(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for RawId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawIdVisitor)
    }
}

/// A candidate with its embedding given inline (e.g. an item newer than
/// the bundle's item table).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InlineCandidate {
    /// The item's raw id.
    pub id: RawId,
    /// Its embedding, of the model's item width.
    pub embedding: Vec<f32>,
}

/// A candidate: a raw id looked up in the item table, or an id with an
/// inline embedding (`{"id": …, "embedding": […]}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WireCandidate {
    /// Looked up by id.
    Id(RawId),
    /// Scored with the given embedding.
    Inline(InlineCandidate),
}

impl WireCandidate {
    /// The candidate's raw id.
    pub fn id(&self) -> &RawId {
        match self {
            WireCandidate::Id(id) => id,
            WireCandidate::Inline(c) => &c.id,
        }
    }
}

struct CandidateVisitor;

impl<'de> Visitor<'de> for CandidateVisitor {
    type Value = WireCandidate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a candidate: a raw id, or an object {\"id\", \"embedding\"}")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireCandidate, E> {
        RawIdVisitor.visit_u64(v).map(WireCandidate::Id)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireCandidate, E> {
        RawIdVisitor.visit_i64(v).map(WireCandidate::Id)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<WireCandidate, E> {
        RawIdVisitor.visit_str(v).map(WireCandidate::Id)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WireCandidate, A::Error> {
        InlineCandidate::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(WireCandidate::Inline)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<WireCandidate, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
}

impl<'de> Deserialize<'de> for WireCandidate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CandidateVisitor)
    }
}

/// The body of `POST /v1/rank` (and one line of `transact rank`'s stdin).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RankBody {
    /// The user's raw id (an unknown user ranks with an empty sequence).
    pub user: RawId,
    /// Request time, ms since the Unix epoch: the sequence holds the
    /// user's actions before it (the bundle's time rule).
    pub time_ms: i64,
    /// The candidates to rank.
    pub candidates: Vec<WireCandidate>,
    /// The user embedding feature, when the model reads one that the
    /// bundle does not derive from the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_embedding: Option<Vec<f32>>,
    /// The context feature vector, when the model reads one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<f32>>,
    /// Answer only the best this many candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
}

impl RankBody {
    /// The ranker's request for this body.
    pub fn to_request(&self) -> RankRequest {
        RankRequest {
            user: self.user.key(),
            request_time_ms: self.time_ms,
            candidates: self
                .candidates
                .iter()
                .map(|c| match c {
                    WireCandidate::Id(id) => Candidate::Item(id.key()),
                    WireCandidate::Inline(c) => Candidate::Embedding {
                        item_id: c.id.key(),
                        embedding: c.embedding.clone(),
                    },
                })
                .collect(),
            user_embedding: self.user_embedding.clone(),
            context: self.context.clone(),
        }
    }
}

/// One ranked candidate of a [`RankAnswer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedItem {
    /// The candidate's raw id, as the request gave it.
    pub item: RawId,
    /// `Σ_h v_h · p_h`, the score it is ranked by.
    pub utility: f32,
    /// `p_h` by head name.
    pub probabilities: BTreeMap<String, f32>,
}

/// The answer to a [`RankBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankAnswer {
    /// The user, as the request gave it.
    pub user: RawId,
    /// The request time.
    pub time_ms: i64,
    /// The version of the bundle that scored it.
    pub bundle: String,
    /// The backend that scored it (`cpu` or `gpu: <adapter>`).
    pub backend: String,
    /// Sequence positions the model read.
    pub sequence_len: usize,
    /// Visible actions whose type is outside the model's vocabulary.
    pub unknown_actions: usize,
    /// Sequence actions on items missing from the item table.
    pub unknown_items: usize,
    /// Candidates, best first.
    pub ranked: Vec<RankedItem>,
}

impl RankAnswer {
    /// The answer to `body` from the ranker's `resp` (`top` caps the list
    /// beyond the body's own `top`).
    pub fn new(body: &RankBody, resp: &RankResponse, top: Option<usize>) -> Self {
        let limit = body
            .top
            .unwrap_or(usize::MAX)
            .min(top.unwrap_or(usize::MAX));
        let ranked = resp
            .ranked
            .iter()
            .take(limit)
            .filter_map(|r| {
                let item = body.candidates.get(r.request_index)?.id().clone();
                let probabilities = resp
                    .heads
                    .iter()
                    .cloned()
                    .zip(resp.probabilities(r).iter().copied())
                    .collect();
                Some(RankedItem {
                    item,
                    utility: r.utility,
                    probabilities,
                })
            })
            .collect();
        Self {
            user: body.user.clone(),
            time_ms: body.time_ms,
            bundle: resp.bundle_version.to_string(),
            backend: resp.backend.to_string(),
            sequence_len: resp.sequence_len,
            unknown_actions: resp.unknown_actions,
            unknown_items: resp.unknown_items,
            ranked,
        }
    }
}

/// One action of `POST /v1/actions`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WireAction {
    /// The user's raw id.
    pub user: RawId,
    /// The item's raw id.
    pub item: RawId,
    /// The raw action type id (e.g. 1 repin, 2 click, 3 hide, 4 impression).
    pub action: u16,
    /// When, ms since the Unix epoch.
    pub time_ms: i64,
    /// Where (raw surface id), 0 when absent.
    #[serde(default)]
    pub surface: u16,
}

impl WireAction {
    /// The store's action (keys from raw ids).
    pub fn to_action(&self) -> Action {
        Action {
            item_id: self.item.key(),
            action_type: ActionType(self.action),
            timestamp_ms: self.time_ms,
            surface: Surface(self.surface),
        }
    }
}

/// The body of `POST /v1/actions`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsBody {
    /// The actions, in the order each user's are appended.
    pub actions: Vec<WireAction>,
}

/// The answer to an [`ActionsBody`]: everything in it is durable under
/// the store's sync policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionsAnswer {
    /// Actions appended.
    pub appended: usize,
    /// Distinct users they were for.
    pub users: usize,
}

/// A JSON body that failed to parse: which field, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The JSON path of the bad field (`.` for the body itself).
    pub field: String,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses `bytes` as a `T`, naming the field of the first error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        // serde_json appends "at line L column C"; keep it, it locates
        // the error in a multi-line body.
        ParseError {
            field,
            message: inner.to_string(),
        }
    })?;
    de.end().map_err(|e| ParseError {
        field: ".".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// The first non-finite value of `v`, as `(index, value)`.
pub fn first_non_finite(v: &[f32]) -> Option<(usize, f32)> {
    v.iter().copied().enumerate().find(|(_, x)| !x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbers_or_strings_and_the_same_key() {
        let b: RankBody =
            parse(br#"{"user": 7, "time_ms": 5, "candidates": ["7", 8, {"id": "n", "embedding": [1.0]}]}"#)
                .expect("parses");
        assert_eq!(b.user.key(), RawId::Text("7".into()).key());
        assert_eq!(b.candidates[0].id().key(), b.user.key());
        let req = b.to_request();
        assert_eq!(req.candidates.len(), 3);
        assert!(matches!(req.candidates[2], Candidate::Embedding { .. }));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<RankBody>(
            br#"{"user": 7, "time_ms": 5, "candidates": [1, {"id": 2, "embeding": []}]}"#,
        )
        .expect_err("unknown field");
        assert_eq!(e.field, "candidates[1].embeding");
        assert!(e.message.contains("embeding"), "{e}");
        let e = parse::<RankBody>(br#"{"user": -3, "time_ms": 5, "candidates": []}"#)
            .expect_err("negative id");
        assert_eq!(e.field, "user");
        let e = parse::<RankBody>(br#"{"user": 1, "time_ms": 5, "candidates": [], "extra": 1}"#)
            .expect_err("unknown top-level field");
        assert!(e.message.contains("extra"), "{e}");
        let e = parse::<ActionsBody>(
            br#"{"actions": [{"user": 1, "item": 2, "action": 70000, "time_ms": 1}]}"#,
        )
        .expect_err("type out of range");
        assert_eq!(e.field, "actions[0].action");
        let e = parse::<RankBody>(br#"{"user": 1, "time_ms": 5, "candidates": []} trailing"#)
            .expect_err("trailing data");
        assert_eq!(e.field, ".");
    }

    #[test]
    fn an_overflowing_number_is_not_finite() {
        let b: RankBody = parse(
            br#"{"user": 1, "time_ms": 5, "candidates": [{"id": 1, "embedding": [0.5, 1e39]}]}"#,
        )
        .expect("parses");
        let WireCandidate::Inline(c) = &b.candidates[0] else {
            panic!("inline candidate");
        };
        assert_eq!(first_non_finite(&c.embedding).map(|(i, _)| i), Some(1));
    }
}
