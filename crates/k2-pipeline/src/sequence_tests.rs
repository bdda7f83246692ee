//! The seed roadmap's sequence-tracker cases (P0.2) and more, plus property tests.

use proptest::prelude::*;

use super::*;
use crate::gap_ledger::{GapEntry, GapStatus, Session};

const T0: i64 = 1_394_492_400_000_000; // 2014-03-10 23:00 UTC, an ASX open
const SEC: i64 = 1_000_000;

fn gaps(t: &SequenceTracker, exchange: &str, symbol: &str) -> Vec<(u64, u64)> {
    t.get(exchange, symbol)
        .map(|s| s.gaps().iter().map(|g| (g.first, g.last)).collect())
        .unwrap_or_default()
}

fn tracker() -> SequenceTracker {
    SequenceTracker::new(SequenceConfig::default())
}

/// Feeds ASX:BHP the sequences in order, all at `T0`.
fn feed(t: &mut SequenceTracker, seqs: impl IntoIterator<Item = u64>) {
    for seq in seqs {
        t.check_named("ASX", "BHP", seq, T0);
    }
}

#[test]
fn in_order_sequence() {
    let mut t = tracker();
    for seq in 1..=3 {
        assert_eq!(t.check_named("ASX", "BHP", seq, T0), Event::InOrder);
    }
}

#[test]
fn gap_detection() {
    let mut t = tracker();
    feed(&mut t, [1, 2]);
    assert_eq!(
        t.check_named("ASX", "BHP", 4, T0),
        Event::Gap(GapRange { first: 3, last: 3 })
    );
    assert_eq!(gaps(&t, "ASX", "BHP"), [(3, 3)]);
}

#[test]
fn gap_range_detection() {
    let mut t = tracker();
    feed(&mut t, [1, 2]);
    assert!(matches!(t.check_named("ASX", "BHP", 10, T0), Event::Gap(_)));
    assert_eq!(gaps(&t, "ASX", "BHP"), [(3, 9)]);
    assert_eq!(t.get("ASX", "BHP").unwrap().missing(), 7);
}

#[test]
fn out_of_order_fills_the_gap() {
    let mut t = tracker();
    feed(&mut t, [1, 2, 4]);
    assert_eq!(t.check_named("ASX", "BHP", 3, T0), Event::LateFill);
    assert!(gaps(&t, "ASX", "BHP").is_empty());
}

#[test]
fn duplicate_detection() {
    let mut t = tracker();
    feed(&mut t, [1, 2]);
    assert_eq!(t.check_named("ASX", "BHP", 2, T0), Event::Duplicate);
    // A sequence that filled a gap is seen; again, it is a duplicate.
    feed(&mut t, [5, 3]);
    assert_eq!(t.check_named("ASX", "BHP", 3, T0), Event::Duplicate);
}

#[test]
fn session_reset_detection() {
    let mut t = tracker();
    for seq in 1..=10_000 {
        t.check_named("ASX", "BHP", seq, T0 + seq as i64);
    }
    assert_eq!(
        t.check_named("ASX", "BHP", 1, T0 + 10_001),
        Event::SessionReset
    );
    assert_eq!(t.check_named("ASX", "BHP", 2, T0 + 10_002), Event::InOrder);
    assert_eq!(t.get("ASX", "BHP").unwrap().stats().resets, 1);
}

#[test]
fn overnight_reset_is_recognised_by_the_pause() {
    // A short session (fewer messages than the window) restarting at 1 the next morning.
    let mut t = tracker();
    for seq in 1..=50 {
        t.check_named("ASX", "BHP", seq, T0 + seq as i64 * SEC);
    }
    // Without the pause, 1 again is a duplicate …
    assert_eq!(
        t.check_named("ASX", "BHP", 1, T0 + 60 * SEC),
        Event::Duplicate
    );
    // … after a night, it starts a new session, and the stream goes on in order.
    let morning = T0 + 19 * 3600 * SEC;
    assert_eq!(t.check_named("ASX", "BHP", 1, morning), Event::SessionReset);
    assert_eq!(
        t.check_named("ASX", "BHP", 2, morning + SEC),
        Event::InOrder
    );
    assert_eq!(
        t.check_named("ASX", "BHP", 4, morning + 2 * SEC),
        Event::Gap(GapRange { first: 3, last: 3 })
    );
    // A pause with the sequence moving on is no reset.
    assert!(matches!(
        t.check_named("ASX", "BHP", 5, morning + 10 * 3600 * SEC),
        Event::InOrder
    ));
}

