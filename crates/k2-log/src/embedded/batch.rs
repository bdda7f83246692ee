//! How records are stored in a partition's table: batches keyed by the offset of their
//! first record (as Kafka stores them; one B-tree entry carries many records), each a
//! record count then, per record, timestamp, key and value.

use std::sync::Arc;

use redb::ReadableTable;

use crate::error::{LogError, Result};
use crate::log::{ConsumedRecord, Record};

pub(super) fn end_offset<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<u64> {
    match table
        .last()
        .map_err(|e| LogError::storage("reading partition end", e))?
    {
        None => Ok(0),
        Some((base, batch)) => Ok(base.value() + u64::from(batch_len(batch.value())?)),
    }
}

/// The most bytes stored under one key, less room for the leaf page's own header: redb
/// gives a value a page of a power-of-two size, so one large batch of an append (a burst
/// of 600 KB on a 1 MiB page) wrote nearly twice its bytes, zeroed, copied and synced.
/// Chunks of this size fill their pages but for the last one (much smaller chunks cost
/// more in B-tree work than they save).
const CHUNK_BYTES: usize = 128 * 1024 - 64;

/// `records` in consecutive chunks of at most [`CHUNK_BYTES`] stored (a record larger
/// than that alone).
pub(super) fn chunks<'a>(records: &'a [Record<'a>]) -> impl Iterator<Item = &'a [Record<'a>]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut size = 4;
        let n = rest
            .iter()
            .position(|r| {
                size += 16 + r.key.len() + r.value.len();
                size > CHUNK_BYTES
            })
            .unwrap_or(rest.len())
            .max(1);
        let (chunk, after) = rest.split_at(n);
        rest = after;
        Some(chunk)
    })
}

/// Batch layout: record count (u32 LE), then per record: timestamp (i64 LE),
/// key length (u32 LE), key, value length (u32 LE), value.
/// The stored size of a batch of `records`.
pub(super) fn batch_size(records: &[Record]) -> usize {
    4 + records
        .iter()
        .map(|r| 16 + r.key.len() + r.value.len())
        .sum::<usize>()
}

/// Writes `records` as a batch into `out`, [`batch_size`] bytes long.
pub(super) fn write_batch(records: &[Record], out: &mut [u8]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&(records.len() as u32).to_le_bytes());
    for r in records {
        put(&r.timestamp_ms.to_le_bytes());
        put(&(r.key.len() as u32).to_le_bytes());
        put(r.key);
        put(&(r.value.len() as u32).to_le_bytes());
        put(r.value);
    }
}

pub(super) fn batch_len(bytes: &[u8]) -> Result<u32> {
    bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| LogError::Corrupt("record batch shorter than its header".into()))
}

/// The producer times of a batch's records, in order.
fn batch_times(bytes: &[u8]) -> Result<impl Iterator<Item = i64> + '_> {
    let n = batch_len(bytes)?;
    let mut at = 4usize;
    let mut left = n;
    let corrupt = || LogError::Corrupt("record batch cut short".into());
    let mut times = Vec::with_capacity(n as usize);
    while left > 0 {
        let field = |at: usize, len: usize| bytes.get(at..at + len).ok_or_else(corrupt);
        times.push(i64::from_le_bytes(
            field(at, 8)?.try_into().expect("8 bytes"),
        ));
        let klen = u32::from_le_bytes(field(at + 8, 4)?.try_into().expect("4 bytes")) as usize;
        let vat = at + 12 + klen;
        let vlen = u32::from_le_bytes(field(vat, 4)?.try_into().expect("4 bytes")) as usize;
        at = vat + 4 + vlen;
        left -= 1;
    }
    Ok(times.into_iter())
}

/// The newest producer time in a batch, ms (a batch without records: `i64::MIN`).
pub(super) fn batch_newest_ms(bytes: &[u8]) -> Result<i64> {
    Ok(batch_times(bytes)?.max().unwrap_or(i64::MIN))
}

/// The oldest producer time in a batch, ms.
pub(super) fn batch_oldest_ms(bytes: &[u8]) -> Result<i64> {
    Ok(batch_times(bytes)?.min().unwrap_or(i64::MAX))
}

/// Where decoding a stored batch stands: the record at `offset` starts at byte `at`, and
/// `end` is one past the batch's last offset.
pub(super) struct Cursor {
    pub at: usize,
    pub offset: u64,
    pub end: u64,
}

/// Decodes the records of a batch from `cursor` on, skipping those before `from`, until the
/// batch ends or `out` holds `max`; the cursor is left where decoding stopped.
pub(super) fn decode_records(
    bytes: &[u8],
    cursor: &mut Cursor,
    from: u64,
    max: usize,
    (topic, partition): (&Arc<str>, u32),
    out: &mut Vec<ConsumedRecord>,
) -> Result<()> {
    let Cursor { at, offset, end } = cursor;
    while *offset < *end && out.len() < max {
        let here = *offset;
        let corrupt =
            || LogError::Corrupt(format!("record batch of {topic}/{partition} at {here}"));
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = bytes.get(*at..*at + n).ok_or_else(corrupt)?;
            *at += n;
            Ok(s)
        };
        let ts = i64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let klen = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
        let key = take(klen)?;
        let vlen = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
        let value = take(vlen)?;
        *offset += 1;
        if here < from {
            continue;
        }
        out.push(ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset: here,
            key: key.to_vec(),
            value: value.to_vec(),
            timestamp_ms: ts,
        });
    }
    Ok(())
}
