//! Reading a table at one snapshot: K2 chooses the files, DataFusion reads them.
//!
//! Iceberg's own scan (in `iceberg-datafusion`) reads every chosen file whole, in one
//! stream. K2's tables are sorted by symbol then time, so most of a file is irrelevant to a
//! one-symbol question; DataFusion's Parquet reader skips it: row groups and pages by their
//! statistics (the page index), with file footers from an in-memory cache shared by every
//! query.
//!
//! The snapshot's data files come from its manifests, held between queries
//! ([`ManifestCache`]), and are pruned with the query's filters by DataFusion's pruning
//! predicate over the column bounds and counts the manifests record.
//!
//! Files are matched to the table schema by column name, which is exact for files written
//! under that schema. A table whose schema has changed, or with delete files, is read by
//! Iceberg's scan instead (field ids and deletes applied), so answers never depend on the
//! fast path.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::warehouse::Files;
use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicate;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{
    DataFile, Datum, Manifest, ManifestContentType, ManifestFile, PrimitiveLiteral, SnapshotRef,
};
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;

/// One table pinned at a snapshot.
#[derive(Debug)]
pub struct SnapshotTable {
    table: Table,
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    manifests: Arc<ManifestCache>,
    /// Iceberg's own scan, used when the fast path would not be exact.
    fallback: Option<IcebergStaticTableProvider>,
}

impl SnapshotTable {
    /// `snapshot_id` must exist in the table (None: the current snapshot).
    pub async fn new(
        table: Table,
        snapshot_id: Option<i64>,
        manifests: Arc<ManifestCache>,
    ) -> iceberg::Result<Self> {
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
            manifests,
            fallback,
        })
    }

    /// Which of `files` may hold rows matching `filters`, by their Iceberg column bounds,
    /// null and row counts. A filter DataFusion cannot turn into a pruning predicate keeps
    /// every file: pruning only ever skips what provably has no match.
    fn prune(&self, state: &dyn Session, filters: &[Expr], files: &[&DataFile]) -> Vec<bool> {
        let all = vec![true; files.len()];
        let Some(expr) = conjunction(filters.iter().cloned()) else {
            return all;
        };
        let stats = FileStats {
            files,
            ids: self.table.metadata().current_schema(),
            arrow: &self.schema,
        };
        let keep = DFSchema::try_from(self.schema.clone())
            .and_then(|df| state.create_physical_expr(expr, &df))
            .and_then(|e| PruningPredicate::try_new(e, self.schema.clone()))
            .and_then(|p| p.prune(&stats));
        match keep {
            Ok(keep) => keep,
            Err(e) => {
                tracing::debug!(error = %e, "files not pruned");
                all
            }
        }
    }
}

/// The manifests of each table's current snapshot, kept between queries.
///
/// Iceberg keeps manifests in a cache of each loaded `Table`, and the query engine loads
/// the table again whenever its metadata is older than `query.metadata_refresh`: every
/// refresh would start cold and read every manifest of the table again, and with one
/// manifest per commit planning would grow with the table's age. Manifest files are never
/// rewritten, so an entry
/// here cannot go stale; it is dropped once the current snapshot no longer lists it, which
/// bounds the cache by the tables' own manifest lists.
#[derive(Debug, Default)]
pub struct ManifestCache {
    tables: Mutex<HashMap<String, Held>>,
}

#[derive(Debug, Default)]
struct Held {
    /// The snapshot these manifests are of (sequence number, manifest list path).
    sequence: i64,
    list_path: String,
    list: Arc<Vec<ManifestFile>>,
    manifests: HashMap<String, Arc<Manifest>>,
}

impl ManifestCache {
    /// The data manifests of `snapshot`, or None when it also has delete files. With
    /// `current`, the table's held manifests become exactly this snapshot's (unless a newer
    /// snapshot's are already held); a time-travel snapshot reuses them and leaves them.
    pub async fn data_manifests(
        &self,
        table: &Table,
        snapshot: &SnapshotRef,
        current: bool,
    ) -> iceberg::Result<Option<Vec<Arc<Manifest>>>> {
        let key = table.identifier().to_string();
        let held_list = {
            let tables = self.tables.lock().expect("manifest cache lock");
            tables
                .get(&key)
                .filter(|h| h.list_path == snapshot.manifest_list())
                .map(|h| h.list.clone())
        };
        let list = match held_list {
            Some(list) => list,
            None => Arc::new(
                table
                    .manifest_list_reader(snapshot)
                    .load()
                    .await?
                    .consume_entries()
                    .into_iter()
                    .collect(),
            ),
        };
        if list.iter().any(|m| m.content != ManifestContentType::Data) {
            return Ok(None);
        }
        let mut found: Vec<Option<Arc<Manifest>>> = {
            let tables = self.tables.lock().expect("manifest cache lock");
            let held = tables.get(&key);
            list.iter()
                .map(|m| held.and_then(|h| h.manifests.get(&m.manifest_path).cloned()))
                .collect()
        };
        let missing: Vec<usize> = (0..list.len()).filter(|&i| found[i].is_none()).collect();
        let loads: Vec<_> = missing
            .iter()
            .map(|&i| {
                let (manifest, io) = (list[i].clone(), table.file_io().clone());
                async move { manifest.load_manifest(&io).await }
            })
            .collect();
        let loaded: Vec<Manifest> = futures::stream::iter(loads)
            .buffered(16)
            .try_collect()
            .await?;
        for (i, m) in missing.into_iter().zip(loaded) {
            found[i] = Some(Arc::new(m));
        }
        let manifests: Vec<Arc<Manifest>> = found.into_iter().flatten().collect();
        if current {
            let mut tables = self.tables.lock().expect("manifest cache lock");
            let held = tables.entry(key).or_default();
            // Once per new snapshot, not per query: the gauges walk every held manifest.
            if held.list_path == snapshot.manifest_list()
                || snapshot.sequence_number() < held.sequence
            {
                return Ok(Some(manifests));
            }
            *held = Held {
                sequence: snapshot.sequence_number(),
                list_path: snapshot.manifest_list().to_string(),
                list: list.clone(),
                manifests: list
                    .iter()
                    .map(|m| m.manifest_path.clone())
                    .zip(manifests.iter().cloned())
                    .collect(),
            };
            let (held_manifests, files) = tables.values().fold((0, 0), |(m, f), h| {
                let files: usize = h.manifests.values().map(|m| m.entries().len()).sum();
                (m + h.manifests.len(), f + files)
            });
            crate::metrics::manifest_cache(held_manifests, files);
        }
        Ok(Some(manifests))
    }
}

