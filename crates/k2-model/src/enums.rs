//! Closed sets of the model: asset class, trade side, data type.

use std::fmt;
use std::str::FromStr;

use crate::error::ModelError;

macro_rules! closed_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in Avro symbol order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical text (also the Avro enum symbol).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Position in the Avro enum.
            pub fn index(self) -> usize {
                self as usize
            }

            pub fn from_index(index: usize) -> Result<Self, ModelError> {
                Self::ALL.get(index).copied().ok_or_else(|| ModelError::UnknownEnum {
                    kind: $kind,
                    value: index.to_string(),
                })
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            /// Case-insensitive.
            fn from_str(s: &str) -> Result<Self, ModelError> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| ModelError::UnknownEnum { kind: $kind, value: s.to_string() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_enum!(
    /// Broad class of the instrument; the first segment of a topic name.
    AssetClass, "asset class", {
        Equities => "equities",
        Crypto => "crypto",
        Futures => "futures",
        Options => "options",
    }
);

closed_enum!(
    /// Aggressor side of a trade; `Unknown` where the venue does not say (ASX sample).
    TradeSide, "trade side", {
        Buy => "BUY",
        Sell => "SELL",
        SellShort => "SELL_SHORT",
        Unknown => "UNKNOWN",
    }
);

closed_enum!(
    /// Kind of record; a segment of a topic name and the name of its lake table.
    DataType, "data type", {
        Trades => "trades",
        Quotes => "quotes",
        ReferenceData => "reference_data",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive_and_exact() {
        assert_eq!(
            "EQUITIES".parse::<AssetClass>().unwrap(),
            AssetClass::Equities
        );
        assert_eq!(
            "sell_short".parse::<TradeSide>().unwrap(),
            TradeSide::SellShort
        );
        assert!("bond".parse::<AssetClass>().is_err());
        assert_eq!(TradeSide::from_index(3).unwrap(), TradeSide::Unknown);
        assert!(TradeSide::from_index(4).is_err());
    }
}
