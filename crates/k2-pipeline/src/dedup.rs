//! Dedup by message id: a Bloom filter in front of an exact, bounded, time-windowed set.
//!
//! Message ids are deterministic (derived from where a record came from), so a record
//! produced twice — a retried produce, a feed's reconnect overlap, a log prefix replayed —
//! carries the same id both times. The deduplicator answers "seen before?" exactly:
//!
//! - The **exact tier** holds every id of the window in sets bucketed by arrival time (the
//!   record's ingestion time), so forgetting old ids drops whole buckets instead of
//!   scanning. A bucket's sets are fixed-size pieces, so the window's memory grows in equal
//!   steps and never holds a set's old and new table at once.
//! - The **Bloom tier** sits in front. A new id (the common case) is recognised by one
//!   Bloom probe and goes straight into its bucket, whatever the number of buckets; only a
//!   Bloom hit searches the buckets, and a hit the buckets do not confirm is a false
//!   positive: the record passes. Nothing is dropped on the Bloom's word alone.
//!
//! Bounds: ids older than `window_us` behind the newest arrival are forgotten; beyond
//! `max_ids` the oldest buckets are forgotten early (counted). A forgotten id is no
//! longer recognised, so the window must cover how late a duplicate can arrive.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

/// Dedup window and memory bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupConfig {
    /// How long (arrival time, microseconds) an id is remembered behind the newest arrival.
    pub window_us: i64,
    /// Width of one bucket of the exact tier; ids are forgotten a bucket at a time.
    pub bucket_us: i64,
    /// Most ids held; beyond it the oldest buckets are forgotten before their time.
    pub max_ids: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_us: 24 * 3600 * 1_000_000,
            bucket_us: 3600 * 1_000_000,
            max_ids: 10_000_000,
        }
    }
}

/// What the deduplicator has done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupStats {
    pub checked: u64,
    pub duplicates: u64,
    /// Bloom hits the exact tier did not confirm (the record passed).
    pub false_positives: u64,
    /// Ids forgotten because they left the window.
    pub expired: u64,
    /// Ids forgotten early to stay within `max_ids`.
    pub evicted: u64,
}

/// Ids are hashes already: the set uses their bits as the hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed; this path is not taken.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.0 = (id as u64) ^ ((id >> 64) as u64);
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// A blocked Bloom filter: each id sets 7 bits inside one 512-bit block (one cache line).
struct Bloom {
    blocks: Vec<[u64; 8]>,
    /// Ids inserted since the filter was built; past `capacity` it is rebuilt larger.
    inserted: usize,
    capacity: usize,
}

const BLOOM_BITS_PER_ID: usize = 10;
const BLOOM_MIN_CAPACITY: usize = 1 << 16;

impl Bloom {
    fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(BLOOM_MIN_CAPACITY);
        let blocks = (capacity * BLOOM_BITS_PER_ID).div_ceil(512);
        Bloom {
            blocks: vec![[0; 8]; blocks],
            inserted: 0,
            capacity,
        }
    }

    fn block(&self, id: u128) -> usize {
        // Multiply-shift maps the high half uniformly onto the blocks.
        (((id >> 64) as u64 as u128 * self.blocks.len() as u128) >> 64) as usize
    }

    fn bits(id: u128) -> impl Iterator<Item = (usize, u64)> {
        let low = id as u64;
        (0..7).map(move |i| {
            let bit = (low >> (i * 9)) & 511;
            ((bit >> 6) as usize, 1u64 << (bit & 63))
        })
    }

    fn contains(&self, id: u128) -> bool {
        let block = &self.blocks[self.block(id)];
        Self::bits(id).all(|(word, mask)| block[word] & mask != 0)
    }

    fn insert(&mut self, id: u128) {
        let b = self.block(id);
        let block = &mut self.blocks[b];
        for (word, mask) in Self::bits(id) {
            block[word] |= mask;
        }
        self.inserted += 1;
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// Ids one arrival bucket holds, in sets of at most [`PIECE_IDS`]. The first set grows as
/// usual; once it is full, every further set is allocated at the full size and the full
/// ones are kept as they are. The window so grows in equal steps: a set that doubles holds
/// its old table and its new one at once, and the allocator keeps the freed table
/// resident, which made the process's memory climb in steps far above what the ids need.
/// Equal pieces are also reused as they are when an expired bucket frees them.
#[derive(Default)]
struct Bucket {
    pieces: Vec<IdSet>,
}

/// Ids per piece: 2^17 slots at hashbrown's 7/8 load, 17 bytes a slot (about 2.2 MB).
const PIECE_IDS: usize = (1 << 17) / 8 * 7;

impl Bucket {
    fn contains(&self, id: u128) -> bool {
        // Newest first: a duplicate is most often recent.
        self.pieces.iter().rev().any(|set| set.contains(&id))
    }

    /// Adds an id known not to be held.
    fn insert(&mut self, id: u128) {
        let full = self
            .pieces
            .last()
            .is_none_or(|set| set.len() == set.capacity() && set.capacity() >= PIECE_IDS);
        if full {
            let capacity = if self.pieces.is_empty() { 0 } else { PIECE_IDS };
            self.pieces.push(IdSet::with_capacity_and_hasher(
                capacity,
                Default::default(),
            ));
        }
        self.pieces.last_mut().expect("pushed above").insert(id);
    }

    fn len(&self) -> usize {
        self.pieces.iter().map(IdSet::len).sum()
    }

    /// Bytes allocated: hashbrown's slots (a power of two, capacity at 7/8 of them), each
    /// with its 16-byte id and one control byte, plus one group of control bytes.
    fn bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|set| match set.capacity() {
                0 => 0,
                capacity => {
                    let slots = (capacity * 8 / 7).next_power_of_two();
                    slots * (std::mem::size_of::<u128>() + 1) + 16
                }
            })
            .sum()
    }
}

