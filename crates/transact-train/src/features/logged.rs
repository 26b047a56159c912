//! TransAct V2 examples from a feature log: the tokens the ranker selected
//! and logged, instead of replaying each user's history.
//!
//! The trainer only defines what it needs from a log ([`V2TokenSource`]);
//! `transact-log` implements it over Parquet files. Labels and Next Action
//! Loss targets still come from the dataset's requests; a logged example
//! is matched to its request by (user key, request time, candidate key),
//! the keys being the store's ([`crate::serving::user_key`],
//! [`crate::serving::item_key`]).

use transact_features::TokenPart;

/// One logged (request, candidate): the candidate's selected tokens, oldest
/// first, as the ranker built them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoggedTokens<'a> {
    /// Per token, its item's store key ([`crate::serving::item_key`]).
    pub item_ids: &'a [u64],
    /// `[tokens × dim]` int8 item codes.
    pub codes: &'a [i8],
    /// Per token, its codes' scale (value = `code · scale / 127`).
    pub scales: &'a [f32],
    /// Per token, the multi-hot action field.
    pub action_masks: &'a [u32],
    /// Per token, the surface.
    pub surfaces: &'a [u16],
    /// Per token, its time, ms.
    pub times_ms: &'a [i64],
    /// Per token, its part's code ([`transact_features::TokenPart::code`]).
    pub parts: &'a [u8],
    /// The candidate's `dim` int8 codes.
    pub candidate_codes: &'a [i8],
    /// The candidate codes' scale.
    pub candidate_scale: f32,
    /// The dense user feature the model read, if any.
    pub user_feature: Option<&'a [f32]>,
}

impl LoggedTokens<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Whether the candidate has no token.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Checks the shapes against a contract of `dim`-wide codes and `slots`
    /// tokens per candidate.
    pub fn check(&self, dim: usize, slots: usize) -> Result<(), String> {
        let n = self.len();
        if n > slots {
            return Err(format!("{n} tokens, the contract has {slots} slots"));
        }
        if self.codes.len() != n * dim
            || self.item_ids.len() != n
            || self.action_masks.len() != n
            || self.surfaces.len() != n
            || self.times_ms.len() != n
            || self.parts.len() != n
            || self.candidate_codes.len() != dim
        {
            return Err(format!(
                "{n} tokens with {} item ids, {} codes, {} action masks, {} surfaces, {} times, \
                 {} parts and {} candidate codes (codes are {dim} wide)",
                self.item_ids.len(),
                self.codes.len(),
                self.action_masks.len(),
                self.surfaces.len(),
                self.times_ms.len(),
                self.parts.len(),
                self.candidate_codes.len()
            ));
        }
        if let Some(i) = self
            .parts
            .iter()
            .position(|&c| TokenPart::from_code(c).is_none())
        {
            return Err(format!(
                "token {i} has part code {}, not one of 0, 1, 2",
                self.parts[i]
            ));
        }
        Ok(())
    }

    /// The realtime tokens before the newest, as `(slot, time ms, item
    /// key)`: the positions that predict a next action at every position.
    pub fn realtime_slots(&self) -> impl Iterator<Item = (usize, i64, u64)> + '_ {
        let inner = self.len().saturating_sub(1);
        (0..inner)
            .filter(|&t| self.parts[t] == TokenPart::Realtime.code())
            .map(|t| (t, self.times_ms[t], self.item_ids[t]))
    }
}

/// Where a V2 featurizer takes its examples' tokens from instead of
/// replaying histories ([`crate::features::Featurizer::with_token_source`]).
pub trait V2TokenSource: Send + Sync {
    /// Width of the int8 codes.
    fn dim(&self) -> usize;
    /// Token slots per candidate (`r + k_LL + k_RT + k_imp` of the contract
    /// that logged them).
    fn slots(&self) -> usize;
    /// The logged tokens of `candidate` (its store key) in the request of
    /// `user` (store key) at `request_ms`, if logged.
    fn find(&self, user: u64, request_ms: i64, candidate: u64) -> Option<LoggedTokens<'_>>;
    /// Names the source in errors (e.g. the file).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::LoggedTokens;

    #[test]
    fn check_names_what_does_not_fit_the_contract() {
        let t = LoggedTokens {
            item_ids: &[1, 2],
            codes: &[1, 2, 3, 4],
            scales: &[0.5, 0.25],
            action_masks: &[1, 2],
            surfaces: &[0, 1],
            times_ms: &[10, 20],
            parts: &[1, 1],
            candidate_codes: &[5, 6],
            candidate_scale: 0.1,
            user_feature: None,
        };
        assert_eq!(t.check(2, 2), Ok(()));
        let e = t.check(2, 1).expect_err("too many tokens");
        assert!(e.contains("2 tokens, the contract has 1 slots"), "{e}");
        let e = t.check(3, 4).expect_err("other width");
        assert!(e.contains("codes are 3 wide"), "{e}");
        let short = LoggedTokens {
            item_ids: &[1],
            ..t
        };
        let e = short.check(2, 2).expect_err("an item id short");
        assert!(e.contains("1 item ids"), "{e}");
        let foreign = LoggedTokens {
            parts: &[1, 7],
            ..t
        };
        let e = foreign.check(2, 2).expect_err("an unknown part");
        assert!(e.contains("token 1 has part code 7"), "{e}");
        // Only realtime tokens before the newest predict a next action.
        let mixed = LoggedTokens {
            item_ids: &[1, 2, 3],
            codes: &[1, 2, 3, 4, 5, 6],
            scales: &[0.5, 0.25, 0.5],
            action_masks: &[1, 2, 1],
            surfaces: &[0, 1, 0],
            times_ms: &[10, 20, 30],
            parts: &[0, 1, 1],
            ..t
        };
        assert_eq!(mixed.check(2, 3), Ok(()));
        assert_eq!(mixed.realtime_slots().collect::<Vec<_>>(), vec![(1, 20, 2)]);
    }
}
