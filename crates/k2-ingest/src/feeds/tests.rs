//! One connection and a feed kept connected, against the local simulator: frames in
//! order, refused frames kept whole, subscriptions, reconnects, failover, giving up,
//! pings and stalls, rotation, and stopping promptly whatever the feed is doing.
use std::time::Duration;

use k2_model::MarketRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Venue;
use super::connection::FeedError;
use super::connection::{ConnectionEnd, FeedConfig, FeedEvent, run_connection};
use super::supervisor::{FeedStats, Reconnect, run_feed};
use crate::simulator::{Simulator, Step};

fn binance_trade(id: i64, price: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1700000000001,"s":"BTCUSDT","t":{id},"p":"{price}","q":"0.5","T":1700000000000,"m":false,"M":true}}}}"#
    )
}

fn config(venue: Venue, url: String, symbol: &str, stale_after: Duration) -> FeedConfig {
    FeedConfig {
        venue,
        url,
        symbols: vec![symbol.into()],
        quotes: venue == Venue::Binance,
        stale_after,
        ping_every: Duration::from_secs(20),
        pause: None,
    }
}

async fn collect(config: &FeedConfig) -> (Result<ConnectionEnd, FeedError>, Vec<FeedEvent>) {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let end = run_connection(
        config,
        &tx,
        || 42,
        Default::default(),
        &CancellationToken::new(),
    )
    .await;
    drop(tx);
    (end, reader.await.unwrap())
}

