//! Deterministic identity: a message id derived from where a record came from.
//!
//! A replayed or re-ingested record gets the same id, so duplicates can be recognised
//! anywhere downstream. Ids never hash the record's content: the ASX sample holds
//! thousands of byte-identical rows that are distinct fills.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

/// 128-bit id shown in UUID form (version 8, "custom"), e.g. `1b4e28ba-2fa1-81d2-883f-0016d3cca427`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(u128);

impl MessageId {
    /// Derives the id from the parts that name a record at its source, e.g.
    /// `["ASX", "trades", "7078", "2014-03-10", "42"]` or `["BINANCE", "trades", "BTCUSDT", "12345"]`.
    /// Parts are joined with a separator that cannot appear inside them ambiguously
    /// (each part is length-prefixed), so `["a|b"]` and `["a", "b"]` differ.
    pub fn from_source(parts: &[&str]) -> Self {
        let mut key = Vec::with_capacity(64);
        for part in parts {
            key.extend_from_slice(&(part.len() as u32).to_le_bytes());
            key.extend_from_slice(part.as_bytes());
        }
        let mut bits = xxh3_128(&key);
        // Stamp RFC 9562 version 8 and variant bits so the text form is a valid UUID.
        bits = (bits & !(0xf << 76)) | (0x8 << 76);
        bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        MessageId(bits)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl MessageId {
    /// The UUID text form without going through the formatter (this runs once per record).
    pub fn to_uuid_string(self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let b = self.0.to_be_bytes();
        let mut out = [0u8; 36];
        let mut pos = 0;
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[pos] = b'-';
                pos += 1;
            }
            out[pos] = HEX[(byte >> 4) as usize];
            out[pos + 1] = HEX[(byte & 0xf) as usize];
            pos += 2;
        }
        String::from_utf8(out.to_vec()).expect("hex is ASCII")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uuid_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_source_same_id() {
        let a = MessageId::from_source(&["ASX", "trades", "7078", "2014-03-10", "1"]);
        let b = MessageId::from_source(&["ASX", "trades", "7078", "2014-03-10", "1"]);
        let c = MessageId::from_source(&["ASX", "trades", "7078", "2014-03-10", "2"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            MessageId::from_source(&["a|b"]),
            MessageId::from_source(&["a", "b"])
        );
    }

    #[test]
    fn text_form_is_a_version_8_uuid() {
        let text = MessageId::from_source(&["x"]).to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "8");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
    }
}
