//! One file into the log, exactly once: read in chunks of rows, each chunk parsed over
//! the cores and appended with the file's checkpoint (bytes and lines done, a hash of
//! those bytes), several chunks in flight while the next is read.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;

use k2_log::{DeadLetter, DeadLetterStore, Log, SourceCheckpoint, TopicBatch};
use k2_model::{DataType, STAGE_SPANS};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use xxhash_rust::xxh3::Xxh3;

use super::{FileSummary, IngestError, IngestOptions, Progress, STAGE, dead_letter};
use crate::asx::{self, Company, LocalClock, Rejection, RowSource};
use crate::metrics;
use crate::producer::{Encoder, RECORD_BYTES, encode, now_us};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileCheckpoint {
    pub bytes: u64,
    pub lines: u64,
    pub prefix_xxh3: u64,
}

/// A chunk's rows as read from the file, parsed once it is full: their text back to back,
/// and each one's line number and end in that text.
#[derive(Default)]
struct Chunk {
    text: Vec<u8>,
    lines: Vec<(u64, usize)>,
}

impl Chunk {
    fn push(&mut self, line_no: u64, line: &[u8]) {
        self.text.extend_from_slice(line);
        self.lines.push((line_no, self.text.len()));
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// The `i`-th row: its line number and text.
    fn row(&self, i: usize) -> (u64, &[u8]) {
        let start = if i == 0 { 0 } else { self.lines[i - 1].1 };
        let (line_no, end) = self.lines[i];
        (line_no, &self.text[start..end])
    }

    fn clear(&mut self) {
        self.text.clear();
        self.lines.clear();
    }
}

/// What parsing a file's rows needs to know about the file.
struct FileContext<'a> {
    rel: &'a str,
    topic: &'a str,
    company: &'a Company,
    data_type: DataType,
    schema_id: u32,
    receive_us: i64,
}

/// Chunks smaller than this are parsed on the ingest's thread alone.
const PARALLEL_PARSE_FROM: usize = 4096;

/// Parses a chunk's rows and encodes them for the log, in the file's order: the records as
/// one batch, and a dead letter for each row refused. A large chunk is parsed over
/// `threads` threads, each taking a run of rows (parsing and encoding are nearly all of an
/// ingest's own work, and they need nothing from the rows before).
fn parse_chunk(
    chunk: &Chunk,
    file: &FileContext<'_>,
    now_us: i64,
    threads: usize,
) -> (TopicBatch, Vec<DeadLetter>) {
    let n = chunk.len();
    if threads < 2 || n < PARALLEL_PARSE_FROM {
        return parse_rows(chunk, 0..n, n, file, now_us);
    }
    let share = n.div_ceil(threads);
    std::thread::scope(|s| {
        let helpers: Vec<_> = (share..n)
            .step_by(share)
            .map(|from| {
                let rows = from..(from + share).min(n);
                let helper = std::thread::Builder::new()
                    .name("k2-parse".into())
                    .spawn_scoped(s, {
                        let (rows, room) = (rows.clone(), rows.len());
                        move || parse_rows(chunk, rows, room, file, now_us)
                    });
                (rows, helper)
            })
            .collect();
        // The first run's batch has room for the whole chunk; the others are appended.
        let (mut batch, mut letters) = parse_rows(chunk, 0..share, n, file, now_us);
        for (rows, helper) in helpers {
            let (more, more_letters) = match helper {
                Ok(h) => h.join().expect("parsing does not panic"),
                // A helper that could not start leaves its rows to this thread.
                Err(_) => parse_rows(chunk, rows.clone(), rows.len(), file, now_us),
            };
            batch.append(&more);
            letters.extend(more_letters);
        }
        (batch, letters)
    })
}

/// Parses and encodes the chunk's rows `rows` into a batch with room for `room` records.
fn parse_rows(
    chunk: &Chunk,
    rows: std::ops::Range<usize>,
    room: usize,
    file: &FileContext<'_>,
    now_us: i64,
) -> (TopicBatch, Vec<DeadLetter>) {
    let mut batch = TopicBatch::with_capacity(file.topic, room, room * RECORD_BYTES);
    let mut letters = Vec::new();
    // The clock only caches an offset, so each run of rows can have its own.
    let mut clock = LocalClock::new();
    for i in rows {
        let (line_no, line) = chunk.row(i);
        let src = RowSource {
            company: file.company,
            line: line_no,
            receive_us: file.receive_us,
        };
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => match file.data_type {
                DataType::Trades => asx::parse_trade(text, &src, &mut clock),
                _ => asx::parse_quote(text, &src, &mut clock),
            },
            Err(_) => Err(Rejection {
                kind: "encoding",
                reason: "row is not valid UTF-8".into(),
            }),
        };
        match parsed {
            Ok(mut rec) => encode(&mut rec, file.schema_id, now_us, &mut batch),
            Err(r) => letters.push(dead_letter(
                format!("{}:{line_no}", file.rel),
                r,
                line.to_vec(),
            )),
        }
    }
    (batch, letters)
}

