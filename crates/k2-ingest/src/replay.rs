//! Dead-letter replay: every stored rejection runs again through the current parser or
//! decoder (after a fix, a late schema registration, a late company listing). What passes
//! now is appended to the log, where the lake writer lands it like any other record, and
//! its letter is removed; what still fails keeps its letter with today's reason.
//!
//! Safe to repeat or interrupt: records keep their deterministic message ids, so a record
//! appended twice (a crash between the append and the removal) is dropped by the lake
//! writer's dedup.

use std::collections::BTreeMap;

use k2_log::{
    DeadLetter, DeadLetterStore, LAKE_DECODE_STAGE, Log, LogConsumer, PartitionOffset,
    PayloadDecoder, SchemaStore, TopicBatch,
};
use k2_model::{AssetClass, DataType, MarketRecord, Text, TopicName, avro};
use serde::Serialize;

use crate::asx::{self, Company, LocalClock, Rejection, RowSource};
use crate::ingest::{self, IngestError};
use crate::producer;

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    pub examined: u64,
    /// Passed now: appended to the log, letter removed.
    pub replayed: u64,
    /// Failed again: letter kept, with the reason found now.
    pub still_failing: u64,
    /// Letters of a stage that cannot be replayed (kept as they are).
    pub not_replayable: u64,
    /// Records appended per topic.
    pub appended: BTreeMap<String, u64>,
}

/// Outcome of one letter.
enum Retry {
    Passed { topic: String, record: Passed },
    Failed(Rejection),
    NotReplayable,
}

/// A letter that passed, as it goes back to the log.
enum Passed {
    /// Parsed again from the source's row: encoded with the topic's schema.
    Parsed(Box<MarketRecord>, u32),
    /// The payload as it was, now decodable: keyed by its record.
    Payload { key: Text, value: Vec<u8> },
}

/// Replays up to `limit` letters, oldest first.
pub async fn replay_dead_letters<L: Log + SchemaStore>(
    log: &L,
    dlq: &DeadLetterStore,
    limit: usize,
) -> Result<ReplayReport, IngestError> {
    let letters = dlq.list(0, limit)?;
    let mut report = ReplayReport {
        examined: letters.len() as u64,
        ..Default::default()
    };
    if letters.is_empty() {
        return Ok(report);
    }
    let mut companies: Option<BTreeMap<Text, Company>> = None;
    let mut decoder = PayloadDecoder::default();
    let mut schema_ids: BTreeMap<DataType, u32> = BTreeMap::new();
    let mut batches: BTreeMap<String, TopicBatch> = BTreeMap::new();
    let mut passed = Vec::new();
    let now = chrono::Utc::now().timestamp_micros();
    for (id, letter) in letters {
        let retry = match letter.stage.as_str() {
            ingest::STAGE => {
                if companies.is_none() {
                    companies = Some(listed_companies(log).await?);
                }
                let companies = companies.as_ref().expect("loaded above");
                match reparse_asx(&letter, companies, now) {
                    Ok(record) => {
                        let dt = record.data_type();
                        let schema_id = match schema_ids.get(&dt) {
                            Some(&id) => id,
                            None => {
                                let topic = asx_topic(dt);
                                let id =
                                    log.register(&topic.subject(), avro::schema_for(dt)).await?;
                                schema_ids.insert(dt, id);
                                id
                            }
                        };
                        Retry::Passed {
                            topic: asx_topic(dt).to_string(),
                            record: Passed::Parsed(Box::new(record), schema_id),
                        }
                    }
                    Err(r) => Retry::Failed(r),
                }
            }
            LAKE_DECODE_STAGE => redecode(log, &mut decoder, &letter).await?,
            _ => Retry::NotReplayable,
        };
        match retry {
            Retry::Passed { topic, record } => {
                *report.appended.entry(topic.clone()).or_default() += 1;
                let batch = batches
                    .entry(topic)
                    .or_insert_with_key(|topic| TopicBatch::new(topic.as_str()));
                match record {
                    Passed::Parsed(mut record, schema_id) => {
                        producer::encode(&mut record, schema_id, now, batch)
                    }
                    Passed::Payload { key, value } => {
                        batch.push(key.as_bytes(), &value, now / 1000)
                    }
                }
                passed.push(id);
            }
            Retry::Failed(r) => {
                report.still_failing += 1;
                if r.kind != letter.kind || r.reason != letter.reason {
                    let updated = DeadLetter {
                        kind: r.kind.into(),
                        reason: r.reason,
                        rejected_at_us: now,
                        ..letter
                    };
                    dlq.update(id, &updated)?;
                }
            }
            Retry::NotReplayable => report.not_replayable += 1,
        }
    }
    if !passed.is_empty() {
        // Appended first, removed after: an interruption between the two repeats a record
        // the lake drops by its id, and never loses one.
        log.produce(batches.into_values().collect(), None).await?;
        report.replayed = dlq.remove(&passed)? as u64;
    }
    tracing::info!(
        examined = report.examined,
        replayed = report.replayed,
        still_failing = report.still_failing,
        not_replayable = report.not_replayable,
        "dead letters replayed"
    );
    Ok(report)
}

