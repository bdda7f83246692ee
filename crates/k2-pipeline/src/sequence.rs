//! Sequence tracking: one pure state machine per (exchange, symbol) stream.
//!
//! Every message's source sequence is classified against what the stream has seen:
//!
//! | event | when |
//! |---|---|
//! | `InOrder` | the first message, or exactly the next sequence |
//! | `Gap` | ahead of the next sequence; the skipped range enters the gap ledger |
//! | `LateFill` | fills (part of) an open gap, which shrinks or splits; or arrives just before the stream's first message, within the window |
//! | `Duplicate` | behind the next sequence, within the window, and not missing: it was seen |
//! | `SessionReset` | drops back after a pause of at least `reset_after_us`, or drops back beyond the window to a restart value (`<= restart_max`); the stream starts over from it |
//! | `TooOld` | behind the next sequence by more than the window, and not in an open gap |
//!
//! What the stream has seen is `[first, next)` minus the open gaps, so the state is a few
//! integers plus the ledger of open gaps (bounded per stream: when full, the oldest gap is
//! given up and counted as lost). The tracker never drops anything itself: it classifies
//! and counts; dropping duplicates is the dedup stage's job (by message id). Each stream
//! also keeps its [`GapLedger`]: every gap from found to filled or given up, and its
//! sessions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gap_ledger::{GapLedger, Session};

/// Tuning of every stream of a tracker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceConfig {
    /// How far behind the newest sequence a message may be and still be told apart as a
    /// duplicate or a late arrival; further behind it is too old (or a reset, see below).
    pub window: u64,
    /// A pause (exchange time, microseconds) after which a drop back is a session reset,
    /// whatever the numbers: sessions that restart their sequence overnight.
    pub reset_after_us: i64,
    /// Sequences that start a session (0 or 1 on most feeds): a drop back beyond the window
    /// to one of them is a reset even without a pause.
    pub restart_max: u64,
    /// Open gaps kept per stream; beyond it the oldest gap is given up as lost.
    pub max_open_gaps: usize,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            window: 256,
            reset_after_us: 30 * 60 * 1_000_000,
            restart_max: 1,
            max_open_gaps: 1024,
        }
    }
}

/// An inclusive range of missing sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRange {
    pub first: u64,
    pub last: u64,
}

impl GapRange {
    /// Sequences in the range (at least one).
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// How a message was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    InOrder,
    Gap(GapRange),
    LateFill,
    Duplicate,
    SessionReset,
    TooOld,
}

impl Event {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Event::InOrder => "in_order",
            Event::Gap(_) => "gap",
            Event::LateFill => "late_fill",
            Event::Duplicate => "duplicate",
            Event::SessionReset => "session_reset",
            Event::TooOld => "too_old",
        }
    }
}

/// Counts of one stream since it was first seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    pub total: u64,
    pub in_order: u64,
    /// Gap events (each may miss many messages).
    pub gaps: u64,
    /// Messages found missing when gaps were detected.
    pub gap_messages: u64,
    pub late_fills: u64,
    pub duplicates: u64,
    pub resets: u64,
    pub too_old: u64,
    /// Missing messages given up on: gaps pushed out of a full ledger, or left open when
    /// the session reset.
    pub lost: u64,
}

/// The state of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTracker {
    /// Lowest sequence of the session (valid once `next > 0` or `started`).
    first: u64,
    /// One past the highest sequence seen.
    next: u64,
    started: bool,
    last_us: i64,
    /// Open gaps: first → last, disjoint, all inside `[first, next)`.
    gaps: BTreeMap<u64, u64>,
    stats: StreamStats,
    /// (Absent from states saved before the ledger: it starts empty.)
    #[serde(default)]
    ledger: GapLedger,
}

impl StreamTracker {
    /// Classifies `seq`, seen at exchange time `at_us`, and updates the state.
    #[inline]
    pub fn check(&mut self, config: &SequenceConfig, seq: u64, at_us: i64) -> Event {
        self.stats.total += 1;
        let paused = self.started && at_us.saturating_sub(self.last_us) >= config.reset_after_us;
        self.last_us = self.last_us.max(at_us);
        if !self.started {
            self.restart(seq);
            self.ledger.started(at_us);
            self.stats.in_order += 1;
            return Event::InOrder;
        }
        if seq == self.next {
            self.next += 1;
            self.stats.in_order += 1;
            return Event::InOrder;
        }
        if seq > self.next {
            let gap = GapRange {
                first: self.next,
                last: seq - 1,
            };
            self.open_gap(config, gap, at_us);
            self.next = seq + 1;
            self.stats.gaps += 1;
            self.stats.gap_messages += gap.count();
            return Event::Gap(gap);
        }
        // Behind: a new session, a late fill, a duplicate, or too old.
        if paused {
            return self.reset(seq, at_us);
        }
        if self.fill(seq) {
            self.ledger.filled(seq, at_us);
            self.stats.late_fills += 1;
            return Event::LateFill;
        }
        let behind = self.next - 1 - seq;
        if behind > config.window {
            if seq <= config.restart_max {
                return self.reset(seq, at_us);
            }
            self.stats.too_old += 1;
            return Event::TooOld;
        }
        if seq < self.first {
            // Earlier than anything seen, within the window: the stream began before its
            // first message arrived.
            if seq + 1 < self.first {
                self.open_gap(
                    config,
                    GapRange {
                        first: seq + 1,
                        last: self.first - 1,
                    },
                    at_us,
                );
            }
            self.first = seq;
            self.stats.late_fills += 1;
            return Event::LateFill;
        }
        self.stats.duplicates += 1;
        Event::Duplicate
    }

    fn restart(&mut self, seq: u64) {
        self.started = true;
        self.first = seq;
        self.next = seq + 1;
    }

