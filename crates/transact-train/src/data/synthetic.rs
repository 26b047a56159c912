//! The seeded synthetic world: a small Pinterest-like log in which each
//! signal TransAct is meant to use is put there on purpose.
//!
//! # How it is made
//!
//! - **Items** belong to one of `topics` topics. An item's embedding is its
//!   topic's random unit centroid plus Gaussian noise (`item_noise`), then
//!   normalised: a "pretrained" embedding that says the topic only roughly,
//!   so that the model has something to learn. The dataset ships a noisy
//!   view of these true vectors (`embedding_noise`, default 0.3), and each
//!   item has an *appeal* `q`, Gaussian with standard deviation
//!   `item_quality` (default 1), that no embedding shows.
//! - **Users** have a few long-term interest topics with Dirichlet-like
//!   weights, one *lifelong* topic (a strong interest the user rarely
//!   browses: visible in a long history, seldom in the newest actions), and
//!   a few disliked topics.
//! - **Sessions.** A user's log is a series of sessions (gaps of hours to a
//!   day). A session has a topic, drawn from the interests (the lifelong one
//!   with a small probability), that may *drift* to another interest after
//!   any action. In a session the user is shown items — mostly of the
//!   session topic, some of other interests, some disliked, some random —
//!   and each impression becomes a repin, a click, a hide or a plain
//!   impression, drawn from the ground-truth model below.
//! - **Session focus** (item-level taste). A session's taste lies
//!   somewhere inside its topic: a *focus*, a unit vector drawn around the
//!   topic's centroid like an item (`focus_noise`), redrawn when the topic
//!   drifts. An item of the session topic gets `taste = focus_weight · z`,
//!   `z` being its cosine to the focus in standard deviations of its
//!   topic's items. The organic feed shows, for the session topic, the item
//!   nearest the focus among `feed_focus` random ones of the topic.
//! - **Ground truth.** With `s` the current session topic and `t` the
//!   item's topic: `P(repin) = σ(−3.2 + 2.6·[t = s] + 1.0·[t ∈
//!   interests] + 1.6·[t = lifelong] + taste + q + shift)`, `P(click) =
//!   σ(−2.4 + 1.8·[t = s] + 0.8·[t ∈ interests] + 0.5·(taste + q) +
//!   shift)`,
//!   `P(hide) = σ(−4.5 + 4.0·[t ∈ disliked])`; a hide excludes the others
//!   (`shift` = `engagement_shift`, default 0). [`GroundTruth`] keeps each
//!   logged candidate's expected utility under these probabilities, so an
//!   evaluation can say how far a model is from the best possible ranking.
//! - **Logged requests.** During a session the feed is ranked now and then:
//!   a slate of `slate` candidates (a third from the session topic, a third
//!   from other interests, the rest disliked or random), labelled by the
//!   same model. What the user did with the slate is appended to the log
//!   right after the request, so later requests see it.
//!
//! # Why each signal is there
//!
//! - *The realtime sequence beats a model without it*: the session topic
//!   moves the repin log-odds by 2.6 and is only visible in the newest
//!   actions; the no-sequence baseline sees the candidate and the user's
//!   long-term feature (the mean embedding of all earlier positives), which
//!   knows the interests but not which one is being browsed now.
//! - *Hides*: disliked topics show up as hide actions in the sequence, never
//!   in the positives the baseline's user feature averages.
//! - *Item-level taste is there to learn*: ranking the slate's
//!   session-topic items needs the focus, which only the newest positives
//!   show (they cluster around it). With the defaults the ground truth
//!   reaches HIT@3 repin ≈ 2.24 on the held-out requests against ≈ 1.99
//!   for the same truth without the focus term — room a model can only
//!   fill by reading the items of the sequence finely, not just their
//!   topic.
//! - *The item table has to be learned*: the shipped vectors are noisy and
//!   the appeal `q` is in none of them, so a model must learn each item's
//!   row from engagement; the Next Action Loss, which adds the user's next
//!   positives as targets, is extra data for exactly that.
//! - *The Next Action Loss has signal*: the user's next positive after a
//!   request is an item of the session topic near the focus, which is what
//!   the newest encoder row should represent; impression negatives (slate
//!   items and later impressions the user passed over) come from the
//!   user's own topics, so they separate the session and its focus from
//!   the user's other interests, where in-batch negatives (other users'
//!   next items) are spread over every topic and reach the whole item
//!   table.
//! - *Lifelong history adds signal beyond the newest actions*: the lifelong
//!   topic carries a large repin bonus but is rarely browsed, so the newest
//!   100 actions often do not show it while a long history does.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transact_seq::{Action, ActionType, Surface};

