//! Opaque keyset cursors. A cursor names the last row a page returned, the snapshot the
//! first page was answered from (so a walk through pages sees one consistent table, whatever
//! is committed meanwhile) and a fingerprint of the query it belongs to (a cursor handed to
//! a different query is refused rather than silently skipping rows).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k2_lake::query::RowKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub snapshot: Option<i64>,
    pub after: RowKey,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    s: Option<i64>,
    t: i64,
    q: i64,
    m: String,
    f: String,
}

/// A fingerprint of the parts of a query that decide its rows (not limit or format).
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0x1f]);
    }
    format!("{:016x}", h.digest())
}

pub fn encode(cursor: &Cursor, fingerprint: &str) -> String {
    let wire = Wire {
        v: 1,
        s: cursor.snapshot,
        t: cursor.after.timestamp_us,
        q: cursor.after.sequence,
        m: cursor.after.message_id.to_string(),
        f: fingerprint.to_string(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).expect("a cursor serialises"))
}

/// The cursor in `text`, if it is one this query issued.
pub fn decode(text: &str, fingerprint: &str) -> Result<Cursor, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| "not a cursor this API issued".to_string())?;
    let wire: Wire =
        serde_json::from_slice(&bytes).map_err(|_| "not a cursor this API issued".to_string())?;
    if wire.v != 1 {
        return Err(format!("cursor version {} is not supported", wire.v));
    }
    if wire.f != fingerprint {
        return Err(
            "this cursor belongs to a different query (same filters are needed to continue)".into(),
        );
    }
    Ok(Cursor {
        snapshot: wire.s,
        after: RowKey {
            timestamp_us: wire.t,
            sequence: wire.q,
            message_id: wire
                .m
                .parse()
                .map_err(|_| "not a cursor this API issued".to_string())?,
        },
    })
}
