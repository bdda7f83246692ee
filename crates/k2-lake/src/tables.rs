//! The lake's tables, defined once: `market_data.trades`, `market_data.quotes` and
//! `reference_data.companies`, created in the catalog when missing.
//!
//! Market tables are partitioned by `day(timestamp)` and sorted by (symbol, timestamp).
//! Beside the UTC `timestamp` they carry `trade_date`, the exchange's trading day in its own
//! time zone, so daily answers group by the exchange calendar and not by the UTC date.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{
    ListType, MapType, NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField,
    SortOrder, Transform, Type, UnboundPartitionSpec,
};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use k2_model::DataType;

use crate::error::{LakeError, Result};

/// A table of the lake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LakeTable {
    Trades,
    Quotes,
    Companies,
}

impl LakeTable {
    pub const ALL: [LakeTable; 3] = [LakeTable::Trades, LakeTable::Quotes, LakeTable::Companies];

    pub fn for_data_type(dt: DataType) -> Self {
        match dt {
            DataType::Trades => LakeTable::Trades,
            DataType::Quotes => LakeTable::Quotes,
            DataType::ReferenceData => LakeTable::Companies,
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            LakeTable::Trades | LakeTable::Quotes => "market_data",
            LakeTable::Companies => "reference_data",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LakeTable::Trades => "trades",
            LakeTable::Quotes => "quotes",
            LakeTable::Companies => "companies",
        }
    }

    /// `namespace.name`, as users write it.
    pub fn qualified(self) -> String {
        format!("{}.{}", self.namespace(), self.name())
    }

    /// Parses `trades`, `quotes`, `companies` or their qualified names.
    pub fn parse(text: &str) -> Option<Self> {
        LakeTable::ALL
            .into_iter()
            .find(|t| text == t.name() || text == t.qualified())
    }

    pub fn ident(self) -> TableIdent {
        TableIdent::new(
            NamespaceIdent::new(self.namespace().to_string()),
            self.name().to_string(),
        )
    }

    pub fn schema(self) -> Schema {
        let fields = match self {
            LakeTable::Trades => trade_fields(),
            LakeTable::Quotes => quote_fields(),
            LakeTable::Companies => company_fields(),
        };
        Schema::builder()
            .with_schema_id(0)
            .with_fields(fields.into_iter().map(Arc::new))
            .build()
            .expect("table schema is valid")
    }

    fn partition_spec(self) -> UnboundPartitionSpec {
        let builder = UnboundPartitionSpec::builder();
        match self {
            LakeTable::Trades | LakeTable::Quotes => builder
                .add_partition_field(TIMESTAMP_ID, "timestamp_day", Transform::Day)
                .expect("valid partition field")
                .build(),
            LakeTable::Companies => builder.build(),
        }
    }

    fn sort_order(self) -> SortOrder {
        let field = |id| SortField {
            source_id: id,
            transform: Transform::Identity,
            direction: SortDirection::Ascending,
            null_order: NullOrder::First,
        };
        let mut b = SortOrder::builder();
        b.with_order_id(1).with_sort_field(field(SYMBOL_ID));
        if self != LakeTable::Companies {
            b.with_sort_field(field(TIMESTAMP_ID));
        }
        b.build_unbound().expect("valid sort order")
    }
}

impl std::fmt::Display for LakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.qualified())
    }
}

/// Field ids shared by the market tables (the writer and the scans rely on them).
pub const SYMBOL_ID: i32 = 3;
pub const TIMESTAMP_ID: i32 = 6;

fn uuid() -> Type {
    Type::Primitive(PrimitiveType::Uuid)
}

fn string() -> Type {
    Type::Primitive(PrimitiveType::String)
}
fn long() -> Type {
    Type::Primitive(PrimitiveType::Long)
}
fn timestamptz() -> Type {
    Type::Primitive(PrimitiveType::Timestamptz)
}
fn decimal() -> Type {
    Type::Primitive(PrimitiveType::Decimal {
        precision: 18,
        scale: 8,
    })
}
fn date() -> Type {
    Type::Primitive(PrimitiveType::Date)
}
fn vendor(id: i32, key_id: i32, value_id: i32) -> NestedField {
    NestedField::optional(
        id,
        "vendor_data",
        Type::Map(MapType::new(
            Arc::new(NestedField::map_key_element(key_id, string())),
            Arc::new(NestedField::map_value_element(value_id, string(), true)),
        )),
    )
}

/// Fields 1–8, shared by the market tables; `native_id` names field 2.
fn market_head(native_id: &str) -> Vec<NestedField> {
    vec![
        NestedField::required(1, "message_id", uuid()),
        NestedField::required(2, native_id, string()),
        NestedField::required(SYMBOL_ID, "symbol", string()),
        NestedField::required(4, "exchange", string()),
        NestedField::required(5, "asset_class", string()),
        NestedField::required(TIMESTAMP_ID, "timestamp", timestamptz()),
        NestedField::required(7, "trade_date", date()),
        NestedField::required(8, "receive_timestamp", timestamptz()),
    ]
}

