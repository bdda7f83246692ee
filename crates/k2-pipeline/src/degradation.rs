//! Degradation: under sustained pressure K2 gives up work in a fixed order instead of
//! falling over — optional work first, then low-priority streams (deferred in the log,
//! not lost), then expensive queries, and at the top new feed data — and takes it back
//! as the pressure passes.
//!
//! [`Governor`] decides the level from four signals (log lag, memory against its bound,
//! commit latency, the API's queue): a level is entered at once when any signal reaches
//! its threshold, and left one step at a time, only once every signal is below the
//! level's thresholds times a recovery factor (hysteresis) and the last change is a
//! cool-down old. [`Pressure`] is what the parts of a process share: the signals they
//! report and the level they act on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How much work K2 gives up, in order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Normal = 0,
    /// Optional work stops (compaction, a large live tail).
    Soft = 1,
    /// Low-priority streams are deferred: left in the log, landed when the level drops.
    Graceful = 2,
    /// Expensive API queries (SQL, long ranges) are refused with 503 and Retry-After.
    Aggressive = 3,
    /// No new feed data is accepted while the log drains.
    Halt = 4,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Normal,
        Level::Soft,
        Level::Graceful,
        Level::Aggressive,
        Level::Halt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Soft => "soft",
            Level::Graceful => "graceful",
            Level::Aggressive => "aggressive",
            Level::Halt => "halt",
        }
    }

    fn from_u8(v: u8) -> Level {
        Level::ALL[usize::from(v.min(4))]
    }

    fn below(self) -> Level {
        Level::from_u8((self as u8).saturating_sub(1))
    }
}

/// One signal's thresholds: the value at which each level above normal is entered (soft,
/// graceful, aggressive, halt; ascending), and the share of a level's threshold the
/// signal must fall under before that level is left.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub enter: [f64; 4],
    pub recover: f64,
}

impl Thresholds {
    /// The highest level `value` reaches.
    fn level(&self, value: f64) -> Level {
        let reached = self.enter.iter().take_while(|t| value >= **t).count();
        Level::from_u8(reached as u8)
    }

    /// Whether `value` is low enough to leave `level`.
    fn recovered(&self, level: Level, value: f64) -> bool {
        match level {
            Level::Normal => true,
            l => value < self.enter[l as usize - 1] * self.recover,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.enter.windows(2).any(|w| w[0] > w[1])
            || self.enter.iter().any(|t| t.is_nan() || *t <= 0.0)
        {
            return Err(format!(
                "enter thresholds must be positive and ascending, not {:?}",
                self.enter
            ));
        }
        if !(self.recover > 0.0 && self.recover <= 1.0) {
            return Err(format!("recover must be in (0, 1], not {}", self.recover));
        }
        Ok(())
    }
}

/// The signals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Records in the log the lake writer has not committed (deferred streams excluded).
    pub lag_records: f64,
    /// Resident memory over the process's bound.
    pub memory_share: f64,
    /// The slowest of the last commit and the commit in flight, seconds.
    pub commit_seconds: f64,
    /// Queries waiting for the API's gate over the queue's room.
    pub api_queue_share: f64,
}

/// The thresholds of every signal, and the cool-down between steps down.
#[derive(Clone, Debug, PartialEq)]
pub struct GovernorConfig {
    pub lag_records: Thresholds,
    pub memory_share: Thresholds,
    pub commit_seconds: Thresholds,
    pub api_queue_share: Thresholds,
    pub cooldown: Duration,
}

/// A change of level and the signal that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub from: Level,
    pub to: Level,
    pub reason: String,
}

/// Decides the level from the signals (see the module's notes).
pub struct Governor {
    config: GovernorConfig,
    level: Level,
    changed_at: Option<Instant>,
}

