//! `transact serve --store redis://…` under load: Redis killed and
//! restarted mid-run (errors are clean 503s, the server recovers by
//! itself, every acknowledged action is in Redis afterwards), and a
//! three-node Redis Cluster under load with no errors.
//!
//! The Redis servers come from transact-redis's own test harness.

mod common;
#[path = "../crates/transact-redis/tests/harness/mod.rs"]
mod harness;

use std::time::Duration;

use common::{ServeProcess, quick_demo, runtime};
use transact::redis::{RedisConfig, RedisStore};
use transact::seq::StoreConfig;
use transact::serve::loadtest::{self, LoadConfig};

fn load(url: &str, seconds: f64) -> LoadConfig {
    LoadConfig {
        url: url.to_string(),
        duration: Duration::from_secs_f64(seconds),
        connections: 4,
        rank_fraction: 0.6,
        users: 80,
        items: 600,
        candidates: 20,
        keep_acknowledged: true,
        ..LoadConfig::default()
    }
}

#[test]
fn a_redis_restart_under_load_gives_clean_503s_and_the_server_recovers() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (bundle, _) = quick_demo(dir.path());
    let mut redis = harness::Server::start_aof(&dir.path().join("redis"));
    let url = redis.url();
    let server = ServeProcess::start(
        &["--bundle", &bundle, "--store", &url, "--cpu"],
        &dir.path().join("serve.log"),
    );
    let config = load(&server.base, 5.0);
    let rt = runtime();
    let run = rt.spawn(async move { loadtest::run(&config).await });
    std::thread::sleep(Duration::from_millis(1_200));
    redis.kill9();
    std::thread::sleep(Duration::from_millis(1_300));
    redis.restart();
    let report = rt.block_on(run).expect("load task");
    eprintln!("{}", report.markdown());
    let outage_errors: u64 = report.errors.values().sum();
    assert!(outage_errors > 0, "the outage was not seen: {report:?}");
    for kind in report.errors.keys() {
        assert!(
            kind == "503 store_unavailable" || kind == "503 timeout",
            "an unclean error during the outage: {kind} ({:?})",
            report.errors
        );
    }
    // The last second, well after the restart, is all answers and no errors.
    let last = report.timeline.iter().rev().nth(1).expect("timeline");
    assert!(
        last.ok > 0 && last.errors == 0,
        "not recovered: {:?}",
        report.timeline
    );
    // Every acknowledged action is in Redis.
    let store = RedisStore::connect(RedisConfig::new(&url).expect("url"), StoreConfig::default())
        .expect("connect");
    assert_eq!(
        report.count_stored(&store).expect("read back"),
        report.acknowledged.len()
    );
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serving_on_a_three_node_cluster_under_load_answers_everything() {
    if !harness::redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (bundle, _) = quick_demo(dir.path());
    let cluster = harness::Cluster::start();
    let url = cluster.url();
    let server = ServeProcess::start(
        &["--bundle", &bundle, "--store", &url, "--cpu"],
        &dir.path().join("serve.log"),
    );
    let config = load(&server.base, 2.0);
    let report = runtime().block_on(loadtest::run(&config));
    eprintln!("{}", report.markdown());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.rank.ok > 0 && report.append.ok > 0);
    let store = RedisStore::connect(RedisConfig::new(&url).expect("url"), StoreConfig::default())
        .expect("connect");
    assert_eq!(
        report.count_stored(&store).expect("read back"),
        report.acknowledged.len()
    );
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
