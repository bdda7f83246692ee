//! The completeness ledger of one stream: every gap its sequence tracker found, from the
//! moment it was found to the moment it was filled or given up, and the stream's sessions.
//!
//! The tracker ([`crate::sequence`]) keeps only what it needs to classify the next
//! message (the open ranges still missing); the ledger keeps what a reader asks of the
//! stream's past: which gaps there were, how large, when found, whether and when they were
//! filled. It is touched only on the rare events (a gap, a late fill, a gap given up, a
//! reset), never on an in-order message.
//!
//! Times are the exchange times (`at_us`) of the messages that found or closed a gap.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Closed gaps kept per stream (the oldest leave first); open gaps are all kept, as the
/// tracker bounds them.
pub const CLOSED_GAPS_KEPT: usize = 1000;
/// Ended sessions kept per stream.
pub const SESSIONS_KEPT: usize = 32;

/// A gap as found: the missing range, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapEntry {
    /// The stream's session the gap belongs to (0 until the first reset).
    pub session: u32,
    pub first: u64,
    pub last: u64,
    pub found_us: i64,
    /// Missing messages that arrived later.
    pub filled: u64,
    /// Missing messages given up on (the ledger of open gaps was full, or the session
    /// reset before they came).
    pub lost: u64,
    /// When the gap stopped being open: its last missing message arrived, or the rest was
    /// given up. None while open.
    pub closed_us: Option<i64>,
}

/// What became of a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapStatus {
    /// Messages are still missing and may yet arrive.
    Open,
    /// Every missing message arrived late.
    Filled,
    /// Closed with messages given up on (some may have been filled before).
    Lost,
}

impl GapStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GapStatus::Open => "open",
            GapStatus::Filled => "filled",
            GapStatus::Lost => "lost",
        }
    }
}

impl GapEntry {
    /// Messages the gap missed when found.
    pub fn size(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Messages still missing.
    pub fn missing(&self) -> u64 {
        if self.closed_us.is_some() {
            0
        } else {
            self.size().saturating_sub(self.filled + self.lost)
        }
    }

    pub fn status(&self) -> GapStatus {
        match self.closed_us {
            None => GapStatus::Open,
            Some(_) if self.lost == 0 => GapStatus::Filled,
            Some(_) => GapStatus::Lost,
        }
    }
}

/// One session of a stream: from its first message (or reset) to the next reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session: u32,
    /// Lowest and highest sequence seen in the session.
    pub first: u64,
    pub last: u64,
    /// Messages checked in the session (duplicates and late ones included).
    pub received: u64,
    pub started_us: i64,
    /// When the next session began; None for the current one.
    pub ended_us: Option<i64>,
}

/// The ledger of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapLedger {
    /// Gaps still open, by their first sequence (disjoint: the tracker finds each missing
    /// sequence once per session).
    open: BTreeMap<u64, GapEntry>,
    /// Closed gaps, oldest first.
    closed: VecDeque<GapEntry>,
    /// Ended sessions, oldest first.
    sessions: VecDeque<Session>,
    session: u32,
    /// The current session's start: its time, and the messages received before it.
    started_us: i64,
    received_before: u64,
}

impl GapLedger {
    /// A gap `[first, last]` found at `at_us`.
    pub(crate) fn found(&mut self, first: u64, last: u64, at_us: i64) {
        self.open.insert(
            first,
            GapEntry {
                session: self.session,
                first,
                last,
                found_us: at_us,
                filled: 0,
                lost: 0,
                closed_us: None,
            },
        );
    }

    /// The gap holding `seq`, among the open ones.
    fn holding(&mut self, seq: u64) -> Option<&mut GapEntry> {
        self.open
            .range_mut(..=seq)
            .next_back()
            .map(|(_, g)| g)
            .filter(|g| seq <= g.last)
    }

    /// `seq`, missing, arrived at `at_us`.
    pub(crate) fn filled(&mut self, seq: u64, at_us: i64) {
        if let Some(gap) = self.holding(seq) {
            gap.filled += 1;
            if gap.missing() == 0 {
                let first = gap.first;
                self.close(first, at_us);
            }
        }
    }

    /// The missing range `[first, last]` (part of one gap) was given up at `at_us`.
    pub(crate) fn lost(&mut self, first: u64, last: u64, at_us: i64) {
        if let Some(gap) = self.holding(first) {
            gap.lost += last - first + 1;
            if gap.missing() == 0 {
                let first = gap.first;
                self.close(first, at_us);
            }
        }
    }

    fn close(&mut self, first: u64, at_us: i64) {
        if let Some(mut gap) = self.open.remove(&first) {
            gap.closed_us = Some(at_us);
            self.closed.push_back(gap);
            while self.closed.len() > CLOSED_GAPS_KEPT {
                self.closed.pop_front();
            }
        }
    }

    /// The session ended at `at_us` (a reset): its open gaps are given up, its summary
    /// kept; the next session starts with `received` messages checked before it.
    pub(crate) fn reset(&mut self, ended: Session, at_us: i64, received: u64) {
        let firsts: Vec<u64> = self.open.keys().copied().collect();
        for first in firsts {
            if let Some(gap) = self.open.get_mut(&first) {
                gap.lost += gap.missing();
            }
            self.close(first, at_us);
        }
        self.sessions.push_back(ended);
        while self.sessions.len() > SESSIONS_KEPT {
            self.sessions.pop_front();
        }
        self.session += 1;
        self.started_us = at_us;
        self.received_before = received;
    }

    /// The first message of the stream (or of a session) came at `at_us`.
    pub(crate) fn started(&mut self, at_us: i64) {
        self.started_us = at_us;
    }

    /// The current session's number, start and messages before it.
    pub(crate) fn current(&self) -> (u32, i64, u64) {
        (self.session, self.started_us, self.received_before)
    }

    /// Every gap kept: the closed ones oldest first, then the open ones by sequence.
    pub fn gaps(&self) -> impl Iterator<Item = &GapEntry> {
        self.closed.iter().chain(self.open.values())
    }

    /// The ended sessions kept, oldest first.
    pub fn ended_sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }
}
