//! `[degradation]`: the process's degradation level (see `k2_pipeline::degradation`),
//! decided every `check_every` from the signals the writer and the API report and the
//! process's memory, and the actions each part takes from its configured level on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k2_lake::LakeTable;
use k2_model::ConfigError;
use k2_pipeline::{Governor, GovernorConfig, Level, Pressure, Signals, Thresholds};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationConfig {
    /// false: the level stays normal and nothing is given up.
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
    /// The least time between two steps down.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Records in the log the writer has not committed (deferred streams apart).
    pub lag_records: Thresholds,
    /// Resident memory over the process's bound (its cgroup's limit, else the machine's).
    pub memory_share: Thresholds,
    /// The slowest of the last commit and the commit in flight, seconds.
    pub commit_seconds: Thresholds,
    /// Queries waiting at the API's gate over its queue's room.
    pub api_queue_share: Thresholds,
    /// From this level on, compaction waits (optional work).
    pub skip_compaction_from: Level,
    /// From this level on, the streams of these tables are left in the log and landed
    /// when the level falls again.
    pub defer_from: Level,
    pub defer: Vec<String>,
    /// From this level on, SQL, replays and questions over more than `long_range` get 503.
    pub refuse_expensive_from: Level,
    #[serde(with = "humantime_serde")]
    pub long_range: Duration,
    /// From this level on, the feeds take no new data while the log drains.
    pub pause_feeds_from: Level,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            enabled: true,
            check_every: Duration::from_secs(1),
            cooldown: Duration::from_secs(30),
            lag_records: Thresholds {
                enter: [100_000.0, 500_000.0, 1_000_000.0, 5_000_000.0],
                recover: 0.5,
            },
            memory_share: Thresholds {
                enter: [0.70, 0.80, 0.90, 0.95],
                recover: 0.9,
            },
            commit_seconds: Thresholds {
                enter: [10.0, 30.0, 60.0, 120.0],
                recover: 0.5,
            },
            api_queue_share: Thresholds {
                enter: [0.5, 0.75, 0.9, 1.0],
                recover: 0.5,
            },
            skip_compaction_from: Level::Soft,
            defer_from: Level::Graceful,
            defer: vec!["quotes".into()],
            refuse_expensive_from: Level::Aggressive,
            long_range: Duration::from_secs(7 * 86_400),
            pause_feeds_from: Level::Halt,
        }
    }
}

impl DegradationConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, t) in [
            ("lag_records", &self.lag_records),
            ("memory_share", &self.memory_share),
            ("commit_seconds", &self.commit_seconds),
            ("api_queue_share", &self.api_queue_share),
        ] {
            t.validate()
                .map_err(|e| ConfigError::new(format!("degradation.{key}"), e))?;
        }
        if self.check_every.is_zero() {
            return Err(ConfigError::new(
                "degradation.check_every",
                "must be positive",
            ));
        }
        self.deferred_tables()?;
        Ok(())
    }

    fn deferred_tables(&self) -> Result<Vec<LakeTable>, ConfigError> {
        self.defer
            .iter()
            .map(|name| {
                LakeTable::parse(name)
                    .filter(|t| *t != LakeTable::Trades)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "degradation.defer",
                            format!("'{name}' is not a table whose streams may wait (quotes, reference_data)"),
                        )
                    })
            })
            .collect()
    }

    fn governor(&self) -> GovernorConfig {
        GovernorConfig {
            lag_records: self.lag_records.clone(),
            memory_share: self.memory_share.clone(),
            commit_seconds: self.commit_seconds.clone(),
            api_queue_share: self.api_queue_share.clone(),
            cooldown: self.cooldown,
        }
    }
}

/// A running degradation: the pressure the process's parts share, and what each does.
#[derive(Clone)]
pub struct Degrader {
    pub pressure: Arc<Pressure>,
    config: DegradationConfig,
}

