//! `[feeds]`: how every feed stays connected, which venues `k2 up` runs, and a table per
//! venue (`[feeds.binance]`) overriding where it connects and what it takes. A venue's
//! defaults come from its own folder ([`VenueFeed`]), so adding a venue adds no key here.

use std::collections::BTreeMap;
use std::time::Duration;

use k2_model::ConfigError;
use k2_pipeline::{BreakerConfig, RetryPolicy};
use serde::Deserialize;
use serde::de::Error as _;

use super::connection::FeedConfig;
use super::supervisor::Reconnect;
use super::{Venue, VenueFeed};

/// `[feeds]`.
#[derive(Clone, Debug)]
pub struct FeedsConfig {
    /// The venues `k2 up` captures.
    pub run: Vec<Venue>,
    /// How every feed stays connected.
    pub policy: FeedPolicy,
    /// Each venue's table, over the venue's defaults.
    pub venues: BTreeMap<Venue, VenueConfig>,
}

/// The keys of `[feeds]` itself: how every feed stays connected.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedPolicy {
    /// No frame (pongs included) for this long and a connection is given up as stalled.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// A WebSocket ping goes out this often.
    #[serde(with = "humantime_serde")]
    pub ping_every: Duration,
    /// Failed connections in a row after which the feed gives up and the process exits
    /// non-zero (for its supervisor to restart it).
    pub max_failures: u32,
    /// First reconnect backoff; doubles per failure, jittered, up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Consecutive connect failures that open the feed's circuit breaker, and how long it
    /// stays open.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open: Duration,
    /// A connection that lasted this long was healthy: the failure count starts over.
    #[serde(with = "humantime_serde")]
    pub healthy_after: Duration,
    /// A connection this old is replaced by a fresh one (make before break); `0s`: never.
    #[serde(with = "humantime_serde")]
    pub rotate_after: Duration,
    /// Records held between a connection and the log, at most.
    pub buffer_events: usize,
}

impl Default for FeedPolicy {
    fn default() -> Self {
        FeedPolicy {
            stale_after: Duration::from_secs(30),
            ping_every: Duration::from_secs(10),
            max_failures: 20,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            healthy_after: Duration::from_secs(60),
            rotate_after: Duration::from_secs(12 * 3600),
            buffer_events: 32_768,
        }
    }
}

/// Where a venue's feed is and what to take from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenueConfig {
    /// `wss://…` in production; a local simulator's `ws://127.0.0.1:PORT` in tests.
    pub url: String,
    /// Tried in turn when `url` fails. The venue's own fallbacks apply only while `url`
    /// is the venue's default.
    pub fallback_urls: Vec<String>,
    /// Binance `BTCUSDT`, Kraken `BTC/USD`.
    pub symbols: Vec<String>,
    /// Best bid/offer as quotes too (venues that offer them).
    pub quotes: bool,
}

impl VenueConfig {
    /// The venue's own defaults.
    pub fn of(feed: &dyn VenueFeed) -> Self {
        let urls = feed.default_urls();
        VenueConfig {
            url: urls.first().map_or_else(String::new, |u| u.to_string()),
            fallback_urls: urls.iter().skip(1).map(|u| u.to_string()).collect(),
            symbols: feed
                .default_symbols()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            quotes: feed.has_quotes(),
        }
    }
}

/// A venue's table as written: every key optional, over the venue's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VenueTable {
    url: Option<String>,
    fallback_urls: Option<Vec<String>>,
    symbols: Option<Vec<String>>,
    quotes: Option<bool>,
}

impl VenueTable {
    fn over(self, defaults: VenueConfig) -> VenueConfig {
        let url_changed = self.url.as_ref().is_some_and(|u| *u != defaults.url);
        VenueConfig {
            fallback_urls: self.fallback_urls.unwrap_or(if url_changed {
                Vec::new()
            } else {
                defaults.fallback_urls
            }),
            url: self.url.unwrap_or(defaults.url),
            symbols: self.symbols.unwrap_or(defaults.symbols),
            quotes: self.quotes.unwrap_or(defaults.quotes),
        }
    }
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            run: Vec::new(),
            policy: FeedPolicy::default(),
            venues: Venue::ALL
                .into_iter()
                .map(|v| (v, VenueConfig::of(v.feed())))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for Venue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Venue::from_name(&name).ok_or_else(|| D::Error::custom(unknown_venue(&name)))
    }
}

/// The message for a venue K2 has no feed for.
pub fn unknown_venue(name: &str) -> String {
    let known: Vec<&str> = Venue::ALL.iter().map(|v| v.name()).collect();
    format!("no feed for venue '{name}'; K2 has {}", known.join(", "))
}

impl<'de> Deserialize<'de> for FeedsConfig {
    /// `run`, a table per venue, and the policy's keys; any other key is an error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let mut config = FeedsConfig::default();
        if let Some(run) = table.remove("run") {
            config.run = run.try_into().map_err(D::Error::custom)?;
        }
        for venue in Venue::ALL {
            if let Some(t) = table.remove(venue.name()) {
                let t: VenueTable = t
                    .try_into()
                    .map_err(|e| D::Error::custom(format!("[feeds.{venue}]: {e}")))?;
                let defaults = config
                    .venues
                    .remove(&venue)
                    .expect("every venue has defaults");
                config.venues.insert(venue, t.over(defaults));
            }
        }
        config.policy = toml::Value::Table(table)
            .try_into()
            .map_err(D::Error::custom)?;
        Ok(config)
    }
}