#[tokio::test]
async fn binance_frames_arrive_in_order_and_bad_ones_are_kept_whole() {
    let sim = Simulator::start(vec![vec![
        Step::Send(r#"{"result":null,"id":1}"#.into()),
        Step::Send(binance_trade(1, "100.5")),
        Step::Send("{garbage".into()),
        Step::Send(binance_trade(2, "100.6")),
        Step::Send(r#"{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"100.1","B":"1","a":"100.9","A":"2"}}"#.into()),
        Step::Close,
    ]])
    .await
    .unwrap();
    let config = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_secs(10),
    );
    let (end, events) = collect(&config).await;
    assert_eq!(end.unwrap(), ConnectionEnd::Closed);
    assert_eq!(
        sim.visits()[0].path,
        "/stream?streams=btcusdt@trade/btcusdt@bookTicker"
    );
    let mut trades = Vec::new();
    let mut refused = Vec::new();
    let mut quotes = 0;
    for e in events {
        match e {
            FeedEvent::Records(rs) => {
                for r in rs {
                    match r {
                        MarketRecord::Trade(t) => trades.push(t.source_sequence.unwrap()),
                        MarketRecord::Quote(_) => quotes += 1,
                        other => panic!("{other:?}"),
                    }
                }
            }
            FeedEvent::Refused { raw, error, .. } => refused.push((raw, error.kind)),
        }
    }
    assert_eq!(trades, [1, 2]);
    assert_eq!(quotes, 1);
    assert_eq!(refused, [("{garbage".to_string(), "malformed")]);
}

#[tokio::test]
async fn kraken_subscribes_then_every_trade_of_every_frame_arrives() {
    let trade = |id: i64| {
        format!(
            r#"{{"symbol":"BTC/USD","side":"buy","price":42000.5,"qty":0.25,"ord_type":"market","trade_id":{id},"timestamp":"2023-09-25T07:49:37.708706Z"}}"#
        )
    };
    let sim = Simulator::start(vec![vec![
        Step::Receive,
        Step::Send(r#"{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true}"#.into()),
        Step::Send(r#"{"channel":"heartbeat"}"#.into()),
        Step::Send(format!(r#"{{"channel":"trade","type":"update","data":[{},{},{}]}}"#, trade(1), trade(2), trade(3))),
        Step::Send(format!(r#"{{"channel":"trade","type":"update","data":[{}]}}"#, trade(4))),
        Step::Pause(Duration::from_secs(30)),
    ]])
    .await
    .unwrap();
    let config = config(
        Venue::Kraken,
        sim.url(),
        "BTC/USD",
        Duration::from_millis(500),
    );
    let (end, events) = collect(&config).await;
    // The exchange went silent: the connection is given up as stalled.
    assert_eq!(end.unwrap(), ConnectionEnd::Stalled);
    let subscribe: serde_json::Value = serde_json::from_str(&sim.visits()[0].received[0]).unwrap();
    assert_eq!(subscribe["params"]["symbol"][0], "BTC/USD");
    let ids: Vec<i64> = events
        .into_iter()
        .flat_map(|e| match e {
            FeedEvent::Records(rs) => rs,
            FeedEvent::Refused { error, .. } => panic!("{error}"),
        })
        .map(|r| match r {
            MarketRecord::Trade(t) => t.source_sequence.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_refused_connection_is_a_clear_error_naming_the_url() {
    let sim = Simulator::start(vec![]).await.unwrap();
    let url = sim.url();
    drop(sim);
    let config = config(
        Venue::Binance,
        url.clone(),
        "BTCUSDT",
        Duration::from_secs(1),
    );
    let (end, _) = collect(&config).await;
    let e = end.unwrap_err().to_string();
    assert!(e.contains(&url), "{e}");
}

/// Gives up after `attempts` failed connections in a row.
fn quick_reconnect(fallback_urls: Vec<String>, attempts: u32) -> Reconnect {
    Reconnect {
        fallback_urls,
        retry: k2_pipeline::RetryPolicy {
            attempts,
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        breaker: k2_pipeline::BreakerConfig {
            failure_threshold: 10,
            open_for: Duration::from_millis(10),
        },
        healthy_after: Duration::from_secs(60),
        rotate_after: None,
        overlap: Duration::ZERO,
    }
}

/// Runs the feed until `want` trades arrived; their sequences, and how the run ended.
async fn trades_until(
    config: &FeedConfig,
    reconnect: &Reconnect,
    want: usize,
) -> (Result<FeedStats, FeedError>, Vec<i64>) {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < want {
            match rx.recv().await {
                Some(FeedEvent::Records(rs)) => seqs.extend(rs.into_iter().map(|r| match r {
                    MarketRecord::Trade(t) => t.source_sequence.unwrap(),
                    other => panic!("{other:?}"),
                })),
                Some(FeedEvent::Refused { error, .. }) => panic!("{error}"),
                None => break,
            }
        }
        seqs
    });
    let end = run_feed(config, reconnect, &tx, || 42, &CancellationToken::new()).await;
    drop(tx);
    (end, reader.await.unwrap())
}

#[tokio::test]
async fn the_feed_reconnects_after_drops_closes_and_stalls() {
    let sim = Simulator::start(vec![
        vec![Step::Send(binance_trade(1, "1")), Step::Drop],
        vec![Step::Send(binance_trade(2, "1")), Step::Close],
        vec![
            Step::Send(binance_trade(3, "1")),
            Step::Pause(Duration::from_secs(30)),
        ],
        vec![Step::Send(binance_trade(4, "1"))],
    ])
    .await
    .unwrap();
    let mut c = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_millis(200),
    );
    c.quotes = false;
    let (end, seqs) = trades_until(&c, &quick_reconnect(Vec::new(), 5), 4).await;
    assert_eq!(seqs, [1, 2, 3, 4]);
    let stats = end.unwrap();
    assert_eq!((stats.connections, stats.failures), (4, 3));
    assert_eq!(sim.visits().len(), 4);
}

#[tokio::test]
async fn the_feed_fails_over_and_gives_up_loudly() {
    let dead = Simulator::start(vec![]).await.unwrap();
    let dead_url = dead.url();
    drop(dead);
    let live = Simulator::start(vec![vec![Step::Send(binance_trade(9, "2"))]])
        .await
        .unwrap();
    let c = config(
        Venue::Binance,
        dead_url.clone(),
        "BTCUSDT",
        Duration::from_secs(5),
    );
    let (end, seqs) = trades_until(&c, &quick_reconnect(vec![live.url()], 3), 1).await;
    assert_eq!(seqs, [9], "the fallback URL served the feed");
    assert_eq!(end.unwrap().failures, 1);
    // Nothing answers at all: after the allowed attempts it gives up, naming why.
    let (end, seqs) = trades_until(&c, &quick_reconnect(Vec::new(), 3), 1).await;
    assert!(seqs.is_empty());
    let e = end.unwrap_err().to_string();
    assert!(
        e.contains("gave up after 3") && e.contains(&dead_url),
        "{e}"
    );
}

#[tokio::test]
async fn pings_keep_a_quiet_connection_alive_and_silence_stalls_it() {
    // After its one trade the exchange stays quiet but answers pings.
    let sim = Simulator::start(vec![vec![Step::Send(binance_trade(1, "1"))]])
        .await
        .unwrap();
    let mut c = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_millis(300),
    );
    c.ping_every = Duration::from_millis(100);
    let (tx, mut rx) = mpsc::channel(4);
    let run = tokio::spawn(async move {
        run_connection(
            &c,
            &tx,
            || 42,
            Default::default(),
            &CancellationToken::new(),
        )
        .await
    });
    assert!(matches!(rx.recv().await, Some(FeedEvent::Records(_))));
    // Well past `stale_after`: still connected because the pongs come back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !run.is_finished(),
        "the connection stalled despite the pongs"
    );
    drop(rx);
    assert_eq!(run.await.unwrap().unwrap(), ConnectionEnd::Stopped);

    // A ping period longer than `stale_after`: the silence is a stall.
    let mut c = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_millis(300),
    );
    c.ping_every = Duration::from_secs(60);
    let (end, _) = collect(&c).await;
    assert_eq!(end.unwrap(), ConnectionEnd::Stalled);
}

#[tokio::test]
async fn rotation_opens_the_successor_before_retiring_the_old_connection() {
    // Each connection delivers two trades, the first one overlapping its
    // predecessor's last, then stays open and quiet.
    let scripts = (0..4)
        .map(|i| {
            vec![
                Step::Send(binance_trade(i, "1")),
                Step::Send(binance_trade(i + 1, "1")),
            ]
        })
        .collect();
    let sim = Simulator::start(scripts).await.unwrap();
    let mut c = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_secs(30),
    );
    c.quotes = false;
    let mut reconnect = quick_reconnect(Vec::new(), 2);
    reconnect.rotate_after = Some(Duration::from_millis(200));
    reconnect.overlap = Duration::from_millis(50);
    let (end, seqs) = trades_until(&c, &reconnect, 8).await;
    assert_eq!(seqs, [0, 1, 1, 2, 2, 3, 3, 4]);
    let stats = end.unwrap();
    assert_eq!(stats.failures, 0);
    assert!(stats.connections >= 4, "{stats:?}");
}

/// A feed whose exchange refuses it is between reconnects (a backoff of 30 s) when it is
/// told to stop: it stops at once, without waiting out the backoff or trying the attempts
/// it has left.
#[tokio::test]
async fn a_stop_ends_the_feed_at_once_while_it_backs_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An "exchange" that accepts each connection and hangs up at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let exchange = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let config = config(Venue::Binance, url, "BTCUSDT", Duration::from_secs(1));
    let mut reconnect = quick_reconnect(Vec::new(), 1_000);
    reconnect.retry.base = Duration::from_secs(30);
    reconnect.retry.max_delay = Duration::from_secs(30);
    let (tx, _rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let feed = tokio::spawn({
        let stop = stop.clone();
        async move { run_feed(&config, &reconnect, &tx, || 42, &stop).await }
    });
    k2_testkit::poll::until_async(Duration::from_secs(10), "a first connection", || {
        let n = accepted.load(Ordering::SeqCst);
        async move { (n > 0).then_some(()) }
    })
    .await;
    stop.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(5), feed)
        .await
        .expect("the feed stopped within seconds of being told")
        .unwrap()
        .unwrap();
    assert_eq!(stats.connections, 1, "no attempt after the stop: {stats:?}");
    exchange.abort();
}

/// At the degradation level that pauses feeds, a connection ends at a frame boundary
/// (what it read is passed on), no new connection is made while the level holds, and the
/// feed connects again once it falls.
#[tokio::test]
async fn a_paused_feed_takes_no_data_until_the_level_falls() {
    use k2_pipeline::{Level, Pressure};
    use std::sync::Arc;
    let sim = Simulator::start(vec![
        vec![Step::Send(binance_trade(1, "100.5"))],
        vec![Step::Send(binance_trade(2, "100.5"))],
    ])
    .await
    .unwrap();
    let pressure = Arc::new(Pressure::default());
    let mut config = config(
        Venue::Binance,
        sim.url(),
        "BTCUSDT",
        Duration::from_secs(30),
    );
    config.pause = Some(super::connection::Pause {
        pressure: pressure.clone(),
        from: Level::Halt,
    });
    let reconnect = quick_reconnect(Vec::new(), 1_000);
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let feed = tokio::spawn({
        let stop = stop.clone();
        async move { run_feed(&config, &reconnect, &tx, || 42, &stop).await }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap();
    assert!(matches!(first, Some(FeedEvent::Records(r)) if r.len() == 1));
    pressure.set_level(Level::Halt);
    // Paused: the connection ends and nothing more is tried for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sim.visits().len(), 1, "no connection while paused");
    assert!(rx.try_recv().is_err(), "no data while paused");
    pressure.set_level(Level::Aggressive);
    let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap();
    assert!(matches!(second, Some(FeedEvent::Records(r)) if r.len() == 1));
    assert_eq!(sim.visits().len(), 2);
    stop.cancel();
    let stats = feed.await.unwrap().unwrap();
    assert_eq!(stats.failures, 0, "a pause is not a failure: {stats:?}");
}