impl Degrader {
    /// Decides the level every `check_every` until `stop`; None when disabled.
    pub fn start(
        config: &DegradationConfig,
        data_dir: &std::path::Path,
        stop: CancellationToken,
    ) -> Option<Degrader> {
        if !config.enabled {
            return None;
        }
        let pressure = Arc::new(Pressure::default());
        let degrader = Degrader {
            pressure: pressure.clone(),
            config: config.clone(),
        };
        let mut governor = Governor::new(config.governor());
        let (every, data_dir) = (config.check_every, data_dir.to_path_buf());
        publish_level(Level::Normal);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let signals = read_signals(&pressure, &data_dir).await;
                publish_signals(&signals, pressure.lag().1);
                if let Some(t) = governor.observe(&signals, Instant::now()) {
                    pressure.set_level(t.to);
                    publish_level(t.to);
                    metrics::counter!("k2_degradation_transitions_total", "to" => t.to.as_str())
                        .increment(1);
                    if t.to > t.from {
                        tracing::warn!(from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "degradation level raised");
                    } else {
                        tracing::info!(from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "degradation level lowered");
                    }
                }
            }
        });
        Some(degrader)
    }

    pub fn for_writer(&self) -> k2_lake::writer::Degradation {
        k2_lake::writer::Degradation {
            pressure: self.pressure.clone(),
            defer_from: self.config.defer_from,
            defer: self.config.deferred_tables().unwrap_or_default(),
        }
    }

    pub fn for_api(&self) -> k2_api::ApiDegradation {
        k2_api::ApiDegradation {
            pressure: self.pressure.clone(),
            refuse_from: self.config.refuse_expensive_from,
            long_range: self.config.long_range,
            retry_after: self.config.cooldown,
        }
    }

    pub fn for_feeds(&self) -> k2_ingest::Pause {
        k2_ingest::Pause {
            pressure: self.pressure.clone(),
            from: self.config.pause_feeds_from,
        }
    }

    /// Compaction waits while the level is at or above this.
    pub fn for_compaction(&self) -> (Arc<Pressure>, Level) {
        (self.pressure.clone(), self.config.skip_compaction_from)
    }
}

async fn read_signals(pressure: &Pressure, data_dir: &std::path::Path) -> Signals {
    let dir = data_dir.to_path_buf();
    let memory = tokio::task::spawn_blocking(move || crate::resources::Reading::take(&dir))
        .await
        .map(|r| {
            if r.memory_limit_bytes == 0 {
                0.0
            } else {
                r.resident_bytes as f64 / r.memory_limit_bytes as f64
            }
        })
        .unwrap_or(0.0);
    Signals {
        lag_records: pressure.lag().0 as f64,
        memory_share: memory,
        commit_seconds: pressure.commit_seconds(Instant::now()),
        api_queue_share: pressure.api_queue_share(),
    }
}

fn publish_level(level: Level) {
    metrics::gauge!("k2_degradation_level").set(f64::from(level as u8));
}

fn publish_signals(s: &Signals, deferred_records: u64) {
    for (name, value) in [
        ("lag_records", s.lag_records),
        ("memory_share", s.memory_share),
        ("commit_seconds", s.commit_seconds),
        ("api_queue_share", s.api_queue_share),
    ] {
        metrics::gauge!("k2_degradation_signal", "signal" => name).set(value);
    }
    metrics::gauge!("k2_degradation_deferred_records").set(deferred_records as f64);
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "k2_degradation_level",
        "The process's degradation level: 0 normal, 1 soft, 2 graceful, 3 aggressive, 4 halt."
    );
    describe_counter!(
        "k2_degradation_transitions_total",
        "Changes of the degradation level, by the level entered."
    );
    describe_gauge!(
        "k2_degradation_signal",
        "The signals the degradation level is decided from, by signal (lag_records, memory_share, commit_seconds, api_queue_share)."
    );
    describe_gauge!(
        "k2_degradation_deferred_records",
        "Records of deferred streams waiting in the log, landed once the level falls."
    );
}
