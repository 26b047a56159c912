//! The bytes: sorted-set members, the append script's packed arguments and
//! the lexicographic range bounds of reads.
//!
//! Every sorted set has score 0 for all members, so members are ordered by
//! their bytes; each starts with the big-endian timestamp (non-negative, so
//! byte order is time order) and then the user's big-endian arrival number,
//! so equal timestamps keep arrival order. Newest first is
//! `ZREVRANGEBYLEX`.
//!
//! ```text
//! realtime / impression member (28 bytes):
//!   timestamp u64 BE | arrival u64 BE | item u64 BE | action type u16 BE | surface u16 BE
//! lifelong token member (34 bytes):
//!   timestamp u64 BE | arrival u64 BE | item u64 BE | surface u16 BE | type mask u64 BE
//! ```

use redis::Value;
use transact_seq::{Action, SeqError, SequenceBuf, StoreConfig, TokenBuf};

/// Bytes of a realtime or impression member.
pub(crate) const ACTION_MEMBER: usize = 28;
/// Bytes of a lifelong token member.
pub(crate) const TOKEN_MEMBER: usize = 34;
/// Bytes of one action in the append script's packed argument.
pub(crate) const RECORD: usize = 49;
/// Largest packed argument of one append, as the embedded store's record limit.
pub(crate) const MAX_PACKED_BYTES: usize = 64 << 20;

/// Appends one action's script record (see `append.lua`):
///
/// ```text
/// kind u8 (1 = impression, 0 = explicit) | timestamp u64 BE | item u64 BE | type u16 BE | surface u16 BE
/// | window max bound (9: '(' + u64 BE of t + window + 1) | window min bound (9: '[' + u64 BE of max(t - window, 0))
/// | mask byte position u8 (1..=8) | mask bit u8 | token mask u64 BE
/// ```
///
/// `a` is validated: its timestamp is not negative; an explicit type of a
/// store with a lifelong sequence is below 64.
pub(crate) fn push_record(out: &mut Vec<u8>, a: &Action, config: &StoreConfig) {
    let t = u64::try_from(a.timestamp_ms).unwrap_or(0);
    let window = u64::try_from(config.multi_hot_window_ms).unwrap_or(0);
    let ty = a.action_type.0;
    out.push(u8::from(config.is_impression(a.action_type)));
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&a.item_id.to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&a.surface.0.to_be_bytes());
    // Tokens at t - window ..= t + window (both at most 2^63 - 1, so the
    // sum + 1 fits in u64).
    out.push(b'(');
    out.extend_from_slice(&(t + window + 1).to_be_bytes());
    out.push(b'[');
    out.extend_from_slice(&t.saturating_sub(window).to_be_bytes());
    let bit = u32::from(ty & 63);
    out.push(8 - (bit / 8) as u8);
    out.push(1u8 << (bit % 8));
    out.extend_from_slice(&(1u64 << bit).to_be_bytes());
}

/// The `max` bound of `ZREVRANGEBYLEX` for entries at or before a time.
pub(crate) fn max_bound(at_or_before_ms: Option<i64>) -> Vec<u8> {
    match at_or_before_ms {
        None | Some(i64::MAX) => b"+".to_vec(),
        Some(t) => {
            // Members of time <= t sort below the bare prefix of t + 1; for
            // t < 0 the bound is below every member.
            let next = u64::try_from(t.saturating_add(1)).unwrap_or(0);
            let mut b = Vec::with_capacity(9);
            b.push(b'(');
            b.extend_from_slice(&next.to_be_bytes());
            b
        }
    }
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

/// What went wrong decoding a reply.
fn corrupt(source: &str, detail: String) -> SeqError {
    SeqError::Corrupt {
        path: source.into(),
        detail,
    }
}

/// The members of a `ZREVRANGEBYLEX` reply.
fn members<'a>(v: &'a Value, source: &str) -> Result<&'a [Value], SeqError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(corrupt(
            source,
            format!("expected an array of members, got {other:?}"),
        )),
    }
}

fn member<'a>(v: &'a Value, i: usize, len: usize, source: &str) -> Result<&'a [u8], SeqError> {
    match v {
        Value::BulkString(b) if b.len() == len => Ok(b),
        Value::BulkString(b) => Err(corrupt(
            source,
            format!("member {i} is {} bytes, expected {len}", b.len()),
        )),
        other => Err(corrupt(
            source,
            format!("member {i} is {other:?}, not a string"),
        )),
    }
}

fn timestamp(b: &[u8], i: usize, source: &str) -> Result<i64, SeqError> {
    be_u64(b, 0)
        .and_then(|t| i64::try_from(t).ok())
        .ok_or_else(|| corrupt(source, format!("member {i} has a timestamp beyond i64")))
}

/// Decodes realtime or impression members (newest first) onto `out`;
/// returns how many.
pub(crate) fn decode_actions(
    v: &Value,
    out: &mut SequenceBuf,
    source: &str,
) -> Result<usize, SeqError> {
    let items = members(v, source)?;
    for (i, m) in items.iter().enumerate() {
        let b = member(m, i, ACTION_MEMBER, source)?;
        let t = timestamp(b, i, source)?;
        let (Some(item), Some(ty), Some(surface)) = (be_u64(b, 16), be_u16(b, 24), be_u16(b, 26))
        else {
            return Err(corrupt(source, format!("member {i} is short")));
        };
        out.item_ids.push(item);
        out.action_types.push(ty);
        out.timestamps_ms.push(t);
        out.surfaces.push(surface);
    }
    Ok(items.len())
}