    fn reset(&mut self, seq: u64, at_us: i64) -> Event {
        // Whatever the old session still missed is lost now.
        self.stats.lost += self.gaps.iter().map(|(f, l)| l - f + 1).sum::<u64>();
        self.gaps.clear();
        // The message that reset the stream is the new session's first.
        let ended = Session {
            ended_us: Some(at_us),
            received: self.session().received - 1,
            ..self.session()
        };
        self.ledger.reset(ended, at_us, self.stats.total - 1);
        self.restart(seq);
        self.last_us = at_us;
        self.stats.resets += 1;
        Event::SessionReset
    }

    fn open_gap(&mut self, config: &SequenceConfig, gap: GapRange, at_us: i64) {
        self.gaps.insert(gap.first, gap.last);
        self.ledger.found(gap.first, gap.last, at_us);
        while self.gaps.len() > config.max_open_gaps {
            let (f, l) = self.gaps.pop_first().expect("non-empty");
            self.stats.lost += l - f + 1;
            self.ledger.lost(f, l, at_us);
        }
    }

    /// Removes `seq` from the open gap holding it, if any.
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&f, &l)) = self.gaps.range(..=seq).next_back() else {
            return false;
        };
        if l < seq {
            return false;
        }
        self.gaps.remove(&f);
        if f < seq {
            self.gaps.insert(f, seq - 1);
        }
        if seq < l {
            self.gaps.insert(seq + 1, l);
        }
        true
    }

    /// The open gaps, lowest first.
    pub fn gaps(&self) -> Vec<GapRange> {
        self.gaps
            .iter()
            .map(|(&first, &last)| GapRange { first, last })
            .collect()
    }

    /// Messages currently missing (the sum of the open gaps).
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|(f, l)| l - f + 1).sum()
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Every gap found (closed ones kept up to a bound) and the ended sessions.
    pub fn ledger(&self) -> &GapLedger {
        &self.ledger
    }

    /// The current session: its sequences so far and the messages it received.
    pub fn session(&self) -> Session {
        let (session, started_us, received_before) = self.ledger.current();
        Session {
            session,
            first: self.first,
            last: self.next.saturating_sub(1),
            received: self.stats.total - received_before,
            started_us,
            ended_us: None,
        }
    }
}

/// A stream's handle in its tracker: checks by handle skip the name lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId(u32);

/// The streams of one process, by (exchange, symbol).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SequenceTracker {
    config: SequenceConfig,
    streams: Vec<NamedStream>,
    /// exchange → symbol → handle: two levels so a lookup by `&str` allocates nothing;
    /// hashed with foldhash (seeded per process, like the standard hasher), as the lookup
    /// runs for every record the writer admits.
    #[serde(skip)]
    index: foldhash::HashMap<String, foldhash::HashMap<String, StreamId>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct NamedStream {
    exchange: String,
    symbol: String,
    state: StreamTracker,
}

impl SequenceTracker {
    pub fn new(config: SequenceConfig) -> Self {
        SequenceTracker {
            config,
            streams: Vec::new(),
            index: Default::default(),
        }
    }

    pub fn config(&self) -> &SequenceConfig {
        &self.config
    }

    /// The handle of a stream, created on first use.
    pub fn stream(&mut self, exchange: &str, symbol: &str) -> StreamId {
        if let Some(&id) = self.index.get(exchange).and_then(|m| m.get(symbol)) {
            return id;
        }
        let id = StreamId(u32::try_from(self.streams.len()).expect("fewer than 2^32 streams"));
        self.streams.push(NamedStream {
            exchange: exchange.to_string(),
            symbol: symbol.to_string(),
            state: StreamTracker::default(),
        });
        self.index
            .entry(exchange.to_string())
            .or_default()
            .insert(symbol.to_string(), id);
        id
    }

    /// Classifies `seq` of a stream by handle.
    #[inline]
    pub fn check(&mut self, id: StreamId, seq: u64, at_us: i64) -> Event {
        self.streams[id.0 as usize]
            .state
            .check(&self.config, seq, at_us)
    }

    /// Classifies `seq` of a stream by name.
    pub fn check_named(&mut self, exchange: &str, symbol: &str, seq: u64, at_us: i64) -> Event {
        let id = self.stream(exchange, symbol);
        self.check(id, seq, at_us)
    }

    /// A stream's state, if it has been seen.
    pub fn get(&self, exchange: &str, symbol: &str) -> Option<&StreamTracker> {
        self.index
            .get(exchange)
            .and_then(|m| m.get(symbol))
            .map(|id| &self.streams[id.0 as usize].state)
    }

    /// Every stream: (exchange, symbol, state).
    pub fn streams(&self) -> impl Iterator<Item = (&str, &str, &StreamTracker)> {
        self.streams
            .iter()
            .map(|s| (s.exchange.as_str(), s.symbol.as_str(), &s.state))
    }

    /// The whole state, to persist (restored by [`SequenceTracker::restore`], so a restart
    /// continues the streams instead of seeing them begin again).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tracker state serialises")
    }

    /// Rebuilds a tracker from [`SequenceTracker::snapshot`]; `config` replaces the saved one.
    pub fn restore(bytes: &[u8], config: SequenceConfig) -> Result<Self, String> {
        let mut t: SequenceTracker = serde_json::from_slice(bytes)
            .map_err(|e| format!("sequence tracker snapshot is unreadable: {e}"))?;
        t.config = config;
        let mut index: foldhash::HashMap<String, foldhash::HashMap<String, StreamId>> =
            Default::default();
        for (i, s) in t.streams.iter().enumerate() {
            index
                .entry(s.exchange.clone())
                .or_default()
                .insert(s.symbol.clone(), StreamId(i as u32));
        }
        t.index = index;
        Ok(t)
    }
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
