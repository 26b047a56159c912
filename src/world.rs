//! A small generated world for the demo: items in topic clusters, users with
//! a few stable interests, and action histories that follow them.
//!
//! This is not the training world (that one, with drifting sessions and
//! logged impressions, belongs to the training crate); it only gives the
//! demo realistic-looking data to store and rank.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_embed::{ItemTable, Precision};
use transact_seq::{Action, ActionType, ItemId, SeqError, SequenceStore, Surface, UserId};

/// Sizes and seed of a demo world.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Number of users (ids `1..=users`).
    pub users: usize,
    /// Number of items (ids `0..items`).
    pub items: usize,
    /// Number of topic clusters.
    pub topics: usize,
    /// Item embedding width.
    pub item_emb_dim: usize,
    /// Fewest and most actions per user.
    pub actions_per_user: (usize, usize),
    /// Time of the newest possible action, ms since the epoch.
    pub now_ms: i64,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            users: 200,
            items: 5_000,
            topics: 24,
            item_emb_dim: 32,
            actions_per_user: (40, 600),
            now_ms: 1_700_000_000_000,
            seed: 7,
        }
    }
}

/// The generated world.
#[derive(Clone, Debug)]
pub struct World {
    /// The configuration it was made from.
    pub config: WorldConfig,
    /// Item embeddings.
    pub items: ItemTable,
    /// Topic of each item, by item id.
    pub item_topic: Vec<usize>,
    /// Interest topics of each user (index `user - 1`).
    pub interests: Vec<Vec<usize>>,
}

impl World {
    /// Generates a world (deterministic for a config).
    pub fn generate(config: WorldConfig) -> Result<Self, transact_embed::EmbedError> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let d = config.item_emb_dim;
        let topics = config.topics.max(1);
        let centers: Vec<Vec<f32>> = (0..topics).map(|_| unit(&mut rng, d)).collect();
        let mut items = ItemTable::new(d, Precision::F32)?;
        let mut item_topic = Vec::with_capacity(config.items);
        let mut emb = vec![0.0f32; d];
        for id in 0..config.items {
            let t = rng.random_range(0..topics);
            let noise = unit(&mut rng, d);
            for j in 0..d {
                emb[j] = 0.45 * centers[t][j] + 0.2 * noise[j];
            }
            items.insert(id as ItemId, &emb)?;
            item_topic.push(t);
        }
        let interests = (0..config.users)
            .map(|_| {
                let k = rng.random_range(1..=3usize.min(topics));
                let mut v: Vec<usize> = Vec::with_capacity(k);
                while v.len() < k {
                    let t = rng.random_range(0..topics);
                    if !v.contains(&t) {
                        v.push(t);
                    }
                }
                v
            })
            .collect();
        Ok(Self {
            config,
            items,
            item_topic,
            interests,
        })
    }

    /// Items of one topic.
    pub fn items_of(&self, topic: usize) -> impl Iterator<Item = ItemId> + '_ {
        self.item_topic
            .iter()
            .enumerate()
            .filter(move |(_, t)| **t == topic)
            .map(|(i, _)| i as ItemId)
    }

    /// Writes every user's history into `store`; returns the number of actions.
    pub fn fill_store(&self, store: &dyn SequenceStore) -> Result<usize, SeqError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ 0x5eed);
        let by_topic: Vec<Vec<ItemId>> = (0..self.config.topics.max(1))
            .map(|t| self.items_of(t).collect())
            .collect();
        let (lo, hi) = self.config.actions_per_user;
        let mut total = 0;
        let mut batch = Vec::new();
        for (u, interests) in self.interests.iter().enumerate() {
            let n = rng.random_range(lo..=hi.max(lo));
            // Actions spread over the last 30 days, oldest first.
            let mut t = self.config.now_ms - 30 * 86_400_000;
            let step = (30 * 86_400_000 / (n.max(1) as i64)).max(1);
            batch.clear();
            for _ in 0..n {
                t += rng.random_range(1..=2 * step);
                let t = t.min(self.config.now_ms);
                let on_interest = rng.random_bool(0.85);
                let topic = if on_interest {
                    interests[rng.random_range(0..interests.len())]
                } else {
                    rng.random_range(0..by_topic.len())
                };
                let pool = &by_topic[topic];
                if pool.is_empty() {
                    continue;
                }
                let item = pool[rng.random_range(0..pool.len())];
                let liked = interests.contains(&topic);
                let action_type = match (liked, rng.random_range(0..10)) {
                    (true, 0..=2) => ActionType::REPIN,
                    (true, _) => ActionType::CLICK,
                    (false, 0..=4) => ActionType::HIDE,
                    (false, _) => ActionType::CLICK,
                };
                batch.push(Action {
                    item_id: item,
                    action_type,
                    timestamp_ms: t,
                    surface: Surface(rng.random_range(0..3)),
                });
            }
            store.append(u as UserId + 1, &batch)?;
            total += batch.len();
        }
        Ok(total)
    }

    /// A candidate slate for a user: half from the user's interests, half from
    /// other topics, shuffled.
    pub fn candidates_for(&self, user: UserId, n: usize, seed: u64) -> Vec<ItemId> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ user.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let Some(interests) = user
            .checked_sub(1)
            .and_then(|i| self.interests.get(i as usize))
        else {
            return (0..n)
                .map(|_| rng.random_range(0..self.config.items) as ItemId)
                .collect();
        };
        let mut out = Vec::with_capacity(n);
        let mut guard = 0;
        while out.len() < n && guard < 100 * n {
            guard += 1;
            let id = rng.random_range(0..self.config.items);
            let on = interests.contains(&self.item_topic[id]);
            if on == (out.len() % 2 == 0) && !out.contains(&(id as ItemId)) {
                out.push(id as ItemId);
            }
        }
        out
    }

    /// Whether the item's topic is one of the user's interests.
    pub fn is_on_interest(&self, user: UserId, item: ItemId) -> bool {
        let Some(interests) = user
            .checked_sub(1)
            .and_then(|i| self.interests.get(i as usize))
        else {
            return false;
        };
        self.item_topic
            .get(item as usize)
            .is_some_and(|t| interests.contains(t))
    }
}

fn unit(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.into_iter().map(|x| x / norm).collect()
}