#[test]
fn a_reset_gives_up_the_old_sessions_gaps() {
    let mut t = tracker();
    feed(&mut t, [1, 2, 6]);
    let morning = T0 + 19 * 3600 * SEC;
    assert_eq!(t.check_named("ASX", "BHP", 1, morning), Event::SessionReset);
    assert!(gaps(&t, "ASX", "BHP").is_empty());
    assert_eq!(t.get("ASX", "BHP").unwrap().stats().lost, 3);
}

#[test]
fn multi_symbol_isolation() {
    let mut t = tracker();
    for seq in 1..=3 {
        t.check_named("ASX", "BHP", seq, T0);
        t.check_named("ASX", "RIO", seq, T0);
    }
    assert!(gaps(&t, "ASX", "BHP").is_empty());
    assert!(gaps(&t, "ASX", "RIO").is_empty());
}

#[test]
fn multi_exchange_isolation() {
    let mut t = tracker();
    t.check_named("ASX", "BHP", 1, T0);
    t.check_named("BINANCE", "BHP", 1, T0);
    t.check_named("ASX", "BHP", 3, T0);
    t.check_named("BINANCE", "BHP", 2, T0);
    assert_eq!(gaps(&t, "ASX", "BHP"), [(2, 2)]);
    assert!(gaps(&t, "BINANCE", "BHP").is_empty());
}

#[test]
fn gap_backfill_splits_then_closes() {
    let mut t = tracker();
    feed(&mut t, [1, 5]);
    assert_eq!(gaps(&t, "ASX", "BHP"), [(2, 4)]);
    feed(&mut t, [3]);
    assert_eq!(gaps(&t, "ASX", "BHP"), [(2, 2), (4, 4)]);
    feed(&mut t, [2, 4]);
    assert!(gaps(&t, "ASX", "BHP").is_empty());
    // Shrinking from either end.
    feed(&mut t, [10, 6, 9]);
    assert_eq!(gaps(&t, "ASX", "BHP"), [(7, 8)]);
}

#[test]
fn very_old_message_is_too_old() {
    let mut t = tracker();
    feed(&mut t, 1..=1000);
    assert_eq!(t.check_named("ASX", "BHP", 500, T0), Event::TooOld);
    // A late fill of an open gap is recognised at any age.
    let mut t = tracker();
    feed(&mut t, [1, 3]);
    feed(&mut t, 4..=2000);
    assert_eq!(t.check_named("ASX", "BHP", 2, T0), Event::LateFill);
}

#[test]
fn statistics() {
    let mut t = tracker();
    feed(&mut t, [1, 2, 4, 3, 5, 5]);
    let s = t.get("ASX", "BHP").unwrap().stats();
    assert_eq!(s.total, 6);
    assert_eq!(s.in_order, 3);
    assert_eq!(s.gaps, 1);
    assert_eq!(s.gap_messages, 1);
    assert_eq!(s.late_fills, 1);
    assert_eq!(s.duplicates, 1);
}

#[test]
fn a_full_ledger_gives_up_its_oldest_gap() {
    let config = SequenceConfig {
        max_open_gaps: 2,
        ..SequenceConfig::default()
    };
    let mut t = SequenceTracker::new(config);
    feed(&mut t, [1, 3, 5, 7]);
    assert_eq!(gaps(&t, "ASX", "BHP"), [(4, 4), (6, 6)]);
    assert_eq!(t.get("ASX", "BHP").unwrap().stats().lost, 1);
}