/// The two-tier deduplicator.
pub struct Deduplicator {
    config: DedupConfig,
    bloom: Bloom,
    /// Bucket index (arrival time / bucket width) → ids that arrived in it.
    buckets: BTreeMap<i64, Bucket>,
    ids: usize,
    newest_bucket: Option<i64>,
    stats: DedupStats,
}

impl Deduplicator {
    pub fn new(config: DedupConfig) -> Self {
        assert!(config.bucket_us > 0, "dedup bucket width must be positive");
        Deduplicator {
            config,
            bloom: Bloom::with_capacity(0),
            buckets: BTreeMap::new(),
            ids: 0,
            newest_bucket: None,
            stats: DedupStats::default(),
        }
    }

    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Whether the id is new; a new id is remembered. `arrived_us` is the record's
    /// ingestion time.
    pub fn check(&mut self, id: u128, arrived_us: i64) -> bool {
        self.stats.checked += 1;
        if self.bloom.contains(id) {
            if self.held(id) {
                self.stats.duplicates += 1;
                return false;
            }
            self.stats.false_positives += 1;
        }
        self.insert(id, arrived_us);
        true
    }

    /// Remembers an id known to be stored (e.g. reloaded from the lake at start).
    pub fn remember(&mut self, id: u128, arrived_us: i64) {
        if !(self.bloom.contains(id) && self.held(id)) {
            self.insert(id, arrived_us);
        }
    }

    fn held(&self, id: u128) -> bool {
        self.buckets
            .values()
            .rev()
            .any(|bucket| bucket.contains(id))
    }

    /// Adds an id known not to be held.
    fn insert(&mut self, id: u128, arrived_us: i64) {
        let bucket = arrived_us.div_euclid(self.config.bucket_us);
        self.buckets.entry(bucket).or_default().insert(id);
        self.ids += 1;
        self.bloom.insert(id);
        if self.newest_bucket.is_none_or(|n| bucket > n) {
            self.newest_bucket = Some(bucket);
            self.expire();
        }
        if self.ids > self.config.max_ids {
            self.evict();
        }
        if self.bloom.inserted > self.bloom.capacity {
            self.rebuild_bloom();
        }
    }

    /// The oldest arrival time still remembered by the window (not by the cap).
    pub fn window_start_us(&self) -> Option<i64> {
        self.newest_bucket.map(|n| {
            (n + 1) * self.config.bucket_us - self.config.window_us.max(self.config.bucket_us)
        })
    }

