//! The Redis store against the embedded store itself, on batches built to
//! collide: few items and surfaces, timestamps a few ms apart and often
//! equal, a window wider than the gaps, small capacities. The shared model
//! test rarely makes two tokens of one item compete for a merge; here it
//! happens in most cases, so which token a merge picks, how equal
//! timestamps order and what a full sequence discards are compared
//! directly. Plus fixed cases of each, and a capacity lowered between two
//! connections (read as the embedded store reopened with it).

mod harness;

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use transact_redis::RedisStore;
use transact_seq::{
    Action, ActionType, EmbeddedStore, SequenceLimits, SequenceStore, StoreConfig, Surface,
    UserSequences,
};

use harness::Server;

const IMPRESSION: u16 = 4;

fn config() -> StoreConfig {
    StoreConfig::default()
        .with_capacity_per_user(6)
        .with_lifelong_capacity(4)
        .with_impression_capacity(2)
        .with_impression_types([IMPRESSION])
        .with_multi_hot_window_ms(15)
        .with_clock(|| 1_000_000)
}

fn act(item: u64, ty: u16, t: i64, surface: u16) -> Action {
    Action {
        item_id: item,
        action_type: ActionType(ty),
        timestamp_ms: t,
        surface: Surface(surface),
    }
}

/// (user, batch) with timestamps in 0..120, so tokens 16+ ms apart stay
/// apart and a later action can fall within the window of two of them.
fn batches() -> impl Strategy<Value = Vec<(u64, Vec<Action>)>> {
    let action = (
        0u64..3,
        prop_oneof![3 => 0u16..8, 1 => Just(IMPRESSION)],
        0i64..120,
        0u16..2,
    )
        .prop_map(|(item, ty, t, s)| act(item, ty, t, s));
    prop::collection::vec((0u64..2, prop::collection::vec(action, 1..4)), 1..40)
}

fn read_all(store: &dyn SequenceStore, user: u64, at: Option<i64>) -> UserSequences {
    let mut out = UserSequences::default();
    let limits = SequenceLimits {
        at_or_before_ms: at,
        ..SequenceLimits::ALL
    };
    store
        .read_sequences(user, &limits, &mut out)
        .expect("read sequences");
    out
}

fn same(redis: &RedisStore, embedded: &EmbeddedStore) -> Result<(), TestCaseError> {
    for user in 0..3 {
        for at in [None, Some(40), Some(80)] {
            prop_assert_eq!(
                read_all(redis, user, at),
                read_all(embedded, user, at),
                "user {} at {:?}",
                user,
                at
            );
        }
        prop_assert_eq!(
            redis.history_len(user).expect("len"),
            embedded.history_len(user).expect("len")
        );
    }
    prop_assert_eq!(redis.user_count(), embedded.user_count());
    Ok(())
}

#[test]
fn redis_store_matches_the_embedded_store() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let case = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&batches(), |batches| {
        case.set(case.get() + 1);
        let redis = harness::connect(&server.url(), &format!("d{}", case.get()), config());
        let embedded = EmbeddedStore::in_memory(config());
        for (user, batch) in &batches {
            redis.append(*user, batch).expect("redis append");
            embedded.append(*user, batch).expect("embedded append");
            same(&redis, &embedded)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("the Redis store differs from the embedded store: {e}");
    }
}