/// Column statistics of data files as DataFusion's pruning reads them, from the bounds
/// and counts Iceberg's manifests record per field id.
struct FileStats<'a> {
    files: &'a [&'a DataFile],
    ids: &'a iceberg::spec::Schema,
    arrow: &'a arrow::datatypes::Schema,
}

impl FileStats<'_> {
    fn bounds(
        &self,
        column: &Column,
        pick: impl Fn(&DataFile) -> &HashMap<i32, Datum>,
    ) -> Option<ArrayRef> {
        let field = self.arrow.field_with_name(&column.name).ok()?;
        let id = self.ids.field_by_name(&column.name)?.id;
        let ty = field.data_type();
        // A file without a bound for the column is unknown there (a null), never pruned.
        let null = ScalarValue::try_from(ty).ok()?;
        let values = self.files.iter().map(|f| {
            pick(f)
                .get(&id)
                .and_then(|d| bound_scalar(d, ty))
                .unwrap_or_else(|| null.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for FileStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, DataFile::lower_bounds)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, DataFile::upper_bounds)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let id = self.ids.field_by_name(&column.name)?.id;
        let counts = self
            .files
            .iter()
            .map(|f| f.null_value_counts().get(&id).copied());
        Some(Arc::new(UInt64Array::from_iter(counts)))
    }

    fn row_counts(&self, _column: &Column) -> Option<ArrayRef> {
        let counts = self.files.iter().map(|f| Some(f.record_count()));
        Some(Arc::new(UInt64Array::from_iter(counts)))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// An Iceberg bound as a value of the column's Arrow type. Only types whose bounds order
/// exactly as Arrow compares them are given; floats are left out (NaN has no place in an
/// order), as are UUIDs and binaries. A column without a value is never pruned on.
fn bound_scalar(d: &Datum, ty: &DataType) -> Option<ScalarValue> {
    use PrimitiveLiteral as L;
    Some(match (d.literal(), ty) {
        (L::Boolean(v), DataType::Boolean) => ScalarValue::Boolean(Some(*v)),
        (L::Int(v), DataType::Int32) => ScalarValue::Int32(Some(*v)),
        (L::Int(v), DataType::Date32) => ScalarValue::Date32(Some(*v)),
        (L::Long(v), DataType::Int64) => ScalarValue::Int64(Some(*v)),
        (L::Long(v), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(*v), tz.clone())
        }
        (L::Long(v), DataType::Timestamp(TimeUnit::Nanosecond, tz)) => {
            ScalarValue::TimestampNanosecond(Some(*v), tz.clone())
        }
        (L::String(v), DataType::Utf8) => ScalarValue::Utf8(Some(v.clone())),
        (L::String(v), DataType::LargeUtf8) => ScalarValue::LargeUtf8(Some(v.clone())),
        (L::String(v), DataType::Utf8View) => ScalarValue::Utf8View(Some(v.clone())),
        (L::Int128(v), DataType::Decimal128(p, s)) => ScalarValue::Decimal128(Some(*v), *p, *s),
        _ => return None,
    })
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

        let planning = std::time::Instant::now();
        let Some(manifests) = self
            .manifests
            .data_manifests(&self.table, snapshot, self.snapshot_id.is_none())
            .await
            .map_err(external)?
        else {
            // K2 only appends; another engine may have deleted rows. Iceberg applies them.
            let exact = iceberg_scan(&self.table, self.snapshot_id)
                .await
                .map_err(external)?;
            return exact.scan(state, projection, filters, limit).await;
        };
        let files: Vec<&DataFile> = manifests
            .iter()
            .flat_map(|m| m.entries())
            .filter(|e| e.is_alive())
            .map(|e| e.data_file())
            .collect();
        let keep = self.prune(state, filters, &files);
        let tasks: Vec<&DataFile> = files
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(f, _)| *f)
            .collect();
        tracing::debug!(
            files = tasks.len(),
            of = files.len(),
            plan_files_us = planning.elapsed().as_micros() as u64,
            "file planning"
        );

        // DataFusion reads the files through the warehouse's object store (registered
        // with the runtime on first use): statistics and page-index pruning.
        let files = Files::of(self.table.file_io(), self.table.metadata().location())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
        for (i, task) in tasks.iter().enumerate() {
            let path = files
                .path(task.file_path())
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            groups[i % partitions].push(PartitionedFile::new(
                path.to_string(),
                task.file_size_in_bytes(),
            ));
        }
        let store_url = files.url().clone();
        let runtime = state.runtime_env();
        if runtime.object_store(&store_url).is_err() {
            runtime.register_object_store(store_url.as_ref(), files.store().clone());
        }
        let store = files.store().clone();
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        // The planner pushes the query's filters into this source for statistics and page
        // pruning. Row-level filtering while decoding stays off: after page pruning nearly
        // every row read matches, and it measured slower.
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