use super::{
    Dataset, ItemCatalog, ItemEmbeddings, LoggedCandidate, LoggedRequest, UserHistory,
    default_heads, default_utility, label_bit,
};
use crate::data::{HEAD_CLICK, HEAD_HIDE, HEAD_REPIN};
use crate::eval::{EvalError, Query, Scorer};
use crate::trainer::TrainConfig;

/// Size and shape of the synthetic world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Topics.
    pub topics: usize,
    /// Embedding width.
    pub dim: usize,
    /// Standard deviation of the per-coordinate noise around the topic
    /// centroid (the centroid has norm 1).
    pub item_noise: f32,
    /// Long-term interest topics per user (besides the lifelong one).
    pub interests: usize,
    /// Disliked topics per user.
    pub disliked: usize,
    /// Sessions per user.
    pub sessions: usize,
    /// Sessions per user before the logged ones: the same behaviour, no
    /// logged requests — a longer history than the realtime sequence holds
    /// (0 by default; [`SyntheticConfig::lifelong`] sets it).
    #[serde(default)]
    pub history_sessions: usize,
    /// Impressions per session, inclusive range.
    pub session_len: (usize, usize),
    /// Probability, after each impression, that the session topic drifts to
    /// another interest.
    pub drift: f64,
    /// Probability that a session is about the lifelong topic.
    pub lifelong_session: f64,
    /// Logged requests per session, inclusive range.
    pub requests_per_session: (usize, usize),
    /// Candidates per logged request.
    pub slate: usize,
    /// Start of the log, ms since the epoch.
    pub start_ms: i64,
    /// Item-level taste: repin and click log-odds added per standard
    /// deviation of an item's cosine to the session's focus, for items of
    /// the session topic (0 = topic-level taste only).
    pub focus_weight: f64,
    /// Standard deviation of the per-coordinate noise of a session focus
    /// around its topic's centroid.
    pub focus_noise: f32,
    /// The organic feed shows, for the session topic, the item nearest the
    /// focus among this many random ones of the topic (1 = no focus bias).
    pub feed_focus: usize,
    /// Added to every repin and click log-odds: negative values make
    /// engagement, and so the main task's positive labels, rarer.
    pub engagement_shift: f64,
    /// Added to the repin and click log-odds of logged slate candidates
    /// only (on top of `engagement_shift`): negative values make the main
    /// task's labels rarer than engagement in the organic feed.
    pub slate_shift: f64,
    /// Standard deviation of the per-coordinate noise between an item's
    /// true vector (which decides the focus taste) and the embedding the
    /// dataset ships (then normalised): 0 ships the true vectors; above 0
    /// the model has to learn the items' fine position from engagement.
    pub embedding_noise: f32,
    /// Standard deviation of a per-item appeal added to every user's repin
    /// log-odds (half of it to the click log-odds): some items are simply
    /// liked more. The embeddings do not show it; a learned item table can.
    pub item_quality: f64,
    /// Draw each slate candidate the way the organic feed draws an
    /// impression (mostly the session topic near its focus) instead of a
    /// third each from the session topic, the other interests and the
    /// disliked or random items.
    pub slate_like_feed: bool,
}