#[test]
fn concurrent_streams_from_threads() {
    // One tracker per thread's streams behind a lock: the state machine is plain data.
    let t = std::sync::Mutex::new(tracker());
    std::thread::scope(|s| {
        for symbol in ["BHP", "RIO"] {
            let t = &t;
            s.spawn(move || {
                for seq in 1..100 {
                    t.lock().unwrap().check_named("ASX", symbol, seq, T0);
                }
            });
        }
    });
    let t = t.into_inner().unwrap();
    for symbol in ["BHP", "RIO"] {
        let s = t.get("ASX", symbol).unwrap();
        assert_eq!(s.stats().in_order, 99);
        assert!(s.gaps().is_empty());
    }
}

#[test]
fn snapshot_and_restore_continue_the_streams() {
    let mut t = tracker();
    feed(&mut t, [1, 2, 5]);
    let bytes = t.snapshot();
    let mut r = SequenceTracker::restore(&bytes, SequenceConfig::default()).unwrap();
    assert_eq!(gaps(&r, "ASX", "BHP"), [(3, 4)]);
    // A restart is not a reset: the stream continues where it was.
    assert_eq!(r.check_named("ASX", "BHP", 6, T0), Event::InOrder);
    assert_eq!(r.check_named("ASX", "BHP", 3, T0), Event::LateFill);
    assert!(SequenceTracker::restore(b"{not json", SequenceConfig::default()).is_err());
}

/// Sequences from `present` (a subset of 1..=n), shuffled, with duplicates injected.
fn shuffled_with_duplicates() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, usize)> {
    (1u64..300)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::bool::weighted(0.8), n as usize),
                proptest::collection::vec(0usize..1000, 0..40),
            )
        })
        .prop_flat_map(|(keep, dup_picks)| {
            let present: Vec<u64> = keep
                .iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .map(|(i, _)| i as u64 + 1)
                .collect();
            let mut stream = present.clone();
            let dups = if present.is_empty() {
                0
            } else {
                for p in &dup_picks {
                    stream.push(present[p % present.len()]);
                }
                dup_picks.len()
            };
            (Just(present), Just(stream).prop_shuffle(), Just(dups))
        })
}

proptest! {
    #[test]
    fn any_order_gives_the_same_ledger_and_counts((present, stream, dups) in shuffled_with_duplicates()) {
        // A window wider than the stream: order alone must not change the outcome.
        let config = SequenceConfig { window: 1_000, ..SequenceConfig::default() };
        let mut t = SequenceTracker::new(config);
        let id = t.stream("ASX", "BHP");
        for seq in &stream {
            t.check(id, *seq, T0);
        }
        let Some(state) = t.get("ASX", "BHP").filter(|_| !present.is_empty()) else {
            return Ok(());
        };
        // Missing = everything between the lowest and highest present sequence not present.
        let (lo, hi) = (present[0], *present.last().unwrap());
        let mut want = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for seq in lo..=hi {
            if present.binary_search(&seq).is_ok() {
                want.extend(run.take());
            } else {
                run = Some(run.map_or((seq, seq), |(f, _)| (f, seq)));
            }
        }
        want.extend(run);
        let got: Vec<(u64, u64)> = state.gaps().iter().map(|g| (g.first, g.last)).collect();
        prop_assert_eq!(got, want);
        let s = state.stats();
        prop_assert_eq!(s.total, stream.len() as u64);
        prop_assert_eq!(s.duplicates, dups as u64);
        prop_assert_eq!(s.in_order + s.gaps + s.late_fills, present.len() as u64);
        prop_assert_eq!(s.resets + s.too_old + s.lost, 0);
    }
}