impl Governor {
    pub fn new(config: GovernorConfig) -> Self {
        Governor {
            config,
            level: Level::Normal,
            changed_at: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    fn named(&self, s: &Signals) -> [(&'static str, &Thresholds, f64); 4] {
        let c = &self.config;
        [
            ("lag_records", &c.lag_records, s.lag_records),
            ("memory_share", &c.memory_share, s.memory_share),
            ("commit_seconds", &c.commit_seconds, s.commit_seconds),
            ("api_queue_share", &c.api_queue_share, s.api_queue_share),
        ]
    }

    /// The level after seeing `signals` at `now`, and the transition if it changed.
    pub fn observe(&mut self, signals: &Signals, now: Instant) -> Option<Transition> {
        let named = self.named(signals);
        let (name, thresholds, value) = named
            .iter()
            .max_by_key(|(_, t, v)| t.level(*v))
            .copied()
            .expect("four signals");
        let pressed = thresholds.level(value);
        if pressed > self.level {
            let enter = thresholds.enter[pressed as usize - 1];
            return Some(self.step(pressed, format!("{name} {value:.3} reached {enter}"), now));
        }
        let cooled = self
            .changed_at
            .is_none_or(|at| now.duration_since(at) >= self.config.cooldown);
        let recovered = named.iter().all(|(_, t, v)| t.recovered(self.level, *v));
        if self.level > Level::Normal && cooled && recovered {
            let reason = format!(
                "every signal under the {} thresholds for {:?}",
                self.level.as_str(),
                self.config.cooldown
            );
            return Some(self.step(self.level.below(), reason, now));
        }
        None
    }

    fn step(&mut self, to: Level, reason: String, now: Instant) -> Transition {
        let from = self.level;
        self.level = to;
        self.changed_at = Some(now);
        Transition { from, to, reason }
    }
}

/// What the parts of one process share: the signals they report and the level the
/// governor set, which they act on. Cheap to read on every step.
#[derive(Debug, Default)]
pub struct Pressure {
    level: AtomicU8,
    /// Per table: records in the log not yet committed, and whether the table's streams
    /// are deferred now.
    lag: Mutex<BTreeMap<&'static str, (u64, bool)>>,
    last_commit_micros: AtomicU64,
    /// When the commit in flight started, µs since `epoch` (0: none in flight).
    commit_started_micros: AtomicU64,
    epoch: OnceInstant,
    api_waiting: AtomicU64,
    api_room: AtomicU64,
}

/// An `Instant` fixed at first use (`Pressure` is `Default`).
#[derive(Debug, Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn micros(&self, at: Instant) -> u64 {
        let epoch = *self.0.get_or_init(Instant::now);
        at.saturating_duration_since(epoch).as_micros() as u64 + 1
    }
}

impl Pressure {
    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    pub fn set_level(&self, level: Level) {
        self.level.store(level as u8, Ordering::Relaxed);
    }

    /// `table` has `records` waiting in the log; `deferred` when its streams are left
    /// there on purpose (they do not count as lag).
    pub fn report_lag(&self, table: &'static str, records: u64, deferred: bool) {
        self.lag
            .lock()
            .expect("pressure lock")
            .insert(table, (records, deferred));
    }

    /// Records waiting in the log, (of streams worked on, of deferred streams).
    pub fn lag(&self) -> (u64, u64) {
        let lag = self.lag.lock().expect("pressure lock");
        lag.values().fold((0, 0), |(on, off), (n, deferred)| {
            if *deferred {
                (on, off + n)
            } else {
                (on + n, off)
            }
        })
    }

    pub fn commit_started(&self, at: Instant) {
        self.commit_started_micros
            .store(self.epoch.micros(at), Ordering::Relaxed);
    }