impl Default for SyntheticConfig {
    /// 800 users, 4,000 items in 24 topics, 32-d embeddings, 3 interests,
    /// 1 lifelong topic and 3 disliked topics per user, 14 sessions of 8–20
    /// impressions, 1–2 requests of 10 candidates per session (about
    /// 16,800 requests); shipped embeddings a noisy view of the true
    /// vectors (`embedding_noise` 0.3) and per-item appeal of standard
    /// deviation 1 (`item_quality`), so the item table has to be learned.
    fn default() -> Self {
        Self {
            users: 800,
            items: 4_000,
            topics: 24,
            dim: 32,
            item_noise: 0.12,
            interests: 3,
            disliked: 3,
            sessions: 14,
            history_sessions: 0,
            session_len: (8, 20),
            drift: 0.08,
            lifelong_session: 0.04,
            requests_per_session: (1, 2),
            slate: 10,
            start_ms: 1_700_000_000_000,
            focus_weight: 1.5,
            focus_noise: 0.12,
            feed_focus: 3,
            engagement_shift: 0.0,
            slate_shift: 0.0,
            embedding_noise: 0.3,
            item_quality: 1.0,
            slate_like_feed: false,
        }
    }
}

impl SyntheticConfig {
    /// The defaults with 60 history sessions before the 14 logged ones:
    /// about 1,000 actions per user before the first request, so a
    /// lifelong interest (a topic browsed in 4% of sessions) is in the
    /// history far more often than in its newest 50 actions — the regime
    /// TransAct V2 is for. The logged requests are as many as the defaults'.
    pub fn lifelong() -> Self {
        Self {
            history_sessions: 60,
            ..Self::default()
        }
    }

    /// Checks that the world can be built.
    pub fn validate(&self) -> Result<(), String> {
        let need = 1 + self.interests + self.disliked;
        if self.users == 0 || self.items == 0 || self.dim == 0 || self.slate == 0 {
            return Err("users, items, dim and slate must be positive".into());
        }
        if self.topics < need {
            return Err(format!(
                "{} topics; each user needs {need} distinct ones (interests + lifelong + disliked)",
                self.topics
            ));
        }
        if self.items < self.topics {
            return Err(format!("{} items for {} topics", self.items, self.topics));
        }
        if self.interests == 0 {
            return Err("at least one interest per user".into());
        }
        if self.session_len.0 == 0 || self.session_len.0 > self.session_len.1 {
            return Err(format!("bad session_len {:?}", self.session_len));
        }
        if self.requests_per_session.0 > self.requests_per_session.1 {
            return Err(format!(
                "bad requests_per_session {:?}",
                self.requests_per_session
            ));
        }
        for (name, p) in [
            ("drift", self.drift),
            ("lifelong_session", self.lifelong_session),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability, got {p}"));
            }
        }
        if !(self.item_noise.is_finite() && self.item_noise >= 0.0) {
            return Err(format!("item_noise {}", self.item_noise));
        }
        if !(self.focus_noise.is_finite() && self.focus_noise >= 0.0) {
            return Err(format!("focus_noise {}", self.focus_noise));
        }
        if !self.focus_weight.is_finite() {
            return Err(format!("focus_weight {}", self.focus_weight));
        }
        if !(self.embedding_noise.is_finite() && self.embedding_noise >= 0.0) {
            return Err(format!("embedding_noise {}", self.embedding_noise));
        }
        if !(self.item_quality.is_finite() && self.item_quality >= 0.0) {
            return Err(format!("item_quality {}", self.item_quality));
        }
        if !self.slate_shift.is_finite() {
            return Err(format!("slate_shift {}", self.slate_shift));
        }
        if !self.engagement_shift.is_finite() {
            return Err(format!("engagement_shift {}", self.engagement_shift));
        }
        if self.feed_focus == 0 {
            return Err("feed_focus must be at least 1".into());
        }
        Ok(())
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What one user is like.
struct Persona {
    interests: Vec<usize>,
    weights: Vec<f64>,
    lifelong: usize,
    disliked: Vec<usize>,
    shift: f64,
    slate_shift: f64,
}

impl Persona {
    fn draw(cfg: &SyntheticConfig, rng: &mut ChaCha8Rng) -> Self {
        let mut topics: Vec<usize> = (0..cfg.topics).collect();
        // Partial Fisher–Yates: the first `need` are distinct random topics.
        let need = 1 + cfg.interests + cfg.disliked;
        for i in 0..need {
            let j = rng.random_range(i..topics.len());
            topics.swap(i, j);
        }
        let interests = topics[..cfg.interests].to_vec();
        let lifelong = topics[cfg.interests];
        let disliked = topics[cfg.interests + 1..need].to_vec();
        // Gamma(1)-like weights: −ln U, normalised.
        let raw: Vec<f64> = (0..cfg.interests)
            .map(|_| -rng.random_range(f64::EPSILON..1.0).ln() + 0.2)
            .collect();
        let sum: f64 = raw.iter().sum();
        Self {
            interests,
            weights: raw.iter().map(|w| w / sum).collect(),
            lifelong,
            disliked,
            shift: cfg.engagement_shift,
            slate_shift: cfg.slate_shift,
        }
    }

