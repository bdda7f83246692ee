//! Frames in Kraken's format, made up (for the local simulator and benchmarks): ten trades
//! per frame, laid out as Kraken sends them.

/// Trades per frame.
const PER_FRAME: u64 = 10;

/// Frames of `trades` BTC/USD trades in all, trade ids from `first_id`.
pub(super) fn trades(first_id: u64, trades: u64) -> Vec<String> {
    let end = first_id + trades;
    (first_id..end)
        .step_by(PER_FRAME as usize)
        .map(|first| frame(first, PER_FRAME.min(end - first)))
        .collect()
}

fn frame(first: u64, trades: u64) -> String {
    let data: Vec<String> = (first..first + trades)
        .map(|id| {
            format!(
                r#"{{"symbol":"BTC/USD","side":"{}","price":{}.{},"qty":0.{:04},"ord_type":"market","trade_id":{id},"timestamp":"2023-09-25T07:49:37.708706Z"}}"#,
                if id.is_multiple_of(2) { "buy" } else { "sell" },
                42_000 + id % 100,
                id % 10,
                1 + id % 9999
            )
        })
        .collect();
    format!(
        r#"{{"channel":"trade","type":"update","data":[{}]}}"#,
        data.join(",")
    )
}
