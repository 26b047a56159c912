//! The key layout: one hash tag per user, so one user's keys share a
//! cluster slot, and one user counter per slot.

use std::sync::Arc;

use transact_seq::{SeqError, UserId};

/// Number of Redis Cluster hash slots.
pub const SLOTS: usize = 16_384;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster
/// hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, as `CLUSTER KEYSLOT` computes it: the CRC16
/// of the key's hash tag (the bytes between its first `{` and the first `}`
/// after it, when not empty), else of the whole key, modulo 16,384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// Checks that a prefix is usable: not empty, no `{` or `}`.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), SeqError> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(SeqError::InvalidConfig(format!(
            "redis key prefix {prefix:?} must be non-empty and hold no '{{' or '}}' \
             (each key's first {{...}} must be the user's hash tag)"
        )));
    }
    Ok(())
}

/// For every slot `s`, the smallest `i` such that the hash tag `c:<i>`
/// lands in slot `s`: the tag of that slot's user counter.
fn slot_tags() -> Vec<u32> {
    let mut tags = vec![u32::MAX; SLOTS];
    let mut missing = SLOTS;
    let mut i: u32 = 0;
    while missing > 0 && i < u32::MAX {
        let slot = usize::from(crc16(format!("c:{i}").as_bytes()) % SLOTS as u16);
        if let Some(t) = tags.get_mut(slot)
            && *t == u32::MAX
        {
            *t = i;
            missing -= 1;
        }
        i += 1;
    }
    tags
}

/// Where a store keeps each user's data: `<prefix>:{u:<user>}:<what>`.
///
/// | key | type | holds |
/// |---|---|---|
/// | `<prefix>:{u:<user>}:rt` | sorted set | the realtime sequence |
/// | `<prefix>:{u:<user>}:imp` | sorted set | the impressions |
/// | `<prefix>:{u:<user>}:ll` | sorted set | the lifelong multi-hot tokens |
/// | `<prefix>:{u:<user>}:seq` | string (integer) | the user's arrival counter |
/// | `<prefix>:{u:<user>}:ids` | list | ids of the user's newest appends (de-duplication of retried requests) |
/// | `<prefix>:{c:<i>}:users` | string (integer) | users with data in slot `s`, where `c:<i>` hashes to `s` |
///
/// Everything of one user, and the counter of the user's slot, is in one
/// cluster slot, so an append is one atomic script in a cluster too. See
/// `docs/redis.md` for the member encoding.
#[derive(Clone, Debug)]
pub struct KeyLayout {
    prefix: String,
    /// Counter tag per slot (see [`slot_tags`]).
    tags: Arc<[u32]>,
}

impl KeyLayout {
    /// The layout of the store with this key prefix (non-empty, no `{`/`}`).
    pub fn new(prefix: &str) -> Result<KeyLayout, SeqError> {
        check_prefix(prefix)?;
        Ok(KeyLayout {
            prefix: prefix.to_string(),
            tags: slot_tags().into(),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn user_key(&self, user: UserId, what: &str) -> String {
        format!("{}:{{u:{user}}}:{what}", self.prefix)
    }

    /// The user's realtime sequence (sorted set).
    pub fn realtime(&self, user: UserId) -> String {
        self.user_key(user, "rt")
    }

    /// The user's impressions (sorted set).
    pub fn impressions(&self, user: UserId) -> String {
        self.user_key(user, "imp")
    }

    /// The user's lifelong tokens (sorted set).
    pub fn lifelong(&self, user: UserId) -> String {
        self.user_key(user, "ll")
    }

    /// The user's arrival counter (string holding an integer).
    pub fn sequence(&self, user: UserId) -> String {
        self.user_key(user, "seq")
    }

    /// The ids of the user's newest appends (list).
    pub fn append_ids(&self, user: UserId) -> String {
        self.user_key(user, "ids")
    }

    /// The cluster slot every key of `user` is in.
    pub fn slot(&self, user: UserId) -> u16 {
        key_slot(format!("{{u:{user}}}").as_bytes())
    }

    /// The user counter of `slot` (0..16,384): the number of users with
    /// data whose keys are in that slot.
    pub fn slot_counter(&self, slot: u16) -> String {
        let tag = self.tags.get(usize::from(slot)).copied().unwrap_or(0);
        format!("{}:{{c:{tag}}}:users", self.prefix)
    }

    /// The user counter of the slot `user` is in.
    pub fn user_counter(&self, user: UserId) -> String {
        self.slot_counter(self.slot(user))
    }

    /// The user counters of all 16,384 slots (`user_count` sums them).
    pub fn all_counters(&self) -> Vec<String> {
        (0..SLOTS as u16).map(|s| self.slot_counter(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` (and the cluster spec's CRC16 check value).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty first tag hashes the whole key.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"feed:{u:42}:rt"), 8980);
    }

    #[test]
    fn every_slot_has_a_counter_in_it() {
        let keys = KeyLayout::new("p").expect("layout");
        for s in [0u16, 1, 777, 16_383] {
            assert_eq!(key_slot(keys.slot_counter(s).as_bytes()), s);
        }
        let all = keys.all_counters();
        assert_eq!(all.len(), SLOTS);
        for (s, k) in all.iter().enumerate() {
            assert_eq!(usize::from(key_slot(k.as_bytes())), s, "{k}");
        }
    }

    #[test]
    fn a_users_keys_share_a_slot() {
        let keys = KeyLayout::new("feed").expect("layout");
        for user in [0u64, 1, 42, u64::MAX] {
            let slot = keys.slot(user);
            for k in [
                keys.realtime(user),
                keys.impressions(user),
                keys.lifelong(user),
                keys.sequence(user),
                keys.append_ids(user),
                keys.user_counter(user),
            ] {
                assert_eq!(key_slot(k.as_bytes()), slot, "{k}");
            }
        }
        assert_eq!(keys.realtime(42), "feed:{u:42}:rt");
    }
}
