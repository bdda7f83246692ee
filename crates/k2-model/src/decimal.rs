//! Fixed-point decimal numbers: an `i64` scaled by 10^8, stored as `decimal(18,8)`.
//!
//! Prices and quantities never pass through `f64`. Text is parsed digit by digit, so
//! `"36.667"` is exactly `3_666_700_000`. Products (price × quantity) need more than 18
//! digits on real data, so [`Decimal8::mul_wide`] returns an `i128` at scale 16.

use std::fmt;
use std::str::FromStr;

use crate::error::ModelError;

/// Number of fraction digits.
pub const SCALE: u32 = 8;
/// 10^SCALE.
pub const ONE: i64 = 100_000_000;
/// Largest magnitude that fits `decimal(18,8)`: 10^18 - 1 units.
const MAX_UNITS: i64 = 999_999_999_999_999_999;

/// A decimal with 8 fraction digits and at most 18 significant digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal8(i64);

impl Decimal8 {
    pub const ZERO: Decimal8 = Decimal8(0);

    /// Builds a value from raw units of 10^-8; fails outside `decimal(18,8)`.
    pub fn from_units(units: i64) -> Result<Self, ModelError> {
        if units.unsigned_abs() > MAX_UNITS as u64 {
            return Err(ModelError::DecimalOutOfRange(units.to_string()));
        }
        Ok(Decimal8(units))
    }

    /// Raw units of 10^-8.
    pub fn units(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Exact product at scale 16, wide enough for any two `decimal(18,8)` values.
    pub fn mul_wide(self, other: Decimal8) -> i128 {
        self.0 as i128 * other.0 as i128
    }

    /// Big-endian two's-complement bytes of minimal length (Avro `decimal` on `bytes`).
    pub fn to_be_bytes_min(self) -> ([u8; 8], usize) {
        let bytes = self.0.to_be_bytes();
        let sign = if self.0 < 0 { 0xff } else { 0x00 };
        let mut start = 0;
        // Drop redundant sign bytes, keeping one whose top bit still carries the sign.
        while start < 7 && bytes[start] == sign && (bytes[start + 1] & 0x80) == (sign & 0x80) {
            start += 1;
        }
        (bytes, start)
    }

    /// Parses big-endian two's-complement bytes (1 to 8 of them).
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.is_empty() || bytes.len() > 8 {
            return Err(ModelError::Decode(format!(
                "decimal takes 1 to 8 bytes, got {}",
                bytes.len()
            )));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut buf = [fill; 8];
        buf[8 - bytes.len()..].copy_from_slice(bytes);
        Decimal8::from_units(i64::from_be_bytes(buf))
    }
}

impl FromStr for Decimal8 {
    type Err = ModelError;

    /// Accepts `[-+]digits[.digits]`, at most 8 fraction digits, within 18 digits overall.
    /// One pass over the text: feed handlers parse two of these per trade.
    fn from_str(text: &str) -> Result<Self, ModelError> {
        let b = text.trim().as_bytes();
        let (negative, mut i) = match b.first() {
            Some(b'-') => (true, 1),
            Some(b'+') => (false, 1),
            Some(_) => (false, 0),
            None => return Err(ModelError::InvalidDecimal(text.to_string())),
        };
        // Too many significant digits is out of range, but only once the whole text is
        // known to be a number: anything else is not a decimal at all.
        let mut wide = false;
        let (start, mut int, mut int_digits) = (i, 0i64, 0u32);
        while let Some(&c) = b.get(i)
            && c.is_ascii_digit()
        {
            let d = i64::from(c - b'0');
            if int_digits > 0 || d != 0 {
                int_digits += 1;
                wide |= int_digits > 10;
                if !wide {
                    int = int * 10 + d;
                }
            }
            i += 1;
        }
        let mut any = i > start;
        // Fraction digits up to the last non-zero one; trailing zeros carry no value.
        let (mut frac, mut frac_digits, mut zeros) = (0i64, 0u32, 0u32);
        if b.get(i) == Some(&b'.') {
            i += 1;
            while let Some(&c) = b.get(i)
                && c.is_ascii_digit()
            {
                any = true;
                if c == b'0' {
                    zeros += 1;
                } else {
                    frac_digits += zeros + 1;
                    wide |= frac_digits > SCALE;
                    if !wide {
                        frac = frac * 10i64.pow(zeros + 1) + i64::from(c - b'0');
                    }
                    zeros = 0;
                }
                i += 1;
            }
        }
        if !any || i != b.len() {
            return Err(ModelError::InvalidDecimal(text.to_string()));
        }
        if wide {
            return Err(ModelError::DecimalOutOfRange(text.to_string()));
        }
        let units = int * ONE + frac * 10i64.pow(SCALE - frac_digits);
        Decimal8::from_units(if negative { -units } else { units })
    }
}

impl fmt::Display for Decimal8 {
    /// Shortest exact form: `36.667`, `0.00000001`, `20000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_units(i128::from(self.0), SCALE))
    }
}

