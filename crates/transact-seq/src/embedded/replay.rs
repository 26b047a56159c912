//! [`SequenceReplay`]: a user's three sequences rebuilt in memory from a
//! time-ordered history, by the store's own routing.

use super::config::StoreConfig;
use super::state::UserState;
use crate::{Action, SequenceLimits, UserSequences};

/// One user's realtime, lifelong and impression sequences built from
/// actions pushed oldest first, with the routing, multi-hot merging and
/// capacities of a [`StoreConfig`] — the code the [`crate::EmbeddedStore`]
/// runs on append. A trainer replays a logged history through it to see, at
/// each past request, exactly what a store configured alike would have
/// served then.
///
/// ```
/// use transact_seq::{Action, ActionType, SequenceLimits, SequenceReplay, StoreConfig, Surface, UserSequences};
///
/// let cfg = StoreConfig::default().with_multi_hot_window_ms(1_000);
/// let mut replay = SequenceReplay::new(cfg);
/// let act = |item, t, ms| Action { item_id: item, action_type: t, timestamp_ms: ms, surface: Surface(0) };
/// replay.push(&act(7, ActionType::CLICK, 10));
/// replay.push(&act(7, ActionType::REPIN, 20)); // merged into the click's token
/// replay.push(&act(8, ActionType::IMPRESSION, 30));
/// let mut out = UserSequences::default();
/// replay.read(&SequenceLimits::ALL, &mut out);
/// assert_eq!(out.lifelong.len(), 1);
/// assert!(out.lifelong.has_type(0, ActionType::REPIN));
/// assert_eq!((out.realtime.len(), out.impressions.len()), (3, 1));
/// ```
#[derive(Clone, Debug)]
pub struct SequenceReplay {
    config: StoreConfig,
    state: UserState,
}

impl SequenceReplay {
    /// An empty replay routing by `config` (out-of-range values clamped as
    /// the store clamps them).
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config: config.clamped(),
            state: UserState::default(),
        }
    }

    /// Forgets every action (keeps the config).
    pub fn clear(&mut self) {
        self.state = UserState::default();
    }

    /// Adds one action. An action the store would refuse (a type outside
    /// the config's vocabulary, a negative timestamp) is passed over and
    /// `false` returned; the clock is not checked (replayed actions are in
    /// the past).
    pub fn push(&mut self, action: &Action) -> bool {
        if !self.config.vocab.contains(action.action_type) || action.timestamp_ms < 0 {
            return false;
        }
        self.state.insert(action, &self.config);
        true
    }

    /// Fills `out` as [`crate::SequenceStore::read_sequences`] would.
    pub fn read(&self, limits: &SequenceLimits, out: &mut UserSequences) {
        self.state.read(limits, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActionType, EmbeddedStore, SequenceStore, Surface};

    #[test]
    fn a_replay_reads_what_an_in_memory_store_reads() {
        let cfg = || {
            StoreConfig::default()
                .with_capacity_per_user(5)
                .with_lifelong_capacity(4)
                .with_impression_capacity(3)
                .with_multi_hot_window_ms(15)
        };
        let store = EmbeddedStore::in_memory(cfg());
        let mut replay = SequenceReplay::new(cfg());
        let types = [
            ActionType::CLICK,
            ActionType::IMPRESSION,
            ActionType::REPIN,
            ActionType::HIDE,
        ];
        for i in 0..40u64 {
            let a = Action {
                item_id: i % 6,
                action_type: types[(i * 7 % 4) as usize],
                timestamp_ms: (i * 10) as i64,
                surface: Surface((i % 2) as u16),
            };
            store.append(1, &[a]).expect("append");
            assert!(replay.push(&a));
            for at in [None, Some((i * 10) as i64 - 25)] {
                let limits = SequenceLimits {
                    at_or_before_ms: at,
                    ..SequenceLimits::ALL
                };
                let (mut want, mut got) = (UserSequences::default(), UserSequences::default());
                store.read_sequences(1, &limits, &mut want).expect("read");
                replay.read(&limits, &mut got);
                assert_eq!(got, want, "after action {i}, at {at:?}");
            }
        }
        let unknown = Action {
            item_id: 1,
            action_type: ActionType(999),
            timestamp_ms: 1_000,
            surface: Surface(0),
        };
        assert!(!replay.push(&unknown));
    }
}
