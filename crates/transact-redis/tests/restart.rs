//! Durability and recovery on one server with AOF (`appendfsync always`):
//! acknowledged appends survive `kill -9` of `redis-server`; while it is
//! down every call fails with a clear error within the configured timeout;
//! after it restarts on the same directory and port, the same store object
//! works again by itself and reads back everything acknowledged.

mod harness;

use std::time::{Duration, Instant};

use transact_redis::{RedisConfig, RedisStore};
use transact_seq::{
    Action, ActionType, EmbeddedStore, SeqError, SequenceBuf, SequenceLimits, SequenceStore,
    StoreConfig, Surface, UserSequences,
};

use harness::Server;

const USERS: u64 = 5;
const OP_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1_500);

fn config() -> StoreConfig {
    StoreConfig::default()
        .with_capacity_per_user(50)
        .with_lifelong_capacity(40)
        .with_impression_capacity(20)
        .with_multi_hot_window_ms(5)
        .with_clock(|| 10_000_000)
}

fn batch(i: u64) -> Vec<Action> {
    (0..3)
        .map(|k| Action {
            item_id: (i * 7 + k) % 13,
            action_type: ActionType(((i + k) % 5) as u16),
            timestamp_ms: 1_000 + (i * 10 + k) as i64,
            surface: Surface((k % 2) as u16),
        })
        .collect()
}

fn read_all(store: &dyn SequenceStore, user: u64) -> Result<UserSequences, SeqError> {
    let mut out = UserSequences::default();
    store.read_sequences(user, &SequenceLimits::ALL, &mut out)?;
    Ok(out)
}

/// Runs a call the outage must fail: a clear `Unavailable` naming the
/// server and the operation, within the timeout.
fn fails_clearly<T: std::fmt::Debug>(
    what: &str,
    port: u16,
    call: impl FnOnce() -> Result<T, SeqError>,
) {
    let started = Instant::now();
    let got = call();
    let took = started.elapsed();
    assert!(
        took <= OP_TIMEOUT + SLACK,
        "{what} took {took:?} with the server down"
    );
    match got {
        Err(SeqError::Unavailable(msg)) => {
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{what}: {msg}");
            eprintln!("{what} during the outage ({took:?}): {msg}");
        }
        other => panic!("{what} with the server down: {other:?}"),
    }
}

#[test]
fn acknowledged_appends_survive_kill_9_and_the_store_recovers() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_aof(dir.path());
    let port = server.port();
    let redis = RedisConfig::new(&server.url())
        .expect("url")
        .with_key_prefix("r")
        .with_op_timeout(OP_TIMEOUT);
    let store = RedisStore::connect(redis, config()).expect("connect");
    // The embedded store is the reference for what was acknowledged.
    let reference = EmbeddedStore::in_memory(config());
    for i in 0..120 {
        let user = i % USERS;
        store.append(user, &batch(i)).expect("acknowledged append");
        reference.append(user, &batch(i)).expect("reference append");
    }
    assert_eq!(store.try_user_count().expect("user count"), USERS as usize);

    server.kill9();
    fails_clearly("append", port, || store.append(0, &batch(999)));
    fails_clearly("read_sequences", port, || read_all(&store, 1));
    fails_clearly("read_newest", port, || {
        store.read_newest(2, 10, None, &mut SequenceBuf::default())
    });
    fails_clearly("history_len", port, || store.history_len(3));
    fails_clearly("try_user_count", port, || store.try_user_count());
    // The infallible count answers with the last one read.
    assert_eq!(store.user_count(), USERS as usize);
    // Still down: still failing, still bounded (the reconnect attempts do
    // not pile up).
    fails_clearly("append again", port, || store.append(0, &batch(998)));

    server.restart();
    let started = Instant::now();
    let (_, failures) = harness::until_ok(Duration::from_secs(15), || read_all(&store, 0));
    eprintln!(
        "recovered after {failures} failed calls in {:?}",
        started.elapsed()
    );
    for user in 0..USERS {
        let got = read_all(&store, user).expect("read after restart");
        let want = read_all(&reference, user).expect("reference read");
        assert_eq!(got, want, "user {user} after kill -9 and restart");
        assert!(!got.realtime.is_empty());
        assert_eq!(
            store.history_len(user).expect("len"),
            reference.history_len(user).expect("len")
        );
    }
    assert_eq!(store.user_count(), USERS as usize);
    // And it takes appends again (the script is loaded again by itself).
    store.append(4, &batch(500)).expect("append after restart");
    reference.append(4, &batch(500)).expect("reference append");
    assert_eq!(
        read_all(&store, 4).expect("read"),
        read_all(&reference, 4).expect("read")
    );
    store.sync().expect("sync");
}
