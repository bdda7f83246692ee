//! `k2 topics`: the log's topics: create an exchange's by K2's naming convention, list
//! them, describe one per partition with the lake writer's lag.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k2_log::Log;

use super::OutputArgs;
use crate::app::App;
use crate::config::Config;

#[derive(Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Creates an exchange's topics if missing (trades and quotes: `log.partitions`
    /// partitions, deleted after 7 days; reference data: one compacted partition). An
    /// existing topic must have the same partition count.
    Create {
        #[arg(long, default_value = "asx")]
        exchange: String,
        #[arg(long, default_value = "equities")]
        asset_class: String,
        /// Partitions of trades and quotes (default: `log.partitions`).
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Every topic with its partitions, cleanup, retention and record count.
    List,
    /// One topic per partition: end offset, the lake writer's group offset and its lag.
    Describe { topic: String },
}

pub async fn run(config: Config, args: TopicsArgs) -> anyhow::Result<ExitCode> {
    let app = App::open(config).await?;
    let rows = topics(&app, request(args.command)?).await?;
    args.out.rows(&rows)?;
    Ok(ExitCode::SUCCESS)
}

fn request(command: TopicsCommand) -> anyhow::Result<TopicsRequest> {
    Ok(match command {
        TopicsCommand::Create {
            exchange,
            asset_class,
            partitions,
        } => {
            let asset_class = asset_class
                .parse()
                .map_err(|e| anyhow::anyhow!("--asset-class: {e}"))?;
            let exchange = exchange.to_ascii_lowercase();
            if exchange.is_empty() || !exchange.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("--exchange must be letters and digits, not '{exchange}'");
            }
            TopicsRequest::Create {
                exchange,
                asset_class,
                partitions,
            }
        }
        TopicsCommand::List => TopicsRequest::List,
        TopicsCommand::Describe { topic } => TopicsRequest::Describe(topic),
    })
}

/// What `k2 topics` was asked.
enum TopicsRequest {
    Create {
        exchange: String,
        asset_class: k2_model::AssetClass,
        partitions: Option<u32>,
    },
    List,
    Describe(String),
}

/// One line of `k2 topics` output: a topic, or one partition of it (`describe`).
#[derive(serde::Serialize)]
struct TopicRow {
    pub topic: String,
    pub partition: Option<u32>,
    pub partitions: u32,
    pub cleanup: String,
    pub retention_hours: Option<f64>,
    pub records_end: u64,
    pub writer_offset: Option<u64>,
    pub writer_lag: Option<u64>,
    /// Topic configs as the broker reports them (Kafka `describe`).
    pub configs: String,
}

async fn topics(app: &App, request: TopicsRequest) -> anyhow::Result<Vec<TopicRow>> {
    let log = &app.log;
    let describe = matches!(request, TopicsRequest::Describe(_));
    let wanted: Vec<String> = match request {
        TopicsRequest::Create {
            exchange,
            asset_class,
            partitions,
        } => {
            let partitions = partitions.unwrap_or(app.config.log.partitions);
            let specs = k2_ingest::topic_specs(asset_class, &exchange, partitions);
            for spec in &specs {
                log.ensure_topic(spec)
                    .await
                    .with_context(|| format!("creating topic {}", spec.name))?;
            }
            specs.into_iter().map(|s| s.name).collect()
        }
        TopicsRequest::List => Vec::new(),
        TopicsRequest::Describe(name) => vec![name],
    };
    let specs = log.topics().await?;
    let mut rows = Vec::new();
    for name in &wanted {
        if !specs.iter().any(|s| &s.name == name) {
            bail!("topic '{name}' does not exist");
        }
    }
    for spec in specs
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
    {
        let ends = log.end_offsets(&spec.name).await?;
        let group = log
            .group_offsets(&app.config.writer.group, &spec.name)
            .await?;
        let configs = match (&app.log, describe) {
            (k2_log::AnyLog::Kafka(k), true) => k
                .topic_configs(&spec.name)
                .await?
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let row = |partition, end: u64, offset: Option<u64>| TopicRow {
            topic: spec.name.clone(),
            partition,
            partitions: spec.partitions,
            cleanup: format!("{:?}", spec.cleanup).to_lowercase(),
            retention_hours: spec.retention_ms.map(|ms| ms as f64 / 3_600_000.0),
            records_end: end,
            writer_offset: offset,
            writer_lag: offset.map(|o| end.saturating_sub(o)),
            configs: configs.clone(),
        };
        if describe {
            for (p, &end) in ends.iter().enumerate() {
                rows.push(row(Some(p as u32), end, group.get(p).copied().flatten()));
            }
        } else {
            let committed: Option<u64> = group.iter().copied().sum();
            rows.push(row(None, ends.iter().sum(), committed));
        }
    }
    Ok(rows)
}