    fn pick_interest(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut x: f64 = rng.random();
        for (t, w) in self.interests.iter().zip(&self.weights) {
            if x < *w {
                return *t;
            }
            x -= w;
        }
        self.interests[self.interests.len() - 1]
    }

    /// Label bits for an item of `topic` shown while browsing `session`;
    /// `taste` is added to the repin and click log-odds (the item-level
    /// focus term, 0 outside the session topic).
    fn react(
        &self,
        topic: usize,
        session: usize,
        taste: f64,
        slate: bool,
        rng: &mut ChaCha8Rng,
    ) -> u8 {
        let (p_hide, p_repin, p_click) = self.probs(topic, session, taste, slate);
        if rng.random_bool(p_hide) {
            return label_bit(HEAD_HIDE);
        }
        let mut bits = 0;
        if rng.random_bool(p_repin) {
            bits |= label_bit(HEAD_REPIN);
        }
        if rng.random_bool(p_click) {
            bits |= label_bit(HEAD_CLICK);
        }
        bits
    }

    /// The ground truth: `(P(hide), P(repin | no hide), P(click | no hide))`.
    fn probs(&self, topic: usize, session: usize, taste: f64, slate: bool) -> (f64, f64, f64) {
        let shift = self.shift + if slate { self.slate_shift } else { 0.0 };
        let interest = self.interests.contains(&topic);
        let disliked = self.disliked.contains(&topic);
        let lifelong = topic == self.lifelong;
        let in_session = f64::from(u8::from(topic == session));
        let p_hide = sigmoid(-4.5 + 4.0 * f64::from(u8::from(disliked)));
        let p_repin = sigmoid(
            -3.2 + 2.6 * in_session
                + 1.0 * f64::from(u8::from(interest))
                + 1.6 * f64::from(u8::from(lifelong))
                + taste
                + shift,
        );
        let p_click = sigmoid(
            -2.4 + 1.8 * in_session + 0.8 * f64::from(u8::from(interest)) + 0.5 * taste + shift,
        );
        (p_hide, p_repin, p_click)
    }
}

/// Items by topic and their embeddings.
struct Catalog {
    topic_of: Vec<usize>,
    by_topic: Vec<Vec<u32>>,
    centroids: Vec<Vec<f64>>,
    emb: Vec<f32>,
    dim: usize,
}

/// Where in its topic a session's taste lies: a unit vector near the
/// topic's centroid, with the mean and spread of the topic's items' cosines
/// to it (to score an item in standard deviations).
struct Focus {
    topic: usize,
    v: Vec<f64>,
    mean: f64,
    std: f64,
}

impl Catalog {
    fn draw(cfg: &SyntheticConfig, rng: &mut ChaCha8Rng) -> Self {
        let d = cfg.dim;
        let centroids: Vec<Vec<f64>> = (0..cfg.topics)
            .map(|_| unit((0..d).map(|_| normal(rng)).collect()))
            .collect();
        let mut topic_of = Vec::with_capacity(cfg.items);
        let mut by_topic = vec![Vec::new(); cfg.topics];
        let mut emb = Vec::with_capacity(cfg.items * d);
        for i in 0..cfg.items {
            // Every topic gets items; the rest are spread at random.
            let t = if i < cfg.topics {
                i
            } else {
                rng.random_range(0..cfg.topics)
            };
            topic_of.push(t);
            by_topic[t].push(i as u32);
            let v = unit(
                centroids[t]
                    .iter()
                    .map(|c| c + f64::from(cfg.item_noise) * normal(rng))
                    .collect(),
            );
            emb.extend(v.iter().map(|&x| x as f32));
        }
        Self {
            topic_of,
            by_topic,
            centroids,
            emb,
            dim: d,
        }
    }