    pub fn commit_landed(&self, took: Duration) {
        self.commit_started_micros.store(0, Ordering::Relaxed);
        self.last_commit_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The slowest of the last commit and the one in flight, at `now`.
    pub fn commit_seconds(&self, now: Instant) -> f64 {
        let last = self.last_commit_micros.load(Ordering::Relaxed);
        let started = self.commit_started_micros.load(Ordering::Relaxed);
        let in_flight = if started == 0 {
            0
        } else {
            self.epoch.micros(now).saturating_sub(started)
        };
        last.max(in_flight) as f64 / 1e6
    }

    /// The API's query gate: `waiting` queries in a queue with room for `room`.
    pub fn report_api_queue(&self, waiting: u64, room: u64) {
        self.api_waiting.store(waiting, Ordering::Relaxed);
        self.api_room.store(room, Ordering::Relaxed);
    }

    pub fn api_queue_share(&self) -> f64 {
        let room = self.api_room.load(Ordering::Relaxed);
        if room == 0 {
            return 0.0;
        }
        self.api_waiting.load(Ordering::Relaxed) as f64 / room as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GovernorConfig {
        let counts = Thresholds {
            enter: [100.0, 500.0, 1000.0, 5000.0],
            recover: 0.5,
        };
        let shares = Thresholds {
            enter: [0.7, 0.8, 0.9, 0.95],
            recover: 0.9,
        };
        GovernorConfig {
            lag_records: counts.clone(),
            memory_share: shares.clone(),
            commit_seconds: Thresholds {
                enter: [5.0, 15.0, 30.0, 60.0],
                recover: 0.5,
            },
            api_queue_share: shares,
            cooldown: Duration::from_secs(30),
        }
    }

    fn lag(n: f64) -> Signals {
        Signals {
            lag_records: n,
            ..Signals::default()
        }
    }

    #[test]
    fn pressure_raises_the_level_at_once_to_where_it_reaches() {
        let mut g = Governor::new(config());
        let t0 = Instant::now();
        assert_eq!(g.observe(&lag(50.0), t0), None);
        let t = g.observe(&lag(1200.0), t0).unwrap();
        assert_eq!((t.from, t.to), (Level::Normal, Level::Aggressive));
        assert!(t.reason.contains("lag_records"), "{}", t.reason);
        // Memory alone can raise it further.
        let s = Signals {
            memory_share: 0.96,
            ..lag(10.0)
        };
        assert_eq!(g.observe(&s, t0).unwrap().to, Level::Halt);
    }

    #[test]
    fn the_level_falls_one_step_at_a_time_after_the_cooldown_and_under_the_recovery_share() {
        let mut g = Governor::new(config());
        let t0 = Instant::now();
        g.observe(&lag(600.0), t0); // graceful
        // Below the graceful threshold but above half of it: stays.
        assert_eq!(g.observe(&lag(300.0), t0 + Duration::from_secs(60)), None);
        // Under half, but within the cool-down: stays.
        assert_eq!(g.observe(&lag(200.0), t0 + Duration::from_secs(10)), None);
        let t = g
            .observe(&lag(200.0), t0 + Duration::from_secs(31))
            .unwrap();
        assert_eq!((t.from, t.to), (Level::Graceful, Level::Soft));
        // The next step needs its own cool-down and lag under half of soft's 100.
        assert_eq!(g.observe(&lag(0.0), t0 + Duration::from_secs(40)), None);
        assert_eq!(g.observe(&lag(60.0), t0 + Duration::from_secs(70)), None);
        let t = g.observe(&lag(49.0), t0 + Duration::from_secs(70)).unwrap();
        assert_eq!(t.to, Level::Normal);
    }

    #[test]
    fn every_signal_must_recover_before_the_level_falls() {
        let mut g = Governor::new(config());
        let t0 = Instant::now();
        g.observe(&lag(600.0), t0);
        let still_slow = Signals {
            // Under graceful's 15 s × 0.5, not under soft's 5 s × 0.5.
            commit_seconds: 7.0,
            ..lag(0.0)
        };
        let later = t0 + Duration::from_secs(100);
        let t = g.observe(&still_slow, later).unwrap();
        assert_eq!(t.to, Level::Soft);
        assert_eq!(
            g.observe(&still_slow, later + Duration::from_secs(100)),
            None
        );
    }

    #[test]
    fn pressure_sums_lag_apart_from_deferred_streams_and_times_commits_in_flight() {
        let p = Pressure::default();
        p.report_lag("trades", 10, false);
        p.report_lag("quotes", 500, true);
        p.report_lag("trades", 20, false);
        assert_eq!(p.lag(), (20, 500));
        let t0 = Instant::now();
        p.commit_landed(Duration::from_millis(200));
        p.commit_started(t0);
        assert!((p.commit_seconds(t0 + Duration::from_secs(3)) - 3.0).abs() < 0.01);
        p.commit_landed(Duration::from_millis(100));
        assert!((p.commit_seconds(t0 + Duration::from_secs(9)) - 0.1).abs() < 1e-9);
        p.report_api_queue(3, 4);
        assert_eq!(p.api_queue_share(), 0.75);
        p.set_level(Level::Graceful);
        assert_eq!(p.level(), Level::Graceful);
    }

    #[test]
    fn thresholds_are_checked() {
        let bad = Thresholds {
            enter: [5.0, 1.0, 7.0, 8.0],
            recover: 0.5,
        };
        assert!(bad.validate().is_err());
        assert!(config().lag_records.validate().is_ok());
    }
}
