//! From a log's raw ids (numbers or any strings) to the `u64` keys the
//! store and the item table use.

use std::collections::HashMap;

use crate::FeatureError;

/// Top bit: set on keys of raw ids that are not canonical decimals.
const HASHED: u64 = 1 << 63;

/// The key of a raw id: a canonical decimal below 2⁶³ (`"0"`, `"42"`; no
/// sign, no leading zero, no spaces) is its own value, so numeric logs keep
/// their ids; any other string is its 64-bit FNV-1a hash with the top bit
/// set, so it never meets a numeric key. Importer, ingest, bundle and the
/// `rank` command all key ids through this one function.
///
/// ```
/// use transact_features::raw_id_key;
/// assert_eq!(raw_id_key("31"), 31);
/// assert!(raw_id_key("tt0114709") >= 1 << 63);
/// assert_ne!(raw_id_key("031"), 31);
/// ```
pub fn raw_id_key(raw: &str) -> u64 {
    let canonical = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_digit())
        && (raw == "0" || !raw.starts_with('0'));
    if canonical
        && let Ok(v) = raw.parse::<u64>()
        && v < HASHED
    {
        return v;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | HASHED
}

/// The keys of a list of distinct raw ids, checked for collisions (two
/// strings whose hashes meet are an error naming both).
#[derive(Clone, Debug, Default)]
pub struct RawIdKeys {
    keys: Vec<u64>,
}

impl RawIdKeys {
    /// Keys `raw[i]` for every `i`; fails when two distinct raw ids share a key.
    pub fn new<S: AsRef<str>>(raw: &[S]) -> Result<Self, FeatureError> {
        let mut seen: HashMap<u64, usize> = HashMap::with_capacity(raw.len());
        let mut keys = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let k = raw_id_key(r.as_ref());
            if let Some(&j) = seen.get(&k)
                && raw[j].as_ref() != r.as_ref()
            {
                return Err(FeatureError::KeyCollision {
                    first: raw[j].as_ref().to_string(),
                    second: r.as_ref().to_string(),
                    key: k,
                });
            }
            seen.insert(k, i);
            keys.push(k);
        }
        Ok(Self { keys })
    }

    /// The key of index `i`.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.keys.get(i).copied()
    }

    /// Every key, by index.
    pub fn as_slice(&self) -> &[u64] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_value_and_strings_hash_apart() {
        assert_eq!(raw_id_key("0"), 0);
        assert_eq!(raw_id_key("9223372036854775807"), (1 << 63) - 1);
        for s in [
            "",
            "-1",
            "+1",
            "01",
            " 1",
            "9223372036854775808",
            "a",
            "1e3",
        ] {
            assert!(raw_id_key(s) & HASHED != 0, "{s}");
        }
        assert_ne!(raw_id_key("a"), raw_id_key("b"));
        let keys = RawIdKeys::new(&["7", "x", "7"]).expect("keys");
        assert_eq!(keys.get(0), Some(7));
        assert_eq!(keys.get(2), Some(7));
        assert_eq!(keys.as_slice().len(), 3);
    }
}