/// The ledger of a stream with a gap filled late, a gap left open, a duplicate and a reset:
/// exactly those gaps, with when they were found and closed, and both sessions.
#[test]
fn the_ledger_keeps_each_gap_from_found_to_filled_or_lost() {
    let config = SequenceConfig::default();
    let mut t = SequenceTracker::new(config.clone());
    let id = t.stream("ASX", "BHP");
    let at = |s: i64| T0 + s * 1_000_000;
    for (seq, s) in [
        (1, 1),
        (2, 2),
        (3, 3),
        (7, 7),
        (5, 8),
        (4, 9),
        (3, 10),
        (6, 11),
        (12, 12),
    ] {
        t.check(id, seq, at(s));
    }
    let state = t.get("ASX", "BHP").unwrap();
    let gaps: Vec<GapEntry> = state.ledger().gaps().cloned().collect();
    assert_eq!(
        gaps,
        [
            GapEntry {
                session: 0,
                first: 4,
                last: 6,
                found_us: at(7),
                filled: 3,
                lost: 0,
                closed_us: Some(at(11))
            },
            GapEntry {
                session: 0,
                first: 8,
                last: 11,
                found_us: at(12),
                filled: 0,
                lost: 0,
                closed_us: None
            },
        ]
    );
    assert_eq!(gaps[0].status(), GapStatus::Filled);
    assert_eq!((gaps[1].status(), gaps[1].missing()), (GapStatus::Open, 4));
    assert_eq!(state.stats().duplicates, 1);

    // An hour's pause, then the sequence starts over: the open gap is given up.
    t.check(id, 1, at(3600 + 12));
    t.check(id, 2, at(3600 + 13));
    let state = t.get("ASX", "BHP").unwrap();
    let lost = state.ledger().gaps().last().unwrap().clone();
    assert_eq!((lost.first, lost.last, lost.lost), (8, 11, 4));
    assert_eq!(lost.closed_us, Some(at(3600 + 12)));
    assert_eq!(lost.status(), GapStatus::Lost);
    let ended: Vec<Session> = state.ledger().ended_sessions().cloned().collect();
    assert_eq!(
        ended,
        [Session {
            session: 0,
            first: 1,
            last: 12,
            received: 9,
            started_us: at(1),
            ended_us: Some(at(3600 + 12))
        }]
    );
    assert_eq!(
        state.session(),
        Session {
            session: 1,
            first: 1,
            last: 2,
            received: 2,
            started_us: at(3600 + 12),
            ended_us: None
        }
    );
}

#[test]
fn a_gap_pushed_out_of_a_full_ledger_is_lost_in_part_or_whole() {
    let config = SequenceConfig {
        max_open_gaps: 1,
        ..SequenceConfig::default()
    };
    let mut t = SequenceTracker::new(config);
    let id = t.stream("ASX", "BHP");
    for seq in [1, 5, 3, 9] {
        t.check(id, seq, T0 + seq as i64);
    }
    // 2..=4 was split by the late 3; its piece 2 was pushed out by 4, then 4 by 6..=8.
    let state = t.get("ASX", "BHP").unwrap();
    let gaps: Vec<GapEntry> = state.ledger().gaps().cloned().collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!(
        (
            gaps[0].first,
            gaps[0].filled,
            gaps[0].lost,
            gaps[0].status()
        ),
        (2, 1, 2, GapStatus::Lost)
    );
    assert_eq!(
        (gaps[1].first, gaps[1].last, gaps[1].status()),
        (6, 8, GapStatus::Open)
    );
    assert_eq!(state.stats().lost, 2);
}

proptest! {
    #[test]
    fn the_ledger_accounts_for_every_missing_message((_present, stream, _dups) in shuffled_with_duplicates(), max_open_gaps in 1usize..8) {
        let config = SequenceConfig { window: 1_000, max_open_gaps, ..SequenceConfig::default() };
        let mut t = SequenceTracker::new(config);
        let id = t.stream("ASX", "BHP");
        for (i, seq) in stream.iter().enumerate() {
            t.check(id, *seq, T0 + i as i64);
        }
        let Some(state) = t.get("ASX", "BHP") else { return Ok(()); };
        let mut missing = 0;
        for gap in state.ledger().gaps() {
            prop_assert_eq!(gap.filled + gap.lost + gap.missing(), gap.size(), "{:?}", gap);
            prop_assert_eq!(gap.closed_us.is_some(), gap.missing() == 0);
            missing += gap.missing();
        }
        prop_assert_eq!(missing, state.missing());
        let lost: u64 = state.ledger().gaps().map(|g| g.lost).sum();
        prop_assert_eq!(lost, state.stats().lost);
    }
}