    fn item_of_topic(&self, t: usize, rng: &mut ChaCha8Rng) -> u32 {
        let list = &self.by_topic[t];
        list[rng.random_range(0..list.len())]
    }

    fn random(&self, rng: &mut ChaCha8Rng) -> u32 {
        rng.random_range(0..self.topic_of.len() as u32)
    }

    fn cos(&self, item: u32, v: &[f64]) -> f64 {
        let row = &self.emb[item as usize * self.dim..(item as usize + 1) * self.dim];
        row.iter().zip(v).map(|(&a, b)| f64::from(a) * b).sum()
    }

    /// A fresh focus in topic `t`.
    fn focus(&self, t: usize, noise: f32, rng: &mut ChaCha8Rng) -> Focus {
        let v = unit(
            self.centroids[t]
                .iter()
                .map(|c| c + f64::from(noise) * normal(rng))
                .collect(),
        );
        let list = &self.by_topic[t];
        let n = list.len() as f64;
        let (s, s2) = list.iter().fold((0.0, 0.0), |(s, s2), &i| {
            let c = self.cos(i, &v);
            (s + c, s2 + c * c)
        });
        let mean = s / n;
        let std = (s2 / n - mean * mean).max(0.0).sqrt().max(1e-6);
        Focus {
            topic: t,
            v,
            mean,
            std,
        }
    }

    /// How far `item` lies toward the focus, in standard deviations of its
    /// topic (0 for items of other topics).
    fn taste(&self, item: u32, f: &Focus) -> f64 {
        if self.topic_of[item as usize] == f.topic {
            (self.cos(item, &f.v) - f.mean) / f.std
        } else {
            0.0
        }
    }