fn asx_topic(dt: DataType) -> TopicName {
    TopicName::new(AssetClass::Equities, dt, asx::EXCHANGE)
}

/// The companies K2 has taken in, read back from the reference-data topic.
async fn listed_companies<L: Log + SchemaStore>(
    log: &L,
) -> Result<BTreeMap<Text, Company>, IngestError> {
    let topic = asx_topic(DataType::ReferenceData).to_string();
    let mut companies = BTreeMap::new();
    let ends = match log.end_offsets(&topic).await {
        Ok(ends) => ends,
        Err(_) => return Ok(companies),
    };
    let assignment: Vec<PartitionOffset> = (0..ends.len() as u32)
        .map(|partition| PartitionOffset {
            topic: topic.clone(),
            partition,
            offset: 0,
        })
        .collect();
    let total: u64 = ends.iter().sum();
    let mut consumer = log.consumer(assignment)?;
    let mut decoder = PayloadDecoder::default();
    let mut read = 0;
    while read < total {
        let records = consumer
            .poll(10_000, std::time::Duration::from_millis(100))
            .await?;
        if records.is_empty() {
            break;
        }
        read += records.len() as u64;
        for r in records {
            if let Ok(MarketRecord::Reference(c)) = decoder
                .decode(log, &r.value, DataType::ReferenceData)
                .await?
            {
                let vendor = c.vendor_data.unwrap_or_default();
                companies.insert(
                    c.company_id.clone(),
                    Company {
                        company_id: c.company_id,
                        symbol: c.symbol,
                        name: c.company_name,
                        isin: c.isin.unwrap_or_default(),
                        start_date: vendor.get("start_date").unwrap_or_default().into(),
                        end_date: vendor.get("end_date").unwrap_or_default().into(),
                    },
                );
            }
        }
    }
    Ok(companies)
}

/// An ASX line parsed again, from its letter's source (`trades/7078.csv:42`).
fn reparse_asx(
    letter: &DeadLetter,
    companies: &BTreeMap<Text, Company>,
    receive_us: i64,
) -> Result<MarketRecord, Rejection> {
    let unreadable = |what: String| Rejection {
        kind: "replay",
        reason: what,
    };
    let (rel, line) = letter
        .source
        .rsplit_once(':')
        .and_then(|(rel, line)| Some((rel, line.parse::<u64>().ok()?)))
        .ok_or_else(|| unreadable(format!("source '{}' is not FILE:LINE", letter.source)))?;
    let text = std::str::from_utf8(&letter.raw)
        .map_err(|_| unreadable("the raw line is not UTF-8".into()))?
        .trim_end_matches(['\r', '\n']);
    let (folder, file) = rel
        .split_once('/')
        .ok_or_else(|| unreadable(format!("source file '{rel}' is not FOLDER/FILE")))?;
    if folder == "reference-data" {
        let (parsed, mut rejected) = asx::parse_company_info(&format!("header\n{text}"));
        if let Some((_, _, r)) = rejected.pop() {
            return Err(r);
        }
        let company = parsed
            .into_values()
            .next()
            .ok_or_else(|| unreadable("the line is blank".into()))?;
        return Ok(asx::company_record(&company, receive_us));
    }
    let company_id = file.trim_end_matches(".csv");
    let company = companies.get(company_id).ok_or_else(|| Rejection {
        kind: "unknown_company",
        reason: format!("company {company_id} is not in the reference data taken in"),
    })?;
    let src = RowSource {
        company,
        line,
        receive_us,
    };
    let mut clock = LocalClock::new();
    match folder {
        "trades" => asx::parse_trade(text, &src, &mut clock),
        "quotes" => asx::parse_quote(text, &src, &mut clock),
        other => Err(unreadable(format!("no parser for folder '{other}'"))),
    }
}

/// A payload the lake writer could not read, read again (its schema may be known now).
async fn redecode<L: Log + SchemaStore>(
    log: &L,
    decoder: &mut PayloadDecoder,
    letter: &DeadLetter,
) -> Result<Retry, IngestError> {
    // `topic/partition@offset`
    let Some(topic) = letter
        .source
        .rsplit_once('@')
        .and_then(|(tp, _)| tp.rsplit_once('/'))
        .map(|(topic, _)| topic)
    else {
        return Ok(Retry::Failed(Rejection {
            kind: "replay",
            reason: format!("source '{}' is not TOPIC/PARTITION@OFFSET", letter.source),
        }));
    };
    let Ok(name) = TopicName::parse(topic) else {
        return Ok(Retry::NotReplayable);
    };
    Ok(
        match decoder.decode(log, &letter.raw, name.data_type).await? {
            Ok(record) => Retry::Passed {
                topic: topic.to_string(),
                record: Passed::Payload {
                    key: record.partition_key().into(),
                    value: letter.raw.clone(),
                },
            },
            Err(u) => Retry::Failed(Rejection {
                kind: u.kind,
                reason: u.reason,
            }),
        },
    )
}
