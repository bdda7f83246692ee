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
        // The key is built on the stack when it fits (every id K2 makes does).
        let len: usize = parts.iter().map(|p| 4 + p.len()).sum();
        let mut stack = [0u8; 160];
        let mut heap = Vec::new();
        let key: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        let mut pos = 0;
        for part in parts {
            key[pos..pos + 4].copy_from_slice(&(part.len() as u32).to_le_bytes());
            key[pos + 4..pos + 4 + part.len()].copy_from_slice(part.as_bytes());
            pos += 4 + part.len();
        }
        let mut bits = xxh3_128(key);
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
    /// The id of these 128 bits (as read back from the lake's 16-byte column).
    pub fn from_u128(bits: u128) -> Self {
        MessageId(bits)
    }

    /// The 16 bytes of Iceberg's `uuid`, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The UUID text form, on the stack (this runs once per record: no formatter, no
    /// allocation).
    pub fn uuid_text(self) -> [u8; 36] {
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
        out
    }

    /// Reads the hyphenated UUID text form (either case); `None` for anything else. This
    /// runs once per record the lake writer decodes: a table lookup per digit, no branch
    /// per digit, each half of the id gathered in a `u64`.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text: &[u8; 36] = text.try_into().ok()?;
        if [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
            return None;
        }
        let mut invalid = 0u8;
        let mut half = |digits: &[usize; 16]| {
            digits.iter().fold(0u64, |acc, &at| {
                let v = HEX_VALUE[text[at] as usize];
                invalid |= v;
                (acc << 4) | u64::from(v & 0xf)
            })
        };
        let (high, low) = (half(&HIGH_DIGITS), half(&LOW_DIGITS));
        (invalid & 0xf0 == 0).then_some(MessageId((u128::from(high) << 64) | u128::from(low)))
    }
}

/// Where the hex digits of a hyphenated UUID's high and low 64 bits sit.
const HIGH_DIGITS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17];
const LOW_DIGITS: [usize; 16] = [
    19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
];

/// A byte's value as a hex digit (either case), 0xff for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        table[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.uuid_text();
        f.write_str(std::str::from_utf8(&text).expect("hex is ASCII"))
    }
}

impl std::str::FromStr for MessageId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        MessageId::parse(s.as_bytes()).ok_or_else(|| format!("'{s}' is not a UUID"))
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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
        // Ids already in lakes stay valid: the key is each part's length (u32, little
        // endian) then its bytes, hashed with xxh3-128, version and variant stamped.
        let mut key = Vec::new();
        for part in ["ASX", "trades", "7078"] {
            key.extend_from_slice(&(part.len() as u32).to_le_bytes());
            key.extend_from_slice(part.as_bytes());
        }
        let bits = xxh3_128(&key);
        let bits = (bits & !(0xf << 76)) | (0x8 << 76);
        let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        assert_eq!(
            MessageId::from_source(&["ASX", "trades", "7078"]).as_u128(),
            bits
        );
        // A key longer than the stack buffer hashes the same bytes.
        let long = "x".repeat(400);
        assert_eq!(
            MessageId::from_source(&[&long, "1"]),
            MessageId::from_source(&[&long, "1"])
        );
        assert_ne!(
            MessageId::from_source(&[&long, "1"]),
            MessageId::from_source(&[&long, "2"])
        );
    }

    #[test]
    fn text_form_is_a_version_8_uuid() {
        let id = MessageId::from_source(&["x"]);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<MessageId>(), Ok(id));
        assert_eq!(MessageId::parse(text.to_uppercase().as_bytes()), Some(id));
        assert_eq!(MessageId::parse(text.replace('-', "").as_bytes()), None);
        assert_eq!(MessageId::parse(&text.as_bytes()[..35]), None);
        assert_eq!(
            MessageId::parse(b"1b4e28ba-2fa1-81d2-883f-0016d3cca427"),
            Some(MessageId::from_u128(0x1b4e28ba_2fa1_81d2_883f_0016d3cca427))
        );
        assert_eq!(
            MessageId::parse(b"1b4e28ba-2fa1-81d2-883f-0016d3cca42g"),
            None
        );
        assert_eq!(&text[14..15], "8");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        // Every position is checked: a non-digit where a digit goes, a digit where a
        // hyphen goes.
        for at in 0..36 {
            let mut bad = text.clone().into_bytes();
            bad[at] = if bad[at] == b'-' { b'0' } else { b'g' };
            assert_eq!(
                MessageId::parse(&bad),
                None,
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