    /// The item nearest the focus among `n` random items of its topic.
    fn focused_item(&self, f: &Focus, n: usize, rng: &mut ChaCha8Rng) -> u32 {
        let mut best = self.item_of_topic(f.topic, rng);
        let mut best_cos = self.cos(best, &f.v);
        for _ in 1..n {
            let i = self.item_of_topic(f.topic, rng);
            let c = self.cos(i, &f.v);
            if c > best_cos {
                best = i;
                best_cos = c;
            }
        }
        best
    }
}

/// An item of the organic feed: the session topic near the focus (60%),
/// another interest (20%), a disliked topic (10%) or any item (10%).
fn feed_item(
    catalog: &Catalog,
    p: &Persona,
    focus: &Focus,
    feed_focus: usize,
    rng: &mut ChaCha8Rng,
) -> u32 {
    let r: f64 = rng.random();
    if r < 0.6 {
        catalog.focused_item(focus, feed_focus, rng)
    } else if r < 0.8 {
        let it = p.interests[rng.random_range(0..p.interests.len())];
        catalog.item_of_topic(it, rng)
    } else if r < 0.9 {
        let dt = p.disliked[rng.random_range(0..p.disliked.len())];
        catalog.item_of_topic(dt, rng)
    } else {
        catalog.random(rng)
    }
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    v.into_iter().map(|x| x / n).collect()
}

fn action_of(bits: u8) -> ActionType {
    if bits & label_bit(HEAD_HIDE) != 0 {
        ActionType::HIDE
    } else if bits & label_bit(HEAD_REPIN) != 0 {
        ActionType::REPIN
    } else if bits & label_bit(HEAD_CLICK) != 0 {
        ActionType::CLICK
    } else {
        ActionType::IMPRESSION
    }
}

/// Fits `cfg`'s time scales to the world's: a session lasts about 10–20
/// minutes and hours pass between sessions, so the maximum random time
/// window becomes 5 minutes (the reference 1 hour would hide the whole
/// current session, and with it the session topic and focus, from most
/// training batches), and the Next Action Loss takes the user's next 5
/// positives within 15 minutes of the request (the rest of the session).
/// The shipped embeddings are only a noisy start and say nothing of an
/// item's appeal, so the item table is trained; the NAL weight is 0.1, and
/// impression negatives are used together with the in-batch ones (on this
/// world, impression negatives alone train the item table less well than
/// the in-batch ones: `docs/training.md`).
pub fn fit_training(train: &mut TrainConfig) {
    const MINUTE: i64 = 60_000;
    train.features.time_window_ms = 5 * MINUTE;
    train.v1.time_window_ms = 5 * MINUTE;
    train.features.nal_positives = 5;
    train.features.nal_horizon_ms = 15 * MINUTE;
    train.features.nal_in_batch_too = true;
    train.learn_items = true;
    train.nal_weight = 0.1;
}

/// The embeddings the dataset ships: the true item vectors, or with
/// `embedding_noise` a noisy, normalised view of them (its own stream, so
/// the log does not change with the noise).
fn shipped_embeddings(cfg: &SyntheticConfig, catalog: &Catalog, seed: u64) -> Vec<f32> {
    if cfg.embedding_noise == 0.0 {
        return catalog.emb.clone();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xE3B_ED00);
    let sigma = f64::from(cfg.embedding_noise);
    catalog
        .emb
        .chunks_exact(cfg.dim)
        .flat_map(|v| {
            unit(
                v.iter()
                    .map(|&x| f64::from(x) + sigma * normal(&mut rng))
                    .collect(),
            )
        })
        .map(|x| x as f32)
        .collect()
}

/// Generates the world for `seed` (the same config and seed give the same
/// dataset). Fails on an invalid config.
pub fn generate(cfg: &SyntheticConfig, seed: u64) -> Result<Dataset, String> {
    generate_with_truth(cfg, seed).map(|(d, _)| d)
}

/// The expected utility, under the default utility weights
/// ([`default_utility`]), of an item with the given ground-truth
/// probabilities.
fn expected_utility((hide, repin, click): (f64, f64, f64)) -> f32 {
    let v = |head: &str| f64::from(default_utility(head));
    ((1.0 - hide) * (repin * v("repin") + click * v("click")) + hide * v("hide")) as f32
}

/// What the world knows and a model can only estimate: for every logged
/// request, each candidate's expected utility (default weights: repin 1,
/// click 0.5, hide −2) under the ground truth. As a [`Scorer`] it ranks a
/// logged request's candidates by it, which gives the ceiling of HIT@k that
/// no model of the log can beat in expectation.
#[derive(Clone, Debug, Default)]
pub struct GroundTruth {
    /// `(user, request time)` → per candidate, in slate order,
    /// `[full truth, truth without the item-level focus term]`.
    by_request: HashMap<(u32, i64), Vec<[f32; 2]>>,
    /// `(user, request time)` → the session topic at the request.
    session_topic: HashMap<(u32, i64), usize>,
    /// Topic of each item index.
    item_topic: Vec<usize>,
}

/// [`GroundTruth`] without the item-level focus term, from
/// [`GroundTruth::topic_level`].
#[derive(Clone, Copy, Debug)]
pub struct TopicLevelTruth<'a>(&'a GroundTruth);

