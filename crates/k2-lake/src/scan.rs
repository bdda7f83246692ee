//! Reading a table at one snapshot: Iceberg chooses the files, DataFusion reads them.
//!
//! Iceberg's own scan (in `iceberg-datafusion`) reads every chosen file whole, in one
//! stream. K2's tables are sorted by symbol then time, so most of a file is irrelevant to a
//! one-symbol question; DataFusion's Parquet reader skips it: row groups and pages by their
//! statistics (the page index), with file footers from an in-memory cache shared by every
//! query. Iceberg still does
//! what only it can: choosing the snapshot's data files, pruned by partition and file
//! metrics with the same filters.
//!
//! Files are matched to the table schema by column name, which is exact for files written
//! under that schema. A table whose schema has changed, or with delete files, is read by
//! Iceberg's scan instead (field ids and deletes applied), so answers never depend on the
//! fast path.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::DataFusionError;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;
use iceberg_datafusion::physical_plan::convert_filters_to_predicate;

/// One table pinned at a snapshot.
#[derive(Debug)]
pub struct SnapshotTable {
    table: Table,
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    /// Iceberg's own scan, used when the fast path would not be exact.
    fallback: Option<IcebergStaticTableProvider>,
}

impl SnapshotTable {
    /// `snapshot_id` must exist in the table (None: the current snapshot).
    pub async fn new(table: Table, snapshot_id: Option<i64>) -> iceberg::Result<Self> {
        let metadata = table.metadata();
        let schema = match snapshot_id.and_then(|id| metadata.snapshot_by_id(id)) {
            Some(s) => s.schema(metadata)?,
            None => metadata.current_schema().clone(),
        };
        let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
        // One schema in the table's life: every data file was written with it.
        let fallback = if metadata.schemas_iter().len() > 1 {
            Some(iceberg_scan(&table, snapshot_id).await?)
        } else {
            None
        };
        Ok(SnapshotTable {
            table,
            snapshot_id,
            schema: arrow_schema,
            fallback,
        })
    }
}

/// Iceberg's own scan of `table` at `snapshot_id` (field ids and deletes applied).
async fn iceberg_scan(
    table: &Table,
    snapshot_id: Option<i64>,
) -> iceberg::Result<IcebergStaticTableProvider> {
    match snapshot_id {
        Some(id) => {
            IcebergStaticTableProvider::try_new_from_table_snapshot(table.clone(), id).await
        }
        None => IcebergStaticTableProvider::try_new_from_table(table.clone()).await,
    }
}

fn external(e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait::async_trait]
impl TableProvider for SnapshotTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Pruning is by statistics, so a filter is still applied to the rows read.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if let Some(fallback) = &self.fallback {
            return fallback.scan(state, projection, filters, limit).await;
        }
        let Some(snapshot) = (match self.snapshot_id {
            Some(id) => self.table.metadata().snapshot_by_id(id),
            None => self.table.metadata().current_snapshot(),
        }) else {
            // A table with no snapshot yet has no rows.
            let empty = datafusion::physical_plan::empty::EmptyExec::new(match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            });
            return Ok(Arc::new(empty));
        };

        // Iceberg prunes the snapshot's files by partition and column metrics.
        let mut builder = self
            .table
            .scan()
            .snapshot_id(snapshot.snapshot_id())
            .select_all();
        if let Some(predicate) = convert_filters_to_predicate(filters) {
            builder = builder.with_filter(predicate);
        }
        let planning = std::time::Instant::now();
        let tasks: Vec<_> = builder
            .build()
            .map_err(external)?
            .plan_files()
            .await
            .map_err(external)?
            .try_collect()
            .await
            .map_err(external)?;
        tracing::debug!(
            files = tasks.len(),
            plan_files_us = planning.elapsed().as_micros() as u64,
            "iceberg file planning"
        );
        if tasks.iter().any(|t| !t.deletes.is_empty()) {
            // K2 only appends; another engine may have deleted rows. Iceberg applies them.
            let exact = iceberg_scan(&self.table, self.snapshot_id)
                .await
                .map_err(external)?;
            return exact.scan(state, projection, filters, limit).await;
        }

        // DataFusion reads the files: statistics and page-index pruning.
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        for (i, task) in tasks.iter().enumerate() {
            let url = url::Url::parse(&task.data_file_path).map_err(|e| {
                DataFusionError::Plan(format!("data file '{}': {e}", task.data_file_path))
            })?;
            if url.scheme() != "file" {
                return Err(DataFusionError::NotImplemented(format!(
                    "reading data files from '{}' storage",
                    url.scheme()
                )));
            }
            groups[i % partitions].push(PartitionedFile::new(
                url.path().trim_start_matches('/'),
                task.file_size_in_bytes,
            ));
        }
        let store_url = ObjectStoreUrl::local_filesystem();
        let store = state.runtime_env().object_store(&store_url)?;
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        // The planner pushes the query's filters into this source for statistics and page
        // pruning. Row-level filtering while decoding stays off: after page pruning nearly
        // every row read matches, and it measured slower (trades of one symbol-day,
        // p50 10.2 ms with it, 6.9 ms without).
        let source = ParquetSource::new(self.schema.clone())
            .with_enable_page_index(true)
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                store, cache,
            )));
        let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
            .with_file_groups(
                groups
                    .into_iter()
                    .filter(|g| !g.is_empty())
                    .map(FileGroup::new)
                    .collect(),
            )
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