/// A produce call handed to the log and not yet stored.
type Storing<'a> = Pin<Box<dyn Future<Output = Result<(), k2_log::LogError>> + Send + 'a>>;

/// Chunks a log that keeps its checkpoints apart from the records (Kafka) has in flight at
/// once: enough to keep its producer's queue full while the next chunk is parsed.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Chunks handed to the log whose records or checkpoint are not stored yet, oldest first.
/// A log that stores a checkpoint with its records in one step (the embedded one) stores
/// one chunk while the next is parsed. On Kafka a checkpoint is a record of its own, so
/// several chunks' records are in flight at once and each chunk's checkpoint is sent once
/// its records are delivered, after the checkpoint before it: a checkpoint never gets
/// ahead of records it covers.
pub(super) struct InFlight<'a> {
    atomic: bool,
    /// Each chunk's records, unless already stored, and its checkpoint when sent apart.
    chunks: VecDeque<(Option<Storing<'a>>, Option<SourceCheckpoint>)>,
    /// The last checkpoint sent on its own, until it is acknowledged.
    checkpoint: Option<Storing<'a>>,
}

impl<'a> InFlight<'a> {
    pub fn new<L: Log>(log: &L) -> Self {
        InFlight {
            atomic: log.atomic_checkpoints(),
            chunks: VecDeque::new(),
            checkpoint: None,
        }
    }

    /// Hands a chunk's records to the log, after storing the oldest chunk when as many as
    /// the log takes are in flight.
    async fn push<L: Log>(
        &mut self,
        log: &'a L,
        batch: TopicBatch,
        checkpoint: SourceCheckpoint,
    ) -> Result<(), IngestError> {
        let depth = if self.atomic { 1 } else { CHUNKS_IN_FLIGHT };
        while self.chunks.len() >= depth {
            self.store_oldest(log).await?;
        }
        let (records, later) = if self.atomic {
            (log.produce(vec![batch], Some(checkpoint)), None)
        } else {
            (log.produce(vec![batch], None), Some(checkpoint))
        };
        let records = hand_over(Box::pin(records)).await?;
        self.chunks.push_back((records, later));
        Ok(())
    }

    /// Waits for the oldest chunk's records and sends its checkpoint, if it has its own.
    async fn store_oldest<L: Log>(&mut self, log: &'a L) -> Result<(), IngestError> {
        let Some((records, checkpoint)) = self.chunks.pop_front() else {
            return Ok(());
        };
        if let Some(records) = records {
            records.await?;
        }
        if let Some(checkpoint) = checkpoint {
            if let Some(previous) = self.checkpoint.take() {
                previous.await?;
            }
            self.checkpoint =
                hand_over(Box::pin(log.produce(Vec::new(), Some(checkpoint)))).await?;
        }
        Ok(())
    }

    /// Stores every chunk still in flight, in order.
    pub async fn finish<L: Log>(&mut self, log: &'a L) -> Result<(), IngestError> {
        while !self.chunks.is_empty() {
            self.store_oldest(log).await?;
        }
        if let Some(last) = self.checkpoint.take() {
            last.await?;
        }
        Ok(())
    }
}

