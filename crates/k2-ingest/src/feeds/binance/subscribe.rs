//! What a Binance connection asks for: its streams are named in the URL (combined
//! streams), so no message is sent after connecting.

/// `{base}/stream?streams=btcusdt@trade/btcusdt@bookTicker/…`.
pub(super) fn connect_url(base: &str, symbols: &[String], quotes: bool) -> String {
    let mut streams = Vec::new();
    for s in symbols {
        let s = s.to_ascii_lowercase();
        streams.push(format!("{s}@trade"));
        if quotes {
            streams.push(format!("{s}@bookTicker"));
        }
    }
    format!(
        "{}/stream?streams={}",
        base.trim_end_matches('/'),
        streams.join("/")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_named_lower_case_with_quotes_when_asked() {
        let symbols = ["BTCUSDT".to_string(), "ETHUSDT".to_string()];
        assert_eq!(
            connect_url("wss://x:9443/", &symbols, true),
            "wss://x:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker/ethusdt@trade/ethusdt@bookTicker"
        );
        assert_eq!(
            connect_url("ws://127.0.0.1:1", &symbols[..1], false),
            "ws://127.0.0.1:1/stream?streams=btcusdt@trade"
        );
    }
}
