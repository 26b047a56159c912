//! On a three-primary Redis Cluster: every key of one user is in one slot
//! (as the servers compute it, `CLUSTER KEYSLOT`), users spread over all
//! three nodes, and the store reads back and counts them exactly.

mod harness;

use std::collections::BTreeSet;

use transact_redis::key_slot;
use transact_seq::{
    Action, ActionType, SequenceLimits, SequenceStore, StoreConfig, Surface, UserSequences,
};

use harness::Cluster;

const USERS: u64 = 300;

fn actions(user: u64) -> Vec<Action> {
    let t = 1_000 + user as i64;
    vec![
        Action {
            item_id: user,
            action_type: ActionType::REPIN,
            timestamp_ms: t,
            surface: Surface(0),
        },
        Action {
            item_id: user.wrapping_add(1),
            action_type: ActionType::IMPRESSION,
            timestamp_ms: t + 1,
            surface: Surface(1),
        },
    ]
}

#[test]
fn a_users_keys_share_a_slot_and_users_spread_over_the_nodes() {
    if !harness::redis_available() {
        return;
    }
    let cluster = Cluster::start();
    let config = StoreConfig::default().with_clock(|| 10_000_000);
    let store = harness::connect(&cluster.url(), "c", config);
    let mut users: Vec<u64> = (0..USERS).collect();
    users.push(u64::MAX);
    for &u in &users {
        store.append(u, &actions(u)).expect("append");
    }
    let keys = store.key_layout();

    let mut con = cluster.nodes[0].client();
    for &u in &[0, 1, 2, 12_345_678, u64::MAX] {
        let want = keys.slot(u);
        for k in [
            keys.realtime(u),
            keys.impressions(u),
            keys.lifelong(u),
            keys.sequence(u),
            keys.append_ids(u),
            keys.user_counter(u),
        ] {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&k)
                .query(&mut con)
                .expect("CLUSTER KEYSLOT");
            assert_eq!(slot, want, "{k}");
            assert_eq!(key_slot(k.as_bytes()), want, "{k}");
        }
    }

    // Which users each node holds (KEYS is local to a node).
    let mut seen = BTreeSet::new();
    for node in &cluster.nodes {
        let found: Vec<String> = redis::cmd("KEYS")
            .arg("c:{u:*}:rt")
            .query(&mut node.client())
            .expect("KEYS");
        assert!(
            !found.is_empty(),
            "node {} holds no user: users do not spread",
            node.port()
        );
        for k in found {
            assert!(seen.insert(k.clone()), "{k} on two nodes");
        }
        eprintln!("node {}: {} users so far", node.port(), seen.len());
    }
    assert_eq!(seen.len(), users.len());

    assert_eq!(store.try_user_count().expect("count"), users.len());
    // No WAITAOF on Redis 7.0: sync sends it to every primary, then relies
    // on appendfsync.
    store.sync().expect("sync on a cluster");
    // Appending again to known users adds none.
    store.append(7, &actions(7)).expect("append");
    assert_eq!(store.user_count(), users.len());
    for &u in &users {
        let mut out = UserSequences::default();
        store
            .read_sequences(u, &SequenceLimits::ALL, &mut out)
            .expect("read");
        let n = if u == 7 { 2 } else { 1 };
        assert_eq!(out.lifelong.len(), 1, "user {u}");
        assert_eq!(out.impressions.len(), n, "user {u}");
        assert_eq!(out.realtime.len(), 2 * n, "user {u}");
        assert_eq!(out.realtime.item_ids[0], u.wrapping_add(1));
    }
}
