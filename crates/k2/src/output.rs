//! Rendering results: an aligned table on the terminal, or CSV, JSON or a Parquet file.
//! Every result goes through Arrow record batches and the API's encoder
//! (`k2_api::format`), so the CLI and the API show the same values.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::ValueEnum;
use k2_api::format;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Writes `batches` in `format` to `output` (a file) or standard output.
pub fn render(
    batches: &[RecordBatch],
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let encoded = match format {
        Format::Table => None,
        Format::Csv => Some(format::Format::Csv),
        Format::Json => Some(format::Format::Json),
        Format::Parquet => {
            if output.is_none() {
                bail!("--format parquet needs --output FILE")
            }
            Some(format::Format::Parquet)
        }
    };
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    match encoded {
        Some(f) => {
            out.write_all(&format::encode(batches, f).map_err(|e| anyhow::anyhow!(e))?)?;
            if f == format::Format::Json {
                writeln!(out)?;
            }
            if let (format::Format::Parquet, Some(path)) = (f, output) {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                eprintln!("wrote {rows} rows to {}", path.display());
            }
        }
        None if batches.iter().all(|b| b.num_rows() == 0) => writeln!(out, "(no rows)")?,
        None => writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
    }
    out.flush()?;
    Ok(())
}

/// Serialisable rows as record batches.
pub fn to_batches<T: Serialize>(rows: &[T]) -> anyhow::Result<Vec<RecordBatch>> {
    format::to_batches(rows).map_err(|e| anyhow::anyhow!(e))
}
