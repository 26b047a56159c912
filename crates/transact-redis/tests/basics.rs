//! The store's edges: bad configuration and unreachable servers fail
//! clearly; validation rejects a batch before anything is sent; data the
//! store cannot decode, or keys of the wrong type, are errors that write
//! nothing; a retried append (same id) applies once; the trait works from
//! inside an async runtime; `sync` on a server without `WAITAOF`.

mod harness;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use redis::Commands;
use transact_redis::{KeyLayout, RedisConfig, RedisStore};
use transact_seq::{
    Action, ActionType, SeqError, SequenceBuf, SequenceLimits, SequenceStore, StoreConfig, Surface,
    UserSequences,
};

use harness::Server;

fn config() -> StoreConfig {
    StoreConfig::default().with_clock(|| 10_000_000)
}

fn act(item: u64, ty: ActionType, t: i64) -> Action {
    Action {
        item_id: item,
        action_type: ty,
        timestamp_ms: t,
        surface: Surface(0),
    }
}

#[test]
fn bad_configuration_is_rejected_before_connecting() {
    let url = "redis://127.0.0.1:1";
    let bad_store = config().with_capacity_per_user(0);
    let cases = [
        (RedisConfig::new(url).expect("url"), bad_store),
        (
            RedisConfig::new(url).expect("url").with_key_prefix("a{b}"),
            config(),
        ),
        (
            RedisConfig::new(url)
                .expect("url")
                .with_op_timeout(Duration::ZERO),
            config(),
        ),
    ];
    for (redis, store) in cases {
        match RedisStore::connect(redis, store) {
            Err(SeqError::InvalidConfig(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(matches!(
        RedisConfig::new("memcached://x:1"),
        Err(SeqError::InvalidConfig(_))
    ));
}

#[test]
fn an_unreachable_server_fails_connect_clearly_and_quickly() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let redis = RedisConfig::new(&format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .with_op_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let err = RedisStore::connect(redis, config()).expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(matches!(err, SeqError::Unavailable(_)), "{err:?}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connect"), "{msg}");
}

#[test]
fn rejected_batches_and_bad_keys_write_nothing() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let store = harness::connect(&server.url(), "b", config());
    let keys = KeyLayout::new("b").expect("layout");
    let mut con = server.client();

    // Validation: the whole call is rejected before anything is sent.
    let batch = [
        act(1, ActionType::CLICK, 1_000),
        act(2, ActionType(900), 1_001),
    ];
    let err = store
        .append(1, &batch)
        .expect_err("type 900 is not in the vocabulary");
    assert!(
        matches!(err, SeqError::UnknownActionType { user: 1, .. }),
        "{err:?}"
    );
    assert!(store.check_append(1, &batch).is_err());
    assert!(store.check_append(1, &batch[..1]).is_ok());
    let err = store
        .append(1, &[act(1, ActionType::CLICK, -5)])
        .expect_err("negative time");
    assert!(matches!(err, SeqError::NegativeTimestamp { .. }), "{err:?}");
    let err = store
        .append(1, &[act(1, ActionType::CLICK, 10_000_000 + 86_400_001)])
        .expect_err("future time");
    assert!(matches!(err, SeqError::FutureTimestamp { .. }), "{err:?}");
    let exists: bool = con.exists(keys.sequence(1)).expect("EXISTS");
    assert!(!exists, "a rejected batch wrote the arrival counter");
    assert_eq!(store.history_len(1).expect("len"), 0);
    assert_eq!(store.user_count(), 0);
    store.append(1, &[]).expect("an empty batch is fine");
    assert_eq!(store.user_count(), 0);

    // Too large for one append (checked before sending).
    let huge = vec![act(1, ActionType::CLICK, 1_000); 1_400_000];
    assert!(matches!(
        store.append(1, &huge),
        Err(SeqError::BatchTooLarge { user: 1, .. })
    ));

    // A key of the wrong type: the script fails before writing anything.
    let _: () = con.set(keys.realtime(2), "not a sorted set").expect("SET");
    let err = store
        .append(2, &[act(1, ActionType::CLICK, 1_000)])
        .expect_err("WRONGTYPE");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let exists: bool = con.exists(keys.sequence(2)).expect("EXISTS");
    assert!(!exists, "a failed script wrote the arrival counter");
    assert_eq!(store.user_count(), 0);

    // Members the store cannot decode: Corrupt, naming the key.
    let _: () = con.zadd(keys.realtime(3), "short", 0).expect("ZADD");
    let mut buf = SequenceBuf::default();
    match store.read_newest(3, 10, None, &mut buf) {
        Err(SeqError::Corrupt { path, detail }) => {
            assert!(path.to_string_lossy().contains("b:{u:3}:rt"), "{path:?}");
            assert!(detail.contains("5 bytes"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(buf.is_empty());
    let mut seqs = UserSequences::default();
    assert!(matches!(
        store.read_sequences(3, &SequenceLimits::ALL, &mut seqs),
        Err(SeqError::Corrupt { .. })
    ));
}

/// The script itself, sent twice with one append id (as the cluster client
/// may resend a request whose reply was lost): applied once.
#[test]
fn a_resent_append_is_applied_once() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let store = harness::connect(&server.url(), "i", config());
    let keys = KeyLayout::new("i").expect("layout");
    let mut con = server.client();
    // One explicit action (type 1 at t = 500, item 9, surface 0), as the
    // store packs it (src/codec.rs).
    let mut rec = vec![0u8];
    rec.extend_from_slice(&500u64.to_be_bytes());
    rec.extend_from_slice(&9u64.to_be_bytes());
    rec.extend_from_slice(&1u16.to_be_bytes());
    rec.extend_from_slice(&0u16.to_be_bytes());
    rec.push(b'(');
    rec.extend_from_slice(&501u64.to_be_bytes());
    rec.push(b'[');
    rec.extend_from_slice(&500u64.to_be_bytes());
    rec.extend_from_slice(&[8, 2]);
    rec.extend_from_slice(&2u64.to_be_bytes());
    let script = redis::Script::new(include_str!("../src/append.lua"));
    let run = |con: &mut redis::Connection, id: &[u8]| -> i64 {
        script
            .key(keys.realtime(5))
            .key(keys.impressions(5))
            .key(keys.lifelong(5))
            .key(keys.sequence(5))
            .key(keys.user_counter(5))
            .key(keys.append_ids(5))
            .arg(10)
            .arg(10)
            .arg(10)
            .arg(id)
            .arg(rec.as_slice())
            .invoke(con)
            .expect("EVALSHA")
    };
    assert_eq!(run(&mut con, b"id-1"), 1);
    assert_eq!(
        run(&mut con, b"id-1"),
        0,
        "the resent append was applied again"
    );
    assert_eq!(run(&mut con, b"id-2"), 1);
    assert_eq!(store.history_len(5).expect("len"), 2);
    assert_eq!(store.user_count(), 1);
    let mut seqs = UserSequences::default();
    store
        .read_sequences(5, &SequenceLimits::ALL, &mut seqs)
        .expect("read");
    assert_eq!(seqs.realtime.item_ids, [9, 9]);
    assert_eq!(seqs.lifelong.len(), 1);
    assert_eq!(seqs.lifelong.action_masks, [2]);
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_an_async_runtime() {
    // A failed connect inside async code: an error, not a panic (its
    // runtime is shut down without blocking).
    let redis = RedisConfig::new("redis://127.0.0.1:1")
        .expect("url")
        .with_op_timeout(Duration::from_millis(500));
    assert!(matches!(
        RedisStore::connect(redis, config()),
        Err(SeqError::Unavailable(_))
    ));
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    // Connect, append, read and drop on the runtime's own thread: blocks
    // it for each call, but works and never panics.
    let store = harness::connect(&server.url(), "a", config());
    store
        .append(1, &[act(4, ActionType::REPIN, 1_000)])
        .expect("append inside async");
    assert_eq!(store.history_len(1).expect("len"), 1);
    // The recommended way: spawn_blocking.
    let store = std::sync::Arc::new(store);
    let s = std::sync::Arc::clone(&store);
    let n = tokio::task::spawn_blocking(move || {
        s.append(1, &[act(5, ActionType::CLICK, 2_000)])?;
        let mut buf = SequenceBuf::default();
        s.read_newest(1, 10, None, &mut buf)
    })
    .await
    .expect("join")
    .expect("read in spawn_blocking");
    assert_eq!(n, 2);
    drop(store);
}

#[test]
fn sync_is_ok_without_waitaof() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    let store = harness::connect(&server.url(), "s", config());
    store
        .append(1, &[act(4, ActionType::REPIN, 1_000)])
        .expect("append");
    // Redis 7.0 has no WAITAOF: sync relies on appendfsync (always here);
    // on 7.2+ it waits for the fsync.
    store.sync().expect("sync");
    store.sync().expect("sync again");
}
