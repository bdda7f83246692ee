//! What a Kraken connection asks for: a `subscribe` message to the `trade` channel of the
//! symbols, without the snapshot of recent trades (a reconnect must not bring trades
//! again that the overlap of connections already covers).

/// The subscription message.
pub(super) fn message(symbols: &[String]) -> String {
    serde_json::json!({
        "method": "subscribe",
        "params": { "channel": "trade", "symbol": symbols, "snapshot": false },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn subscribes_to_the_trade_channel_of_each_symbol_without_a_snapshot() {
        let m: serde_json::Value =
            serde_json::from_str(&super::message(&["BTC/USD".into(), "ETH/USD".into()])).unwrap();
        assert_eq!(m["method"], "subscribe");
        assert_eq!(m["params"]["channel"], "trade");
        assert_eq!(
            m["params"]["symbol"],
            serde_json::json!(["BTC/USD", "ETH/USD"])
        );
        assert_eq!(m["params"]["snapshot"], false);
    }
}