impl GroundTruth {
    /// The same truth, scoring without the item-level focus term: what a
    /// model that knew the user's topics and the session topic, but not
    /// where in the topic the session's taste lies, would rank by.
    pub fn topic_level(&self) -> TopicLevelTruth<'_> {
        TopicLevelTruth(self)
    }

    /// The topic of item index `item`.
    pub fn item_topic(&self, item: u32) -> Option<usize> {
        self.item_topic.get(item as usize).copied()
    }

    /// The topic the user was browsing at a logged request of theirs.
    pub fn session_topic(&self, user: u32, time_ms: i64) -> Option<usize> {
        self.session_topic.get(&(user, time_ms)).copied()
    }

    /// Writes column `col` of the request's utilities into `out`.
    fn fill(
        &self,
        q: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
        col: usize,
    ) -> Result<(), EvalError> {
        let u = self.by_request.get(&(q.user, q.time_ms)).ok_or_else(|| {
            EvalError::Scorer(format!(
                "no ground truth for user {} at {} ms: not a request of this world",
                q.user, q.time_ms
            ))
        })?;
        if u.len() != candidates.len() || out.len() != candidates.len() {
            return Err(EvalError::Scorer(format!(
                "the request of user {} at {} ms has {} candidates, {} were given",
                q.user,
                q.time_ms,
                u.len(),
                candidates.len()
            )));
        }
        for (o, v) in out.iter_mut().zip(u) {
            *o = v[col];
        }
        Ok(())
    }
}

impl Scorer for GroundTruth {
    fn score(
        &self,
        _data: &Dataset,
        q: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        self.fill(q, candidates, out, 0)
    }
}

impl Scorer for TopicLevelTruth<'_> {
    fn score(
        &self,
        _data: &Dataset,
        q: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        self.0.fill(q, candidates, out, 1)
    }
}