/// Polls a produce call once, which hands its records over (a Kafka producer queues them
/// all, and their delivery goes on while the next chunk is parsed): the call, unless that
/// already stored them.
async fn hand_over(mut call: Storing<'_>) -> Result<Option<Storing<'_>>, IngestError> {
    match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
        Poll::Ready(result) => result.map(|()| None).map_err(IngestError::from),
        Poll::Pending => Ok(Some(call)),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn ingest_file<'a, L: Log>(
    log: &'a L,
    dlq: &DeadLetterStore,
    encoder: &Encoder,
    path: &Path,
    rel: &str,
    topic: &str,
    data_type: DataType,
    company: &Company,
    receive_us: i64,
    done: Option<Vec<u8>>,
    options: &IngestOptions,
    summary: &mut FileSummary,
    progress: &mut dyn FnMut(Progress<'_>),
    in_flight: &mut InFlight<'a>,
) -> Result<(), IngestError> {
    let io_err = |e| IngestError::Io {
        path: path.to_path_buf(),
        cause: e,
    };
    let file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let source = format!("asx:{rel}");
    let done: FileCheckpoint = match done {
        Some(raw) => serde_json::from_slice(&raw)
            .map_err(|e| IngestError::Layout(format!("checkpoint of {rel} is unreadable: {e}")))?,
        None => FileCheckpoint::default(),
    };
    let mut hasher = Xxh3::new();
    let mut buf = Vec::with_capacity(256);
    let mut bytes = 0u64;
    let mut line_no = 0u64;
    // Verify the part ingested before is unchanged, then continue after it.
    if done.bytes > 0 {
        if total < done.bytes {
            return Err(IngestError::Layout(format!(
                "{rel} is shorter ({total} bytes) than the {} bytes already ingested from it; it was replaced, not appended to",
                done.bytes
            )));
        }
        while bytes < done.bytes {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf);
            bytes += n as u64;
            line_no += 1;
        }
        if bytes != done.bytes || hasher.digest() != done.prefix_xxh3 {
            return Err(IngestError::Layout(format!(
                "{rel} changed since it was ingested (its first {} bytes differ); refusing to ingest it again",
                done.bytes
            )));
        }
        summary.already_ingested_lines = line_no;
        if bytes == total {
            return Ok(());
        }
    }

    let file = FileContext {
        rel,
        topic,
        company,
        data_type,
        schema_id: encoder.ids[&data_type],
        receive_us,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut chunk = Chunk::default();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n > 0 {
            hasher.update(&buf);
            bytes += n as u64;
            line_no += 1;
            let mut line = &buf[..];
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                summary.blank_lines += 1;
            } else {
                summary.rows_read += 1;
                chunk.push(line_no, line);
            }
        }
        let at_end = n == 0;
        if chunk.len() >= options.chunk_rows || (at_end && (bytes > done.bytes)) {
            // One ingestion time per append: the moment the chunk goes to the log.
            let now = now_us();
            let (batch, letters) = {
                let span = tracing::trace_span!(target: STAGE_SPANS, "parse", file = rel, rows = chunk.len(), dead_letters = tracing::field::Empty)
                    .entered();
                let parsed = parse_chunk(&chunk, &file, now, threads);
                span.record("dead_letters", parsed.1.len());
                parsed
            };
            chunk.clear();
            summary.produced += batch.len() as u64;
            summary.dead_lettered += letters.len() as u64;
            metrics::rows(STAGE, batch.len() as u64, letters.len() as u64);
            dlq.append(&letters)?;
            log.publish_dead_letters(&letters).await?;
            let state = serde_json::to_vec(&FileCheckpoint {
                bytes,
                lines: line_no,
                prefix_xxh3: hasher.digest(),
            })
            .expect("checkpoint serialises");
            let append =
                tracing::trace_span!(target: STAGE_SPANS, "append", topic, records = batch.len());
            in_flight
                .push(
                    log,
                    batch,
                    SourceCheckpoint {
                        source: source.clone(),
                        state,
                    },
                )
                .instrument(append)
                .await?;
            progress(Progress {
                file: rel,
                bytes_done: bytes,
                bytes_total: total,
                rows_done: summary.rows_read,
            });
        }
        if at_end {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_parsed_over_threads_equals_it_parsed_on_one() {
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../samples/asx-2014-03/trades/7078.csv");
        let text = std::fs::read_to_string(sample).unwrap();
        let mut chunk = Chunk::default();
        let bad = [3u64, 5_000, 5_001, 9_999];
        for (i, line) in text.lines().take(10_000).enumerate() {
            let line_no = i as u64 + 1;
            let line = if bad.contains(&line_no) {
                "03/14/2014,15:00:00.000,abc,100,0,,"
            } else {
                line
            };
            chunk.push(line_no, line.as_bytes());
        }
        let company = Company {
            company_id: "7078".into(),
            symbol: "BHP".into(),
            name: "BHP BILLITON LIMITED".into(),
            isin: "AU000000BHP4".into(),
            start_date: "01/01/2014".into(),
            end_date: "12/31/2014".into(),
        };
        let file = FileContext {
            rel: "trades/7078.csv",
            topic: "market.equities.trades.asx",
            company: &company,
            data_type: DataType::Trades,
            schema_id: 7,
            receive_us: 1_700_000_000_000_000,
        };
        let now = 1_700_000_001_000_000;
        let letters = |l: &[DeadLetter]| -> Vec<(String, String, Vec<u8>)> {
            l.iter()
                .map(|l| (l.source.clone(), l.kind.clone(), l.raw.clone()))
                .collect()
        };
        let (one, one_letters) = parse_chunk(&chunk, &file, now, 1);
        assert_eq!(one.len(), 10_000 - bad.len());
        let sources: Vec<String> = letters(&one_letters).into_iter().map(|l| l.0).collect();
        assert_eq!(
            sources,
            bad.map(|n| format!("trades/7078.csv:{n}")).to_vec()
        );
        for threads in [2, 3, 7] {
            let (many, many_letters) = parse_chunk(&chunk, &file, now, threads);
            assert!(many == one, "{threads} threads: the batch differs");
            assert_eq!(
                letters(&many_letters),
                letters(&one_letters),
                "{threads} threads"
            );
        }
    }
}
