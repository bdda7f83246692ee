//! Rendering results: an aligned table on the terminal, or CSV, JSON or a Parquet file.
//! Every result goes through Arrow record batches, so all formats show the same values.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use clap::ValueEnum;
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
    if format == Format::Parquet {
        let Some(path) = output else {
            bail!("--format parquet needs --output FILE")
        };
        let schema = batches
            .first()
            .map_or_else(|| Arc::new(Schema::empty()), |b| b.schema());
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        for b in batches {
            writer.write(b)?;
        }
        writer.close()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        eprintln!("wrote {rows} rows to {}", path.display());
        return Ok(());
    }
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                writeln!(out, "(no rows)")?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            writeln!(out)?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    out.flush()?;
    Ok(())
}

/// Turns serialisable rows into one record batch (column types inferred from the values).
pub fn to_batches<T: Serialize>(rows: &[T]) -> anyhow::Result<Vec<RecordBatch>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let schema = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema)).build_decoder()?;
    decoder.serialize(&values)?;
    Ok(decoder.flush()?.into_iter().collect())
}