/// [`generate`], with the world's [`GroundTruth`] of its logged requests.
pub fn generate_with_truth(
    cfg: &SyntheticConfig,
    seed: u64,
) -> Result<(Dataset, GroundTruth), String> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let catalog = Catalog::draw(cfg, &mut rng);
    // Per-item appeal, from its own stream (zero draws nothing).
    let appeal: Vec<f64> = if cfg.item_quality > 0.0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA9_9EA1);
        (0..cfg.items)
            .map(|_| cfg.item_quality * normal(&mut rng))
            .collect()
    } else {
        vec![0.0; cfg.items]
    };
    let mut users = Vec::with_capacity(cfg.users);
    let mut requests = Vec::new();
    let mut truth = HashMap::new();
    let mut session_topic = HashMap::new();
    let mut utility = Vec::new();
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    for u in 0..cfg.users {
        // One stream per user: the world does not depend on the order users
        // are generated in beyond the catalogue.
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let p = Persona::draw(cfg, &mut rng);
        let mut t = cfg.start_ms + rng.random_range(0..48 * HOUR);
        let mut actions = Vec::new();
        for session in 0..cfg.history_sessions + cfg.sessions {
            let logged = session >= cfg.history_sessions;
            let mut topic = if rng.random_bool(cfg.lifelong_session) {
                p.lifelong
            } else {
                p.pick_interest(&mut rng)
            };
            let mut focus = catalog.focus(topic, cfg.focus_noise, &mut rng);
            let len = rng.random_range(cfg.session_len.0..=cfg.session_len.1);
            let n_req = if logged {
                rng.random_range(cfg.requests_per_session.0..=cfg.requests_per_session.1)
            } else {
                0
            };
            // Requests come after a few actions of the session.
            let mut at: Vec<usize> = (0..n_req)
                .map(|_| rng.random_range(len.min(3)..=len))
                .collect();
            at.sort_unstable();
            let mut next_req = 0;
            for step in 0..=len {
                while next_req < at.len() && at[next_req] == step {
                    next_req += 1;
                    t += rng.random_range(5_000..30_000);
                    let mut slate = Vec::with_capacity(cfg.slate);
                    for c in 0..cfg.slate {
                        let third = cfg.slate.div_ceil(3);
                        let item = if cfg.slate_like_feed {
                            feed_item(&catalog, &p, &focus, cfg.feed_focus, &mut rng)
                        } else if c < third {
                            catalog.item_of_topic(topic, &mut rng)
                        } else if c < 2 * third {
                            let it = p.interests[rng.random_range(0..p.interests.len())];
                            catalog.item_of_topic(it, &mut rng)
                        } else if rng.random_bool(0.5) {
                            let dt = p.disliked[rng.random_range(0..p.disliked.len())];
                            catalog.item_of_topic(dt, &mut rng)
                        } else {
                            catalog.random(&mut rng)
                        };
                        let item_topic = catalog.topic_of[item as usize];
                        let q = appeal[item as usize];
                        let taste = cfg.focus_weight * catalog.taste(item, &focus) + q;
                        let labels = p.react(item_topic, topic, taste, true, &mut rng);
                        utility.push([
                            expected_utility(p.probs(item_topic, topic, taste, true)),
                            expected_utility(p.probs(item_topic, topic, q, true)),
                        ]);
                        slate.push(LoggedCandidate { item, labels });
                    }
                    requests.push(LoggedRequest {
                        user: u as u32,
                        time_ms: t,
                        candidates: slate.clone(),
                    });
                    truth.insert((u as u32, t), std::mem::take(&mut utility));
                    session_topic.insert((u as u32, t), topic);
                    // What the user did with the slate, in slate order.
                    for c in &slate {
                        t += rng.random_range(1_000..8_000);
                        actions.push(Action {
                            item_id: u64::from(c.item),
                            action_type: action_of(c.labels),
                            timestamp_ms: t,
                            surface: Surface(0),
                        });
                    }
                }
                if step == len {
                    break;
                }
                // One organic impression.
                let item = feed_item(&catalog, &p, &focus, cfg.feed_focus, &mut rng);
                let taste = cfg.focus_weight * catalog.taste(item, &focus) + appeal[item as usize];
                let bits = p.react(
                    catalog.topic_of[item as usize],
                    topic,
                    taste,
                    false,
                    &mut rng,
                );
                t += rng.random_range(10_000..120_000);
                actions.push(Action {
                    item_id: u64::from(item),
                    action_type: action_of(bits),
                    timestamp_ms: t,
                    surface: Surface(0),
                });
                if rng.random_bool(cfg.drift) {
                    topic = p.pick_interest(&mut rng);
                    focus = catalog.focus(topic, cfg.focus_noise, &mut rng);
                }
            }
            t += rng.random_range(2 * HOUR..30 * HOUR);
        }
        users.push(UserHistory {
            raw_id: format!("u{u}"),
            actions,
            weight: 1.0,
        });
    }
    requests.sort_by_key(|r| (r.time_ms, r.user));
    let data = Dataset {
        name: format!("synthetic (seed {seed})"),
        heads: default_heads(),
        items: ItemCatalog {
            count: cfg.items,
            raw_ids: (0..cfg.items).map(|i| i.to_string()).collect(),
            embeddings: Some(ItemEmbeddings {
                dim: cfg.dim,
                data: shipped_embeddings(cfg, &catalog, seed),
            }),
        },
        users,
        requests,
    };
    Ok((
        data,
        GroundTruth {
            by_request: truth,
            session_topic,
            item_topic: catalog.topic_of,
        },
    ))
}

#[cfg(test)]
mod tests;
