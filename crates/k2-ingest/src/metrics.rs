//! Metrics of the sources, declared in one place.

pub(crate) fn rows(stage: &'static str, produced: u64, dead_lettered: u64) {
    metrics::counter!("k2_ingest_rows_total", "stage" => stage, "outcome" => "produced")
        .increment(produced);
    metrics::counter!("k2_ingest_rows_total", "stage" => stage, "outcome" => "dead_lettered")
        .increment(dead_lettered);
}

pub(crate) fn file_failed(stage: &'static str) {
    metrics::counter!("k2_ingest_files_failed_total", "stage" => stage).increment(1);
}
