//! Frames in Binance's format, made up (for the local simulator and benchmarks): one trade
//! per frame, laid out as Binance sends it.

/// `trades` BTCUSDT trade frames, trade ids from `first_id`, prices and quantities varying
/// with the id.
pub(super) fn trades(first_id: u64, trades: u64) -> Vec<String> {
    (first_id..first_id + trades).map(trade).collect()
}

fn trade(id: u64) -> String {
    let t = 1_700_000_000_000u64 + id / 10;
    let cents = 4_200_000 + (id * 7919) % 10_000;
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{id},"p":"{}.{:02}000000","q":"0.00{:03}000","T":{t},"m":{},"M":true}}}}"#,
        cents / 100,
        cents % 100,
        1 + id % 997,
        id.is_multiple_of(2)
    )
}
