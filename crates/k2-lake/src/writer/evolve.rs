//! Schema evolution at write time: a batch whose records came with fields K2's schema
//! lacks (a newer, compatible version of the record's schema) first adds those fields to
//! the table as optional columns, in one metadata commit. Files written before read them
//! as null; a column another writer added is simply used.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use iceberg::Catalog;
use iceberg::spec::{PrimitiveType, Type};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use k2_log::ExtraValue;

use super::state::load_table;
use crate::columns::Rows;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// The column type of a value (None for a null: its type is not known from it).
fn column_type(v: &ExtraValue) -> Option<PrimitiveType> {
    match v {
        ExtraValue::Null => None,
        ExtraValue::Bool(_) => Some(PrimitiveType::Boolean),
        ExtraValue::Long(_) => Some(PrimitiveType::Long),
        ExtraValue::Double(_) => Some(PrimitiveType::Double),
        ExtraValue::Text(_) => Some(PrimitiveType::String),
    }
}

/// The added fields `rows` carry that `table` has no column for, with their types (a field
/// seen only as null waits for a value to give it a type).
fn missing_columns(table: &Table, rows: &Rows) -> Vec<(String, PrimitiveType)> {
    let schema = table.metadata().current_schema();
    let mut missing: Vec<(String, PrimitiveType)> = Vec::new();
    for row in rows.iter().filter(|r| !r.extras.is_empty()) {
        for (name, value) in &row.extras {
            if schema.field_by_name(name).is_some() || missing.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(ty) = column_type(value) {
                missing.push((name.clone(), ty));
            }
        }
    }
    missing
}

/// `table` with a column for every added field `rows` carry, and the Arrow schema of its
/// current schema.
pub(super) async fn with_added_columns(
    catalog: &dyn Catalog,
    t: LakeTable,
    table: &Table,
    arrow_schema: &SchemaRef,
    rows: &Rows,
) -> Result<(Table, SchemaRef)> {
    let mut table = table.clone();
    // Another writer may add the same columns meanwhile: the commit requires the schema it
    // saw, and on a refusal the table is loaded again and what is still missing added.
    for attempt in 1.. {
        let missing = missing_columns(&table, rows);
        if missing.is_empty() {
            break;
        }
        let tx = Transaction::new(&table);
        let mut action = tx.update_schema();
        for (name, ty) in &missing {
            action = action.add_column(AddColumn::optional(name, Type::Primitive(ty.clone())));
        }
        let added = async {
            let tx = action.apply(tx)?;
            tx.commit(catalog).await
        }
        .await;
        match added {
            Ok(evolved) => {
                table = evolved;
                let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
                tracing::info!(table = %t, columns = ?names, schema = table.metadata().current_schema_id(), "a newer record schema added columns");
                crate::metrics::columns_added(t.name(), missing.len());
            }
            Err(e) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts && attempt < 5 => {
                table = load_table(catalog, t).await?;
            }
            Err(e) => return Err(LakeError::catalog(format!("adding columns to {t}"), e)),
        }
    }
    let fields = table.metadata().current_schema().as_struct().fields().len();
    let arrow_schema = if arrow_schema.fields().len() == fields {
        arrow_schema.clone()
    } else {
        Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| LakeError::catalog(format!("the Arrow schema of {t}"), e))?,
        )
    };
    Ok((table, arrow_schema))
}