fn trade_fields() -> Vec<NestedField> {
    let mut fields = market_head("trade_id");
    fields.extend([
        NestedField::required(9, "price", decimal()),
        NestedField::required(10, "quantity", decimal()),
        NestedField::required(11, "currency", string()),
        NestedField::required(12, "side", string()),
        NestedField::required(
            13,
            "trade_conditions",
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                18,
                string(),
                true,
            )))),
        ),
        NestedField::optional(14, "source_sequence", long()),
        NestedField::required(15, "ingestion_timestamp", timestamptz()),
        NestedField::optional(16, "platform_sequence", long()),
        vendor(17, 19, 20),
    ]);
    fields
}

fn quote_fields() -> Vec<NestedField> {
    let mut fields = market_head("quote_id");
    fields.extend([
        NestedField::required(9, "bid_price", decimal()),
        NestedField::required(10, "bid_quantity", decimal()),
        NestedField::required(11, "ask_price", decimal()),
        NestedField::required(12, "ask_quantity", decimal()),
        NestedField::required(13, "currency", string()),
        NestedField::optional(14, "source_sequence", long()),
        NestedField::required(15, "ingestion_timestamp", timestamptz()),
        NestedField::optional(16, "platform_sequence", long()),
        vendor(17, 18, 19),
    ]);
    fields
}

fn company_fields() -> Vec<NestedField> {
    vec![
        NestedField::required(1, "message_id", uuid()),
        NestedField::required(2, "company_id", string()),
        NestedField::required(SYMBOL_ID, "symbol", string()),
        NestedField::required(4, "exchange", string()),
        NestedField::required(5, "asset_class", string()),
        NestedField::required(6, "company_name", string()),
        NestedField::optional(7, "isin", string()),
        NestedField::optional(8, "currency", string()),
        NestedField::optional(9, "listing_date", timestamptz()),
        NestedField::optional(10, "delisting_date", timestamptz()),
        NestedField::required(11, "is_active", Type::Primitive(PrimitiveType::Boolean)),
        NestedField::required(12, "receive_timestamp", timestamptz()),
        NestedField::required(13, "ingestion_timestamp", timestamptz()),
        vendor(14, 15, 16),
    ]
}

/// Creates the namespaces and tables that do not exist yet.
pub async fn ensure_tables(catalog: &dyn Catalog) -> Result<()> {
    for table in LakeTable::ALL {
        let ns = NamespaceIdent::new(table.namespace().to_string());
        if !catalog
            .namespace_exists(&ns)
            .await
            .map_err(|e| LakeError::catalog("listing namespaces", e))?
        {
            // Another writer starting at the same moment may create it first.
            match catalog.create_namespace(&ns, HashMap::new()).await {
                Ok(_) => {}
                Err(e) if e.kind() == iceberg::ErrorKind::NamespaceAlreadyExists => {}
                Err(e) => {
                    return Err(LakeError::catalog(
                        format!("creating namespace {}", table.namespace()),
                        e,
                    ));
                }
            }
        }
        if catalog
            .table_exists(&table.ident())
            .await
            .map_err(|e| LakeError::catalog("listing tables", e))?
        {
            check_schema(catalog, table).await?;
            continue;
        }
        let creation = TableCreation::builder()
            .name(table.name().to_string())
            .schema(table.schema())
            .partition_spec(table.partition_spec())
            .sort_order(table.sort_order())
            .properties([
                ("write.format.default".to_string(), "parquet".to_string()),
                (
                    "write.parquet.compression-codec".to_string(),
                    "zstd".to_string(),
                ),
            ])
            .build();
        match catalog.create_table(&ns, creation).await {
            Ok(_) => tracing::info!(table = %table, "table created"),
            Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => {
                check_schema(catalog, table).await?;
            }
            Err(e) => return Err(LakeError::catalog(format!("creating table {table}"), e)),
        }
    }
    Ok(())
}

/// An existing table must have the schema this version writes.
async fn check_schema(catalog: &dyn Catalog, table: LakeTable) -> Result<()> {
    let existing = catalog
        .load_table(&table.ident())
        .await
        .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
    let have = existing.metadata().current_schema();
    let want = table.schema();
    // K2's columns, then any a newer version of a record's schema added (optional ones).
    let (have_fields, want_fields) = (have.as_struct().fields(), want.as_struct().fields());
    let own = have_fields.len() >= want_fields.len()
        && have_fields[..want_fields.len()] == want_fields[..]
        && have_fields[want_fields.len()..].iter().all(|f| !f.required);
    if !own {
        return Err(LakeError::InvalidArgument(format!(
            "table {table} in this data directory has a schema this version of K2 does \
             not write (it has {}; expected {}); use a new data directory",
            have.as_struct(),
            want.as_struct()
        )));
    }
    Ok(())
}
