//! Tests of the synthetic world.

use super::*;
use crate::eval::{Query, Scorer, hit_at_k};

fn small() -> SyntheticConfig {
    SyntheticConfig {
        users: 120,
        items: 600,
        sessions: 8,
        ..SyntheticConfig::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_world_and_invariants_hold() {
    let cfg = small();
    let a = generate(&cfg, 5).expect("world");
    assert_eq!(a, generate(&cfg, 5).expect("world"));
    assert_ne!(a.requests, generate(&cfg, 6).expect("world").requests);
    assert_eq!(a.users.len(), cfg.users);
    assert!(a.requests.len() >= cfg.users * cfg.sessions);
    assert!(a.requests.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    for h in &a.users {
        assert!(
            h.actions
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
        );
        assert!(h.actions.iter().all(|x| (x.item_id as usize) < cfg.items));
    }
    for r in &a.requests {
        assert_eq!(r.candidates.len(), cfg.slate);
        assert!(
            r.candidates
                .iter()
                .all(|c| (c.item as usize) < cfg.items && c.labels < 8)
        );
        // A hide excludes the other labels.
        assert!(
            r.candidates
                .iter()
                .all(|c| c.labels & 4 == 0 || c.labels == 4)
        );
    }
    let e = a.items.embeddings.as_ref().expect("embeddings");
    assert_eq!(e.data.len(), cfg.items * cfg.dim);
    assert!(e.data.iter().all(|v| v.is_finite()));
}

#[test]
fn item_appeal_changes_the_log_and_not_the_catalogue() {
    let plain = SyntheticConfig {
        item_quality: 0.0,
        ..small()
    };
    let a = generate(&plain, 3).expect("world");
    let b = generate(&small(), 3).expect("world");
    assert_eq!(a.items, b.items);
    assert_ne!(a.requests, b.requests);
    let mut c = small();
    c.item_quality = f64::NAN;
    let err = generate(&c, 1).expect_err("nan");
    assert!(err.contains("item_quality"), "{err}");
}

#[test]
fn feed_like_slates_are_a_different_valid_world() {
    let feed = SyntheticConfig {
        slate_like_feed: true,
        ..small()
    };
    let a = generate(&feed, 4).expect("world");
    let b = generate(&small(), 4).expect("world");
    assert_ne!(a.requests, b.requests);
    assert!(a.requests.iter().all(|r| r.candidates.len() == feed.slate
        && r.candidates.iter().all(|c| (c.item as usize) < feed.items)));
    // Feed-like slates lean to the session topic: more engagement.
    let repins = |w: &Dataset| -> usize {
        w.requests
            .iter()
            .flat_map(|r| &r.candidates)
            .filter(|c| c.labels & label_bit(HEAD_REPIN) != 0)
            .count()
    };
    assert!(repins(&a) > repins(&b), "{} vs {}", repins(&a), repins(&b));
}

#[test]
fn bad_configs_are_errors() {
    let mut c = small();
    c.topics = 5;
    assert!(generate(&c, 1).is_err());
    let mut c = small();
    c.drift = 1.5;
    assert!(generate(&c, 1).is_err());
    let mut c = small();
    c.session_len = (5, 2);
    assert!(generate(&c, 1).is_err());
}

/// Scores by cosine to a profile embedding built from the history.
struct Profile {
    newest: usize,
}

impl Scorer for Profile {
    fn score(
        &self,
        data: &Dataset,
        q: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), crate::eval::EvalError> {
        let e = data.items.embeddings.as_ref().expect("embeddings");
        let d = e.dim;
        let mut prof = vec![0.0f32; d];
        let positives = q
            .history
            .iter()
            .rev()
            .filter(|a| crate::data::is_positive(a))
            .take(self.newest);
        for a in positives {
            let row = &e.data[a.item_id as usize * d..(a.item_id as usize + 1) * d];
            prof.iter_mut().zip(row).for_each(|(p, v)| *p += v);
        }
        for (o, &c) in out.iter_mut().zip(candidates) {
            let row = &e.data[c as usize * d..(c as usize + 1) * d];
            *o = row.iter().zip(&prof).map(|(a, b)| a * b).sum();
        }
        Ok(())
    }
}

#[test]
fn the_newest_actions_say_more_than_the_whole_history() {
    // The designed session signal, without training anything: a profile
    // of the newest 3 positives ranks repins better than one of all of
    // them (on the exact item vectors, without per-item appeal).
    let cfg = SyntheticConfig {
        embedding_noise: 0.0,
        item_quality: 0.0,
        ..small()
    };
    let w = generate(&cfg, 9).expect("world");
    let reqs = &w.requests[w.requests.len() / 2..];
    let recent = hit_at_k(&w, reqs, 3, &Profile { newest: 3 }).expect("hit");
    let all = hit_at_k(&w, reqs, 3, &Profile { newest: usize::MAX }).expect("hit");
    assert!(
        recent.per_head[HEAD_REPIN] > 1.1 * all.per_head[HEAD_REPIN],
        "recent {:?} vs all {:?}",
        recent.per_head,
        all.per_head
    );
}

#[test]
fn the_ground_truth_is_a_ceiling_and_the_focus_term_matters() {
    let (w, truth) = generate_with_truth(&small(), 13).expect("world");
    let reqs = &w.requests[w.requests.len() / 2..];
    let full = hit_at_k(&w, reqs, 3, &truth).expect("hit");
    let topic = hit_at_k(&w, reqs, 3, &truth.topic_level()).expect("hit");
    let profile = hit_at_k(&w, reqs, 3, &Profile { newest: 3 }).expect("hit");
    // Knowing where in the topic the session's taste lies is worth more
    // than 5% HIT@3 repin over knowing the topics alone, and the truth
    // beats a profile of the newest positives on repins and hides.
    assert!(
        full.per_head[HEAD_REPIN] > 1.05 * topic.per_head[HEAD_REPIN],
        "full {:?} vs topic-level {:?}",
        full.per_head,
        topic.per_head
    );
    assert!(
        full.per_head[HEAD_REPIN] > profile.per_head[HEAD_REPIN]
            && full.per_head[HEAD_HIDE] < profile.per_head[HEAD_HIDE],
        "full {:?} vs profile {:?}",
        full.per_head,
        profile.per_head
    );
    // A request the world never logged is an error, not a guess.
    let q = Query {
        user: 0,
        time_ms: 1,
        history: &[],
    };
    let mut out = [0.0f32; 2];
    let err = truth.score(&w, &q, &[1, 2], &mut out).expect_err("unknown");
    assert!(
        err.to_string().contains("no ground truth for user 0"),
        "{err}"
    );
}

#[test]
fn without_focus_the_world_is_topic_level() {
    let cfg = SyntheticConfig {
        focus_weight: 0.0,
        ..small()
    };
    let (w, truth) = generate_with_truth(&cfg, 13).expect("world");
    let reqs = &w.requests[w.requests.len() / 2..];
    let full = hit_at_k(&w, reqs, 3, &truth).expect("hit");
    let topic = hit_at_k(&w, reqs, 3, &truth.topic_level()).expect("hit");
    assert_eq!(full.per_head, topic.per_head);
}

#[test]
fn the_hide_rate_matches_the_design() {
    let cfg = small();
    let w = generate(&cfg, 11).expect("world");
    let hides: usize = w
        .requests
        .iter()
        .flat_map(|r| &r.candidates)
        .filter(|c| c.labels & 4 != 0)
        .count();
    let all: usize = w.requests.iter().map(|r| r.candidates.len()).sum();
    let rate = hides as f64 / all as f64;
    // About a sixth of a slate is disliked, hidden with p ≈ 0.38; the
    // rest is hidden with p ≈ 0.01.
    assert!((0.03..0.15).contains(&rate), "hide rate {rate}");
}
