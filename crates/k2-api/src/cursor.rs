//! Keyset cursors. A cursor names the last row a page returned, the snapshot the first
//! page was answered from (so a walk through pages sees one consistent table, whatever is
//! committed meanwhile) and a fingerprint of the query it belongs to.
//!
//! Its text is 48 bytes in base64url: fingerprint, snapshot, then the row's key
//! (timestamp, sequence, message id). Every text of that shape reads as a cursor, so the
//! document's pattern says exactly which texts are cursors; one handed to a different
//! query, or to another snapshot, is a conflict (409), never rows silently skipped.

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k2_lake::query::RowKey;

use crate::failure::Failure;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub snapshot: Option<i64>,
    pub after: RowKey,
}

/// Bytes of a cursor.
const LEN: usize = 48;
/// The snapshot of an answer read from no snapshot (the live tail merged in).
const NO_SNAPSHOT: i64 = i64::MIN;

/// A fingerprint of the parts of a query that decide its rows (not limit or format).
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0x1f]);
    }
    h.digest()
}

pub fn encode(cursor: &Cursor, fingerprint: u64) -> String {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(&fingerprint.to_be_bytes());
    bytes[8..16].copy_from_slice(&cursor.snapshot.unwrap_or(NO_SNAPSHOT).to_be_bytes());
    bytes[16..24].copy_from_slice(&cursor.after.timestamp_us.to_be_bytes());
    bytes[24..32].copy_from_slice(&cursor.after.sequence.to_be_bytes());
    bytes[32..].copy_from_slice(cursor.after.message_id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A 409 answer about a cursor that does not fit the request.
pub fn mismatch(message: &str) -> Failure {
    Failure {
        field: Some("cursor".into()),
        ..Failure::new(StatusCode::CONFLICT, "cursor_mismatch", message)
    }
}

/// The cursor in `text` (its shape checked by the caller), if this query issued it.
pub fn decode(text: &str, fingerprint: u64) -> Result<Cursor, Failure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .filter(|b| b.len() == LEN)
        .ok_or_else(|| Failure::invalid("cursor", "not a cursor this API gave"))?;
    let word = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if word(0) as u64 != fingerprint {
        return Err(mismatch(
            "this cursor belongs to a different query (the same filters are needed to continue)",
        ));
    }
    let snapshot = word(8);
    Ok(Cursor {
        snapshot: (snapshot != NO_SNAPSHOT).then_some(snapshot),
        after: RowKey {
            timestamp_us: word(16),
            sequence: word(24),
            message_id: uuid::Uuid::from_bytes(bytes[32..].try_into().expect("16 bytes")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_for_its_query() {
        let c = Cursor {
            snapshot: Some(-7),
            after: RowKey {
                timestamp_us: 1_394_582_400_000_000,
                sequence: -1,
                message_id: uuid::Uuid::from_u128(0x1234),
            },
        };
        let text = encode(&c, 42);
        assert_eq!(text.len(), 64);
        assert!(crate::params::cursor(&text).is_ok());
        assert_eq!(decode(&text, 42).unwrap(), c);
        assert_eq!(decode(&text, 43).unwrap_err().status, StatusCode::CONFLICT);
        let live = Cursor {
            snapshot: None,
            ..c
        };
        assert_eq!(decode(&encode(&live, 1), 1).unwrap(), live);
        // Any text of the cursor's shape reads as some cursor.
        let any = "A".repeat(64);
        assert_eq!(decode(&any, 0).unwrap().snapshot, Some(0));
    }
}
