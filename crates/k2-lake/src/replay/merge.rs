//! The k-way merge of a window's rows into the lake's total order: the rows come from
//! the scan as the files lay them out, are cut into ascending runs, and a heap of run
//! heads gives them in order (a run that stays ahead goes on without touching the heap).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use arrow::error::{ArrowError, Result as ArrowResult};

use super::Ordered;
use crate::error::{LakeError, Result};
use crate::query::sql_text::uuid_text;

/// A row's place in the total order. The message id compares as its 16 bytes, as the
/// query engine compares the `uuid` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    ts: i64,
    seq: i64,
    id: u128,
}

pub(super) const K_TS: &str = "k2_replay_ts";
pub(super) const K_SEQ: &str = "k2_replay_seq";
pub(super) const K_ID: &str = "k2_replay_id";

/// The keys of a window batch's rows.
fn keys(batch: &RecordBatch) -> Result<Vec<Key>> {
    let bad = |what: &str| LakeError::CorruptData(format!("replay window lacks its {what} key"));
    let ts = batch
        .column_by_name(K_TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| bad("timestamp"))?;
    let seq = batch
        .column_by_name(K_SEQ)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad("sequence"))?;
    let id = batch
        .column_by_name(K_ID)
        .and_then(|c| c.as_fixed_size_binary_opt())
        .filter(|c| c.value_length() == 16)
        .ok_or_else(|| bad("message id"))?;
    let (ts, seq) = (ts.values(), seq.values());
    Ok((0..batch.num_rows())
        .map(|i| Key {
            ts: ts[i],
            seq: seq[i],
            id: if id.is_valid(i) {
                u128::from_be_bytes(id.value(i).try_into().expect("16 bytes"))
            } else {
                0
            },
        })
        .collect())
}

/// One ascending run: rows `pos..end` of batch `batch`.
struct Run {
    batch: usize,
    pos: usize,
    end: usize,
}

/// The rows of `batches` in key order, as batches of at most `batch_rows` rows holding
/// the first `fields` columns (uuids as text); and how many runs were merged.
pub(super) fn merge(
    batches: &[RecordBatch],
    fields: usize,
    batch_rows: usize,
) -> Result<(Vec<Ordered>, usize)> {
    let keys: Vec<Vec<Key>> = batches.iter().map(keys).collect::<Result<_>>()?;
    let mut runs = Vec::new();
    for (b, k) in keys.iter().enumerate() {
        let mut start = 0;
        for i in 1..k.len() {
            if k[i] < k[i - 1] {
                runs.push(Run {
                    batch: b,
                    pos: start,
                    end: i,
                });
                start = i;
            }
        }
        if start < k.len() {
            runs.push(Run {
                batch: b,
                pos: start,
                end: k.len(),
            });
        }
    }
    let run_count = runs.len();
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), 0));
    };
    // Only the delivered columns are gathered; the key columns stay behind.
    let schema = Arc::new(arrow::datatypes::Schema::new(
        first.schema().fields()[..fields]
            .iter()
            .map(|f| match f.data_type() {
                DataType::FixedSizeBinary(16) => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8))
                }
                _ => f.clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let sources: Vec<Vec<&dyn Array>> = (0..fields)
        .map(|c| batches.iter().map(|b| b.column(c).as_ref()).collect())
        .collect();
    let mut out = Vec::new();
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(batch_rows);
    let mut times: Vec<i64> = Vec::with_capacity(batch_rows);
    let mut flush = |picks: &mut Vec<(usize, usize)>, times: &mut Vec<i64>| -> Result<()> {
        if picks.is_empty() {
            return Ok(());
        }
        let columns = sources
            .iter()
            .map(|arrays| gather(arrays, picks))
            .collect::<std::result::Result<Vec<_>, _>>()
            .and_then(|columns| RecordBatch::try_new(schema.clone(), columns))
            .map_err(|e| LakeError::arrow("merging a replay window", e))?;
        out.push(Ordered {
            batch: columns,
            times: std::mem::replace(times, Vec::with_capacity(batch_rows)),
            offset: 0,
        });
        picks.clear();
        Ok(())
    };
    // Min-heap of run heads by (key, run): equal keys leave in run order. The head's run
    // moves on in place; a run that stays ahead costs two comparisons per row.
    let mut heap: BinaryHeap<Reverse<(Key, usize)>> = runs
        .iter()
        .enumerate()
        .map(|(r, run)| Reverse((keys[run.batch][run.pos], r)))
        .collect();
    while let Some(mut head) = heap.peek_mut() {
        let Reverse((_, r)) = *head;
        let run = &mut runs[r];
        let k = &keys[run.batch];
        picks.push((run.batch, run.pos));
        times.push(k[run.pos].ts);
        run.pos += 1;
        if run.pos == run.end {
            PeekMut::pop(head);
        } else {
            *head = Reverse((k[run.pos], r));
        }
        if picks.len() == batch_rows {
            flush(&mut picks, &mut times)?;
        }
    }
    flush(&mut picks, &mut times)?;
    Ok((out, run_count))
}

