//! Topic names: `market.{asset_class}.{data_type}.{exchange}`, exchange in lower case.

use crate::enums::{AssetClass, DataType};
use crate::error::ModelError;

/// A parsed K2 topic name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicName {
    pub asset_class: AssetClass,
    pub data_type: DataType,
    pub exchange: String,
}

impl TopicName {
    pub fn new(asset_class: AssetClass, data_type: DataType, exchange: &str) -> Self {
        TopicName {
            asset_class,
            data_type,
            exchange: exchange.to_ascii_lowercase(),
        }
    }

    /// Parses `market.equities.trades.asx`.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::UnknownEnum {
            kind: "topic name",
            value: name.to_string(),
        };
        let mut parts = name.split('.');
        let (Some("market"), Some(asset), Some(kind), Some(exchange), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if exchange.is_empty()
            || !exchange
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad());
        }
        Ok(TopicName::new(asset.parse()?, kind.parse()?, exchange))
    }

    /// Schema-registry subject under the TopicNameStrategy.
    pub fn subject(&self) -> String {
        format!("{self}-value")
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "market.{}.{}.{}",
            self.asset_class, self.data_type, self.exchange
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = TopicName::new(AssetClass::Equities, DataType::Trades, "ASX");
        assert_eq!(t.to_string(), "market.equities.trades.asx");
        assert_eq!(TopicName::parse("market.equities.trades.asx").unwrap(), t);
        assert_eq!(
            TopicName::parse("market.equities.reference_data.asx")
                .unwrap()
                .data_type,
            DataType::ReferenceData
        );
        for bad in [
            "market.equities.trades",
            "market.bonds.trades.asx",
            "x.equities.trades.asx",
            "market.equities.trades.asx.raw",
        ] {
            assert!(TopicName::parse(bad).is_err(), "{bad}");
        }
    }
}
