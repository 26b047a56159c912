//! The Redis store against the same reference model as the embedded store
//! (`transact_seq::testing`): random appends (valid and invalid, in and out
//! of time order), reads of the realtime sequence and of all three
//! sequences, plus this store's own operations — dropping the client and
//! connecting a new one, closing its connections on the server side (the
//! same store object must reconnect), and, on one server, `kill -9` of
//! `redis-server` and a restart on its AOF (everything acknowledged must be
//! back).
//!
//! One server (or one cluster) per test; every case writes under a fresh
//! key prefix. `TRANSACT_REDIS_CASES` overrides the number of cases.

mod harness;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use transact_redis::RedisStore;
use transact_seq::testing::{self, ModelCheck, Op};

use harness::{Cluster, Server};

/// Enough for CI (the whole Redis suite stays well under a minute here).
const CASES: u32 = 24;

/// The Redis store's own operations.
#[derive(Clone, Debug)]
enum RedisOp {
    /// Drop the store and connect a new one to the same prefix.
    Reconnect,
    /// Close the store's connections on the server (`CLIENT KILL`).
    Disconnect,
    /// `kill -9` the server and start it again on its AOF (one server only).
    Restart,
}

/// The shared operations plus this store's own, with the same total weight
/// as the embedded store's (4 of 19).
fn op(restarts: bool) -> impl Strategy<Value = Op<RedisOp>> {
    let own = if restarts {
        prop_oneof![
            2 => Just(RedisOp::Reconnect),
            1 => Just(RedisOp::Disconnect),
            1 => Just(RedisOp::Restart),
        ]
        .boxed()
    } else {
        prop_oneof![
            2 => Just(RedisOp::Reconnect),
            2 => Just(RedisOp::Disconnect),
        ]
        .boxed()
    };
    testing::op(own, 4)
}

/// What the model test runs against.
enum Topology {
    Single(Server),
    Cluster(Cluster),
}

impl Topology {
    fn url(&self) -> String {
        match self {
            Topology::Single(s) => s.url(),
            Topology::Cluster(c) => c.url(),
        }
    }

    fn kill_clients(&self) {
        match self {
            Topology::Single(s) => s.kill_clients(),
            Topology::Cluster(c) => c.kill_clients(),
        }
    }
}

/// Calls until the store answers again for every user the test reads and
/// for the user count (the call that meets a dead connection fails; the
/// store reconnects by itself).
fn heal(store: &RedisStore) {
    let within = Duration::from_secs(10);
    harness::until_ok(within, || store.ping());
    for u in 0..testing::READ_USERS {
        harness::until_ok(within, || {
            transact_seq::SequenceStore::history_len(store, u)
        });
    }
    harness::until_ok(within, || store.try_user_count());
}

fn run_case(
    topology: &RefCell<Topology>,
    prefix: &str,
    ops: &[Op<RedisOp>],
) -> Result<(), TestCaseError> {
    let url = topology.borrow().url();
    let config = testing::model_config();
    let mut store = harness::connect(&url, prefix, config.clone());
    let mut check = ModelCheck::default();
    for op in ops {
        let Some(own) = check.run(&store, op)? else {
            continue;
        };
        match own {
            RedisOp::Reconnect => {
                drop(store);
                store = harness::connect(&url, prefix, config.clone());
            }
            RedisOp::Disconnect => {
                topology.borrow().kill_clients();
                heal(&store);
            }
            RedisOp::Restart => {
                if let Topology::Single(s) = &mut *topology.borrow_mut() {
                    s.restart();
                }
                heal(&store);
            }
        }
        check.check_all(&store)?;
    }
    check.check_all(&store)?;
    // However the run ended, a new client sees the same state.
    drop(store);
    let store = harness::connect(&url, prefix, config);
    check.check_all(&store)?;
    Ok(())
}

fn run_model(topology: Topology, restarts: bool, name: &str) {
    let cases = std::env::var("TRANSACT_REDIS_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    let topology = RefCell::new(topology);
    let case = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&prop::collection::vec(op(restarts), 1..60), |ops| {
        case.set(case.get() + 1);
        // A fresh prefix per case (and per shrinking step): no state leaks.
        let prefix = format!("{name}{}", case.get());
        run_case(&topology, &prefix, &ops)
    });
    eprintln!(
        "{name}: {} runs (cases and shrinking steps) in {:.2?}",
        case.get(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{name}: the Redis store differs from the model: {e}");
    }
}

#[test]
fn single_server_matches_model() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_aof(dir.path());
    run_model(Topology::Single(server), true, "single");
}

#[test]
fn cluster_matches_model() {
    if !harness::redis_available() {
        return;
    }
    run_model(Topology::Cluster(Cluster::start()), false, "cluster");
}