/// One column of the picked rows, `(array, row)` each. Arrow's `interleave` does most
/// types; two are done here because it copies them row by row through its generic path:
/// maps (the vendor fields), and 16-byte message ids, which are written straight out as
/// uuid text.
fn gather(arrays: &[&dyn Array], picks: &[(usize, usize)]) -> ArrowResult<ArrayRef> {
    let nulls = |valid: &dyn Fn(usize, usize) -> bool| {
        arrays
            .iter()
            .any(|a| a.null_count() > 0)
            .then(|| NullBuffer::from_iter(picks.iter().map(|&(a, r)| valid(a, r))))
    };
    match arrays[0].data_type() {
        DataType::FixedSizeBinary(16) => {
            let ids: Vec<_> = arrays.iter().map(|a| a.as_fixed_size_binary()).collect();
            Ok(Arc::new(uuid_text(
                picks.len(),
                picks
                    .iter()
                    .map(|&(a, r)| ids[a].is_valid(r).then(|| ids[a].value(r))),
            )))
        }
        DataType::Map(field, sorted) => {
            let maps: Vec<&MapArray> = arrays.iter().map(|a| a.as_map()).collect();
            let mut offsets = Vec::with_capacity(picks.len() + 1);
            offsets.push(0i32);
            let mut entries = Vec::new();
            for &(a, r) in picks {
                let o = maps[a].value_offsets();
                entries.extend((o[r] as usize..o[r + 1] as usize).map(|i| (a, i)));
                offsets.push(
                    i32::try_from(entries.len())
                        .map_err(|_| ArrowError::OffsetOverflowError(entries.len()))?,
                );
            }
            let children: Vec<&dyn Array> =
                maps.iter().map(|m| m.entries() as &dyn Array).collect();
            let entries = interleave(&children, &entries)?;
            Ok(Arc::new(MapArray::try_new(
                field.clone(),
                OffsetBuffer::new(offsets.into()),
                entries.as_struct().clone(),
                nulls(&|a, r| maps[a].is_valid(r)),
                *sorted,
            )?))
        }
        _ => interleave(arrays, picks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        FixedSizeBinaryArray, Int64Array, MapBuilder, StringArray, StringBuilder,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema, TimeUnit};

    fn batch(rows: &[(i64, i64, u8)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new(
                K_TS,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new(K_SEQ, DataType::Int64, false),
            Field::new(K_ID, DataType::FixedSizeBinary(16), false),
        ]));
        let ids: Vec<[u8; 16]> = rows.iter().map(|r| [r.2; 16]).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.0 * 1000 + r.1 * 10 + i64::from(r.2)),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(FixedSizeBinaryArray::try_from_iter(ids.iter()).unwrap()),
            ],
        )
        .unwrap()
    }

    fn merged(batches: &[RecordBatch], batch_rows: usize) -> (Vec<i64>, Vec<i64>, usize) {
        let (out, runs) = merge(batches, 1, batch_rows).unwrap();
        assert!(out.iter().all(|o| o.batch.num_rows() <= batch_rows));
        let values = out
            .iter()
            .flat_map(|o| {
                o.batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        let times = out.iter().flat_map(|o| o.times.clone()).collect();
        (values, times, runs)
    }

    #[test]
    fn runs_of_symbols_and_files_merge_into_time_order() {
        // Two files, each sorted by symbol then time: four runs.
        let a = batch(&[(1, 0, 1), (4, 0, 2), (9, 0, 3), (2, 0, 4), (3, 0, 5)]);
        let b = batch(&[(5, 0, 6), (6, 0, 7), (0, 0, 8), (7, 0, 9), (8, 0, 10)]);
        let (values, times, runs) = merged(&[a, b], 3);
        assert_eq!(runs, 4);
        assert_eq!(times, (0..10).collect::<Vec<_>>());
        assert_eq!(values[0], 8, "the row at t=0 is b's id 8");
    }

    #[test]
    fn equal_times_are_ordered_by_sequence_then_id() {
        let a = batch(&[(5, 2, 1), (5, 3, 1)]);
        let b = batch(&[(5, 2, 0), (5, 1, 9), (4, 7, 7)]);
        let (values, _, runs) = merged(&[a, b], 8192);
        assert_eq!(runs, 4);
        assert_eq!(values, vec![4077, 5019, 5020, 5021, 5031]);
    }

    #[test]
    fn maps_and_message_ids_are_gathered_as_arrow_would() {
        let map = |rows: &[Option<&[(&str, &str)]>]| {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for row in rows {
                match row {
                    Some(entries) => {
                        for (k, v) in *entries {
                            b.keys().append_value(k);
                            b.values().append_value(v);
                        }
                        b.append(true).unwrap();
                    }
                    None => b.append(false).unwrap(),
                }
            }
            b.finish()
        };
        let a = map(&[Some(&[("q", "1"), ("c", "2")]), None, Some(&[])]);
        let b = map(&[Some(&[("z", "9")]), Some(&[("y", "8"), ("x", "7")])]);
        // Sliced, as a window's batches can be: offsets no longer start at zero.
        let b = b.slice(1, 1);
        let picks = [(1, 0), (0, 1), (0, 0), (0, 2), (1, 0)];
        let got = gather(&[&a, &b], &picks).unwrap();
        let want = interleave(&[&a as &dyn Array, &b], &picks).unwrap();
        assert_eq!(got.as_map(), want.as_map());
        assert_eq!(got.null_count(), 1);

        let id = |byte: u8| Some([byte; 16]);
        let ids = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            [id(0xab), None, id(0x01)].into_iter(),
            16,
        )
        .unwrap();
        let got = gather(&[&ids], &[(0, 2), (0, 1), (0, 0)]).unwrap();
        assert_eq!(
            got.as_string::<i32>(),
            &StringArray::from(vec![
                Some("01010101-0101-0101-0101-010101010101"),
                None,
                Some("abababab-abab-abab-abab-abababababab"),
            ])
        );
    }

    #[test]
    fn unsorted_rows_still_come_out_in_order() {
        let rows: Vec<(i64, i64, u8)> = (0..200)
            .map(|i| ((i * 7919) % 200, 0, (i % 250) as u8))
            .collect();
        let (_, times, runs) = merged(&[batch(&rows)], 64);
        assert!(runs > 1);
        assert_eq!(times, (0..200).collect::<Vec<_>>());
    }
}