/// Decodes lifelong token members (newest first) onto `out`.
pub(crate) fn decode_tokens(v: &Value, out: &mut TokenBuf, source: &str) -> Result<(), SeqError> {
    let items = members(v, source)?;
    for (i, m) in items.iter().enumerate() {
        let b = member(m, i, TOKEN_MEMBER, source)?;
        let t = timestamp(b, i, source)?;
        let (Some(item), Some(surface), Some(mask)) = (be_u64(b, 16), be_u16(b, 24), be_u64(b, 26))
        else {
            return Err(corrupt(source, format!("member {i} is short")));
        };
        out.item_ids.push(item);
        out.action_masks.push(mask);
        out.timestamps_ms.push(t);
        out.surfaces.push(surface);
    }
    Ok(())
}

/// An integer reply (`ZCARD`, `GET` of a counter; `Nil` is 0).
pub(crate) fn integer(v: &Value, source: &str) -> Result<u64, SeqError> {
    let bad = || {
        corrupt(
            source,
            format!("expected a non-negative integer, got {v:?}"),
        )
    };
    match v {
        Value::Nil => Ok(0),
        Value::Int(n) => u64::try_from(*n).map_err(|_| bad()),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad),
        Value::SimpleString(s) => s.parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transact_seq::{ActionType, Surface};

    fn member_of(a: &Action, arrival: u64) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(a.timestamp_ms as u64).to_be_bytes());
        m.extend_from_slice(&arrival.to_be_bytes());
        m.extend_from_slice(&a.item_id.to_be_bytes());
        m.extend_from_slice(&a.action_type.0.to_be_bytes());
        m.extend_from_slice(&a.surface.0.to_be_bytes());
        m
    }

    #[test]
    fn records_are_fixed_size_and_bounds_bracket_the_window() {
        let config = StoreConfig::default().with_multi_hot_window_ms(10);
        let a = Action {
            item_id: u64::MAX,
            action_type: ActionType(9),
            timestamp_ms: 5,
            surface: Surface(3),
        };
        let mut out = Vec::new();
        push_record(&mut out, &a, &config);
        assert_eq!(out.len(), RECORD);
        assert_eq!(out[0], 0);
        assert_eq!(&out[21..30], &[b'(', 0, 0, 0, 0, 0, 0, 0, 16]);
        assert_eq!(&out[30..39], &[b'[', 0, 0, 0, 0, 0, 0, 0, 0]);
        // Type 9: the second-lowest byte of the mask, bit 1.
        assert_eq!((out[39], out[40]), (7, 2));
        assert_eq!(&out[41..49], &(1u64 << 9).to_be_bytes());
        let far = Action {
            timestamp_ms: i64::MAX,
            action_type: ActionType::IMPRESSION,
            ..a
        };
        out.clear();
        push_record(&mut out, &far, &config.with_multi_hot_window_ms(i64::MAX));
        assert_eq!(out[0], 1);
        assert_eq!(&out[22..30], &u64::MAX.to_be_bytes());
    }

    #[test]
    fn max_bound_orders_against_members() {
        let a = |t: i64| Action {
            item_id: 1,
            action_type: ActionType(1),
            timestamp_ms: t,
            surface: Surface(0),
        };
        for (bound, t, inside) in [
            (Some(10), 10, true),
            (Some(10), 11, false),
            (Some(10), 9, true),
            (Some(-1), 0, false),
        ] {
            let b = max_bound(bound);
            let m = member_of(&a(t), u64::MAX);
            assert_eq!(m.as_slice() < &b[1..], inside, "bound {bound:?} member {t}");
        }
        assert_eq!(max_bound(None), b"+");
        assert_eq!(max_bound(Some(i64::MAX)), b"+");
    }

    #[test]
    fn decodes_members_and_rejects_bad_ones() {
        let a = Action {
            item_id: 77,
            action_type: ActionType(3),
            timestamp_ms: 1_700_000_000_000,
            surface: Surface(2),
        };
        let v = Value::Array(vec![Value::BulkString(member_of(&a, 1))]);
        let mut out = SequenceBuf::default();
        assert_eq!(decode_actions(&v, &mut out, "k").expect("decodes"), 1);
        assert_eq!(out.get(0), Some(a));
        let short = Value::Array(vec![Value::BulkString(vec![0; 27])]);
        assert!(matches!(
            decode_actions(&short, &mut out, "k"),
            Err(SeqError::Corrupt { .. })
        ));
        let mut huge = member_of(&a, 1);
        huge[0] = 0x80;
        let huge = Value::Array(vec![Value::BulkString(huge)]);
        assert!(decode_actions(&huge, &mut out, "k").is_err());
        assert!(decode_tokens(&Value::Int(3), &mut TokenBuf::default(), "k").is_err());
        assert_eq!(integer(&Value::Nil, "k").ok(), Some(0));
        assert_eq!(
            integer(&Value::BulkString(b"12".to_vec()), "k").ok(),
            Some(12)
        );
        assert!(integer(&Value::BulkString(b"x".to_vec()), "k").is_err());
    }
}