impl FeedsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        for (key, ok) in [
            ("stale_after", !p.stale_after.is_zero()),
            ("ping_every", !p.ping_every.is_zero()),
            ("max_failures", p.max_failures > 0),
            ("breaker_failures", p.breaker_failures > 0),
            ("buffer_events", p.buffer_events > 0),
            ("backoff_max", p.backoff_max >= p.backoff_base),
        ] {
            if !ok {
                return Err(ConfigError::new(
                    format!("feeds.{key}"),
                    if key == "backoff_max" {
                        "must be at least feeds.backoff_base"
                    } else {
                        "must be positive"
                    },
                ));
            }
        }
        for venue in Venue::ALL {
            self.feed(venue, None, None)?;
        }
        Ok(())
    }

    /// One venue's feed as configured, with the symbols and URL given on the command line
    /// taking the place of the configured ones (a URL given there has no fallbacks).
    pub fn feed(
        &self,
        venue: Venue,
        symbols: Option<Vec<String>>,
        url: Option<String>,
    ) -> Result<(FeedConfig, Reconnect), ConfigError> {
        let v = &self.venues[&venue];
        let key = |k: &str| format!("feeds.{venue}.{k}");
        let symbols = symbols.unwrap_or_else(|| v.symbols.clone());
        if symbols.is_empty() || symbols.iter().any(|s| s.trim().is_empty()) {
            return Err(ConfigError::new(
                key("symbols"),
                "must name at least one symbol (or give --symbols)",
            ));
        }
        if v.quotes && !venue.feed().has_quotes() {
            return Err(ConfigError::new(
                key("quotes"),
                format!("{venue} offers no quotes on its feed"),
            ));
        }
        let fallback_urls = if url.is_some() {
            Vec::new()
        } else {
            v.fallback_urls.clone()
        };
        let url = url.unwrap_or_else(|| v.url.clone());
        for u in std::iter::once(&url).chain(&fallback_urls) {
            if !(u.starts_with("wss://") || u.starts_with("ws://")) {
                return Err(ConfigError::new(
                    key("url"),
                    format!("'{u}' is not a WebSocket URL (ws:// or wss://)"),
                ));
            }
        }
        let p = &self.policy;
        Ok((
            FeedConfig {
                venue,
                url,
                symbols,
                quotes: v.quotes,
                stale_after: p.stale_after,
                ping_every: p.ping_every,
                pause: None,
            },
            Reconnect {
                fallback_urls,
                retry: RetryPolicy {
                    attempts: p.max_failures,
                    base: p.backoff_base,
                    max_delay: p.backoff_max,
                },
                breaker: BreakerConfig {
                    failure_threshold: p.breaker_failures,
                    open_for: p.breaker_open,
                },
                healthy_after: p.healthy_after,
                rotate_after: (!p.rotate_after.is_zero()).then_some(p.rotate_after),
                overlap: Duration::from_secs(2),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FeedsConfig, String> {
        toml::from_str::<FeedsConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_venue_table_overrides_only_what_it_names() {
        let c = parse(
            r#"
            run = ["binance", "Kraken"]
            backoff_base = "20ms"
            [binance]
            url = "ws://127.0.0.1:9"
            symbols = ["BTCUSDT"]
            "#,
        )
        .unwrap();
        assert_eq!(c.run, vec![Venue::Binance, Venue::Kraken]);
        assert_eq!(c.policy.backoff_base, Duration::from_millis(20));
        assert_eq!(c.policy.max_failures, FeedPolicy::default().max_failures);
        let b = &c.venues[&Venue::Binance];
        assert_eq!(b.url, "ws://127.0.0.1:9");
        assert!(
            b.fallback_urls.is_empty(),
            "a URL of one's own has no fallbacks"
        );
        assert!(b.quotes, "left at the venue's default");
        assert_eq!(
            c.venues[&Venue::Kraken],
            VenueConfig::of(Venue::Kraken.feed())
        );
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_venues_and_bad_values_are_named() {
        let e = parse("[coinbase]\nurl = \"wss://x\"").unwrap_err();
        assert!(e.contains("coinbase"), "{e}");
        let e = parse("run = [\"coinbase\"]").unwrap_err();
        assert!(e.contains("no feed for venue 'coinbase'"), "{e}");
        let e = parse("[binance]\nsymbol = [\"X\"]").unwrap_err();
        assert!(e.contains("symbol"), "{e}");
        let e = parse("ping_every = 10").unwrap_err();
        assert!(e.contains("ping_every") || e.contains("duration"), "{e}");
        let c = parse("[kraken]\nquotes = true").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "feeds.kraken.quotes");
        let c = parse("[binance]\nurl = \"http://x\"").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "feeds.binance.url");
    }
}