/// Shortest exact decimal text of `units` × 10^-scale, for wide values such as sums
/// of quantities (`i128` at scale 8) or notionals (scale 16).
pub fn format_units(units: i128, scale: u32) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let one = 10u128.pow(scale);
    let (int, frac) = (abs / one, abs % one);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let digits = format!("{frac:0width$}", width = scale as usize);
    format!("{sign}{int}.{}", digits.trim_end_matches('0'))
}

impl serde::Serialize for Decimal8 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Decimal8 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exactly() {
        assert_eq!("36.667".parse::<Decimal8>().unwrap().units(), 3_666_700_000);
        assert_eq!("0.0".parse::<Decimal8>().unwrap().units(), 0);
        assert_eq!(
            "20000".parse::<Decimal8>().unwrap().units(),
            2_000_000_000_000
        );
        assert_eq!("-1.5".parse::<Decimal8>().unwrap().units(), -150_000_000);
        assert_eq!(".5".parse::<Decimal8>().unwrap().units(), 50_000_000);
        assert_eq!("0.00000001".parse::<Decimal8>().unwrap().units(), 1);
        assert_eq!(
            "1.100000000".parse::<Decimal8>().unwrap().units(),
            110_000_000
        );
    }

    #[test]
    fn rejects_what_does_not_fit() {
        for bad in ["", "-", ".", "1e5", "abc", "1.2.3", "0x10", " 1 2"] {
            assert!(bad.parse::<Decimal8>().is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            "0.000000001".parse::<Decimal8>(),
            Err(ModelError::DecimalOutOfRange(_))
        ));
        assert!("9999999999.99999999".parse::<Decimal8>().is_ok());
        assert!("10000000000".parse::<Decimal8>().is_err());
    }

    #[test]
    fn displays_shortest_exact_form() {
        assert_eq!(
            Decimal8::from_units(3_666_700_000).unwrap().to_string(),
            "36.667"
        );
        assert_eq!(Decimal8::from_units(-1).unwrap().to_string(), "-0.00000001");
        assert_eq!(Decimal8::from_units(ONE * 7).unwrap().to_string(), "7");
    }

    #[test]
    fn minimal_twos_complement_bytes() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0]),
            (127, &[0x7f]),
            (128, &[0x00, 0x80]),
            (-1, &[0xff]),
            (-128, &[0x80]),
            (-129, &[0xff, 0x7f]),
        ];
        for (units, want) in cases {
            let (buf, start) = Decimal8(units).to_be_bytes_min();
            assert_eq!(&buf[start..], want, "units {units}");
            assert_eq!(Decimal8::from_be_bytes(want).unwrap().units(), units);
        }
    }

    /// The parse spelled out step by step, as the one-pass parser must agree with.
    fn reference_parse(text: &str) -> Result<i64, &'static str> {
        let s = text.trim();
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            Some(_) => (false, s),
            None => return Err("invalid"),
        };
        let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("invalid");
        }
        let frac_digits = frac_part.trim_end_matches('0');
        let int_digits = int_part.trim_start_matches('0');
        if frac_digits.len() > SCALE as usize || int_digits.len() > 10 {
            return Err("range");
        }
        let padded = format!("{int_digits}{frac_digits:0<8}");
        let units: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().unwrap()
        };
        Ok(if negative { -units } else { units })
    }

    proptest! {
        #[test]
        fn text_round_trip(units in -MAX_UNITS..=MAX_UNITS) {
            let d = Decimal8(units);
            prop_assert_eq!(d.to_string().parse::<Decimal8>().unwrap(), d);
        }

        #[test]
        fn one_pass_parse_agrees_with_the_reference(text in "[ ]?[-+]?[0-9]{0,12}[.]?[0-9]{0,11}[ a.]?") {
            let got = match text.parse::<Decimal8>() {
                Ok(d) => Ok(d.units()),
                Err(ModelError::InvalidDecimal(_)) => Err("invalid"),
                Err(ModelError::DecimalOutOfRange(_)) => Err("range"),
                Err(other) => panic!("{other}"),
            };
            prop_assert_eq!(got, reference_parse(&text), "{:?}", text);
        }

        #[test]
        fn bytes_round_trip(units in -MAX_UNITS..=MAX_UNITS) {
            let (buf, start) = Decimal8(units).to_be_bytes_min();
            prop_assert_eq!(Decimal8::from_be_bytes(&buf[start..]).unwrap().units(), units);
        }
    }
}