    fn expire(&mut self) {
        let Some(start) = self.window_start_us() else {
            return;
        };
        let first_kept = start.div_euclid(self.config.bucket_us);
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= first_kept {
                break;
            }
            let n = entry.remove().len();
            self.ids -= n;
            self.stats.expired += n as u64;
        }
    }

    fn evict(&mut self) {
        // Whole buckets: the newest bucket stays even if it alone exceeds the cap.
        while self.ids > self.config.max_ids && self.buckets.len() > 1 {
            let (_, bucket) = self.buckets.pop_first().expect("more than one bucket");
            let n = bucket.len();
            self.ids -= n;
            self.stats.evicted += n as u64;
        }
    }

    /// Forgotten ids leave stale bits; the filter is rebuilt from the live ids whenever as
    /// many ids were inserted as it was sized for, at four times the live count (growing
    /// by fours keeps the rebuilds to about a third of an insert per id).
    fn rebuild_bloom(&mut self) {
        let mut bloom = Bloom::with_capacity(self.ids * 4);
        for set in self.buckets.values().flat_map(|bucket| &bucket.pieces) {
            for &id in set {
                bloom.insert(id);
            }
        }
        bloom.inserted = self.ids;
        self.bloom = bloom;
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.ids
    }

    pub fn is_empty(&self) -> bool {
        self.ids == 0
    }

    pub fn stats(&self) -> &DedupStats {
        &self.stats
    }

    /// Heap bytes held: every set's allocated table, plus the Bloom filter.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.values().map(Bucket::bytes).sum::<usize>() + self.bloom.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3600 * 1_000_000;

    fn id(n: u64) -> u128 {
        // Spread like real ids (which are hashes).
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7);
        (u128::from(h) << 64) | u128::from(h.rotate_left(29) ^ n)
    }

    #[test]
    fn new_then_duplicate_across_buckets() {
        let mut d = Deduplicator::new(DedupConfig::default());
        assert!(d.check(id(1), 0));
        assert!(d.check(id(2), 5 * HOUR));
        assert!(!d.check(id(1), 6 * HOUR), "seen in an older bucket");
        assert!(!d.check(id(2), 5 * HOUR));
        assert_eq!(d.len(), 2);
        assert_eq!(d.stats().duplicates, 2);
        assert_eq!(d.stats().checked, 4);
    }

    #[test]
    fn forgets_ids_that_leave_the_window() {
        let mut d = Deduplicator::new(DedupConfig {
            window_us: 2 * HOUR,
            bucket_us: HOUR,
            max_ids: 100,
        });
        assert!(d.check(id(1), 0));
        assert!(d.check(id(2), HOUR + 1));
        assert!(!d.check(id(1), HOUR + 2), "still inside the window");
        assert!(d.check(id(3), 2 * HOUR + 5));
        assert_eq!(d.stats().expired, 1, "the first hour left the window");
        assert!(d.check(id(1), 2 * HOUR + 6), "forgotten, so it passes");
        assert!(!d.check(id(2), 2 * HOUR + 7));
        assert_eq!(d.window_start_us(), Some(HOUR));
    }

    #[test]
    fn memory_cap_forgets_oldest_buckets_first() {
        let mut d = Deduplicator::new(DedupConfig {
            window_us: 100 * HOUR,
            bucket_us: HOUR,
            max_ids: 10,
        });
        for n in 0..8 {
            assert!(d.check(id(n), 0));
        }
        for n in 8..14 {
            assert!(d.check(id(n), HOUR));
        }
        assert_eq!(d.len(), 6, "the first bucket went when the cap was passed");
        assert_eq!(d.stats().evicted, 8);
        assert!(!d.check(id(13), HOUR));
        assert!(
            d.check(id(0), HOUR),
            "an evicted id is no longer recognised"
        );
    }

    #[test]
    fn bloom_hits_are_confirmed_before_dropping() {
        // Far more ids than the smallest filter: false positives happen and must pass.
        let mut d = Deduplicator::new(DedupConfig::default());
        for n in 0..400_000 {
            assert!(d.check(id(n), 0), "new id {n} reported as a duplicate");
        }
        assert!(d.stats().false_positives > 0, "{:?}", d.stats());
        for n in (0..400_000).step_by(997) {
            assert!(!d.check(id(n), 1));
        }
        assert_eq!(d.stats().duplicates, 402);
    }

    #[test]
    fn a_busy_bucket_grows_in_full_pieces_and_finds_ids_in_all_of_them() {
        let mut d = Deduplicator::new(DedupConfig::default());
        let n = 3 * PIECE_IDS as u64 + 5;
        for i in 0..n {
            assert!(d.check(id(i), 0));
        }
        let bucket = &d.buckets[&0];
        let capacities: Vec<usize> = bucket.pieces.iter().map(IdSet::capacity).collect();
        assert_eq!(
            capacities,
            vec![PIECE_IDS; 4],
            "no piece grows past its size"
        );
        assert_eq!(bucket.pieces[3].len(), 5);
        // 2^17 slots of 17 bytes each, plus a control group, per piece; plus the filter.
        assert_eq!(
            d.memory_bytes(),
            4 * ((1 << 17) * 17 + 16) + d.bloom.bytes()
        );
        for i in [0, PIECE_IDS as u64, 2 * PIECE_IDS as u64 + 1, n - 1] {
            assert!(!d.check(id(i), 1), "id {i} is held in some piece");
            d.remember(id(i), 1);
        }
        assert_eq!(d.len(), n as usize, "remembering a held id adds nothing");
    }

    proptest! {
        /// Any stream with repeats keeps exactly the first occurrence of each id, and the
        /// counts add up.
        #[test]
        fn keeps_first_occurrences(picks in prop::collection::vec(0u64..300, 0..2000)) {
            let mut d = Deduplicator::new(DedupConfig::default());
            let mut seen = std::collections::HashSet::new();
            for (i, &n) in picks.iter().enumerate() {
                let first = seen.insert(n);
                prop_assert_eq!(d.check(id(n), i as i64 * 1_000_000), first);
            }
            prop_assert_eq!(d.len(), seen.len());
            prop_assert_eq!(d.stats().duplicates as usize, picks.len() - seen.len());
        }
    }
}