/// The fixed cases, each against the embedded store.
#[test]
fn merges_ties_and_full_sequences_as_the_embedded_store() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let cases: Vec<(&str, Vec<Vec<Action>>)> = vec![
        (
            // Two tokens of item 1 within the window of the third action:
            // it joins the newer one (t = 30), not the older (t = 10).
            "merge picks the newest token in the window",
            vec![
                vec![act(1, 1, 10, 0)],
                vec![act(1, 2, 30, 0)],
                vec![act(1, 3, 20, 0)],
            ],
        ),
        (
            // Equal times: the later arrival reads as newer, in all three
            // sequences, across batches and within one.
            "ties keep arrival order",
            vec![
                vec![act(1, 1, 50, 0), act(2, 1, 50, 0)],
                vec![act(3, IMPRESSION, 50, 0), act(4, IMPRESSION, 50, 0)],
                vec![act(5, 2, 50, 1)],
            ],
        ),
        (
            // A full realtime sequence drops its oldest for a newer action,
            // discards one older than all, and keeps an equal-time one.
            "a full sequence drops the oldest, discards the too old",
            vec![
                (1..=6).map(|i| act(i, 1, i as i64 * 10, 0)).collect(),
                vec![act(90, 1, 5, 0)],
                vec![act(91, 1, 10, 1)],
                vec![act(92, 1, 65, 0)],
            ],
        ),
        (
            // The same item on another surface, or outside the window, is
            // another token; an impression never merges or enters them.
            "merges need the same item, surface and window",
            vec![
                vec![act(7, 1, 100, 0), act(7, 2, 100, 1), act(7, 3, 116, 0)],
                vec![act(7, 5, 115, 0), act(7, IMPRESSION, 100, 0)],
            ],
        ),
    ];
    for (i, (name, batches)) in cases.iter().enumerate() {
        let redis = harness::connect(&server.url(), &format!("f{i}"), config());
        let embedded = EmbeddedStore::in_memory(config());
        for batch in batches {
            redis.append(9, batch).expect("redis append");
            embedded.append(9, batch).expect("embedded append");
        }
        let (r, e) = (read_all(&redis, 9, None), read_all(&embedded, 9, None));
        assert_eq!(r, e, "{name}");
        assert!(!r.realtime.is_empty(), "{name}: nothing read");
    }
    // Spot-check the first case's answer itself, not only the agreement.
    let redis = harness::connect(&server.url(), "f0", config());
    let seqs = read_all(&redis, 9, None);
    assert_eq!(seqs.lifelong.timestamps_ms, [30, 10]);
    assert_eq!(seqs.lifelong.action_masks, [0b1100, 0b10]);
}

/// What was written under a larger capacity reads, and is appended to, as
/// the embedded store reopened with the smaller capacity.
#[test]
fn a_lower_capacity_applies_to_what_was_written() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let edir = tempfile::tempdir().expect("tempdir");
    let wide = config()
        .with_capacity_per_user(10)
        .with_lifelong_capacity(10)
        .with_impression_capacity(10);
    // Ten tokens of ten items, 10 ms apart, and four impressions.
    let mut batch: Vec<Action> = (0..10).map(|i| act(i, 1, 100 + i as i64 * 10, 0)).collect();
    batch.extend((0..4).map(|i| act(20 + i, IMPRESSION, 105 + i as i64 * 10, 0)));
    {
        let redis = harness::connect(&server.url(), "cap", wide.clone());
        redis.append(1, &batch).expect("append");
        let (embedded, _) = EmbeddedStore::open(edir.path(), wide).expect("open");
        embedded.append(1, &batch).expect("append");
        embedded.close().expect("close");
    }
    let narrow = config();
    let redis = harness::connect(&server.url(), "cap", narrow.clone());
    let (embedded, _) = EmbeddedStore::open(edir.path(), narrow).expect("reopen");
    assert_eq!(read_all(&redis, 1, None), read_all(&embedded, 1, None));
    assert_eq!(redis.history_len(1).expect("len"), 6);
    // Item 5's token (t = 150) is beyond the lifelong capacity of 4: an
    // action of item 5 at t = 162 makes a new token (dropping t = 160), as
    // the reopened embedded store has no token of item 5 left to join.
    // Then a realtime action older than all kept, and an impression.
    for extra in [
        vec![act(5, 2, 162, 0)],
        vec![act(50, 1, 101, 0)],
        vec![act(51, IMPRESSION, 200, 0)],
    ] {
        redis.append(1, &extra).expect("append");
        embedded.append(1, &extra).expect("append");
        assert_eq!(read_all(&redis, 1, None), read_all(&embedded, 1, None));
    }
    let lifelong = read_all(&redis, 1, None).lifelong;
    assert_eq!(lifelong.timestamps_ms, [190, 180, 170, 162]);
    assert_eq!(lifelong.item_ids[3], 5);
}
