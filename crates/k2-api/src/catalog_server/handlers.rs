//! The endpoints of the Iceberg REST Catalog API K2 serves, answering the spec's
//! documents (`iceberg-catalog-rest`'s types, the same a client parses).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{
    CommitTableRequest, CommitTableResponse, CreateNamespaceRequest, CreateTableRequest,
    ListNamespaceResponse, ListTablesResponse, LoadTableResult, NamespaceResponse,
    RenameTableRequest,
};
use serde::Deserialize;
use serde_json::json;

use super::errors::Refusal;
use super::{CatalogState, count_commit};

type Answer = Result<Response, Refusal>;

/// A namespace as a path carries it: its levels joined by the unit separator (0x1F).
fn namespace(text: &str) -> Result<NamespaceIdent, Refusal> {
    NamespaceIdent::from_vec(text.split('\u{1f}').map(str::to_string).collect())
        .map_err(|e| Refusal::bad_request(format!("namespace '{text}': {}", e.message())))
}

fn table_ident(ns: &str, table: &str) -> Result<TableIdent, Refusal> {
    Ok(TableIdent::new(namespace(ns)?, table.to_string()))
}

/// `GET /v1/config`: nothing for clients to override; one warehouse, no path prefix.
pub async fn config() -> Json<serde_json::Value> {
    Json(json!({"defaults": {}, "overrides": {}}))
}

#[derive(Deserialize)]
pub struct Parent {
    parent: Option<String>,
}

pub async fn list_namespaces(
    State(s): State<Arc<CatalogState>>,
    Query(q): Query<Parent>,
) -> Answer {
    let parent = q.parent.as_deref().map(namespace).transpose()?;
    let namespaces = s
        .backend
        .catalog
        .list_namespaces(parent.as_ref())
        .await
        .map_err(|e| Refusal::from_iceberg("listing namespaces", &e))?;
    Ok(Json(ListNamespaceResponse {
        namespaces,
        next_page_token: None,
    })
    .into_response())
}

pub async fn create_namespace(
    State(s): State<Arc<CatalogState>>,
    Json(request): Json<CreateNamespaceRequest>,
) -> Answer {
    let created = s
        .backend
        .catalog
        .create_namespace(&request.namespace, request.properties)
        .await
        .map_err(|e| Refusal::from_iceberg("creating the namespace", &e))?;
    Ok(Json(NamespaceResponse::from(&created)).into_response())
}

pub async fn load_namespace(State(s): State<Arc<CatalogState>>, Path(ns): Path<String>) -> Answer {
    let found = s
        .backend
        .catalog
        .get_namespace(&namespace(&ns)?)
        .await
        .map_err(|e| Refusal::from_iceberg("loading the namespace", &e))?;
    Ok(Json(NamespaceResponse::from(&found)).into_response())
}

pub async fn namespace_exists(
    State(s): State<Arc<CatalogState>>,
    Path(ns): Path<String>,
) -> Answer {
    let exists = s
        .backend
        .catalog
        .namespace_exists(&namespace(&ns)?)
        .await
        .map_err(|e| Refusal::from_iceberg("looking up the namespace", &e))?;
    Ok(presence(exists))
}

fn presence(exists: bool) -> Response {
    if exists {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

pub async fn drop_namespace(State(s): State<Arc<CatalogState>>, Path(ns): Path<String>) -> Answer {
    s.backend
        .catalog
        .drop_namespace(&namespace(&ns)?)
        .await
        .map_err(|e| Refusal::from_iceberg("dropping the namespace", &e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_tables(State(s): State<Arc<CatalogState>>, Path(ns): Path<String>) -> Answer {
    let identifiers = s
        .backend
        .catalog
        .list_tables(&namespace(&ns)?)
        .await
        .map_err(|e| Refusal::from_iceberg("listing tables", &e))?;
    Ok(Json(ListTablesResponse {
        identifiers,
        next_page_token: None,
    })
    .into_response())
}

/// The load answer: the metadata, its location, and how to reach the files.
fn loaded(s: &CatalogState, table: &Table) -> Response {
    Json(LoadTableResult {
        metadata_location: table.metadata_location().map(str::to_string),
        metadata: table.metadata().clone(),
        config: s.backend.table_config.clone(),
        storage_credentials: None,
    })
    .into_response()
}

pub async fn load_table(
    State(s): State<Arc<CatalogState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Answer {
    let table = s
        .backend
        .catalog
        .load_table(&table_ident(&ns, &name)?)
        .await
        .map_err(|e| Refusal::from_iceberg("loading the table", &e))?;
    Ok(loaded(&s, &table))
}

pub async fn table_exists(
    State(s): State<Arc<CatalogState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Answer {
    let exists = s
        .backend
        .catalog
        .table_exists(&table_ident(&ns, &name)?)
        .await
        .map_err(|e| Refusal::from_iceberg("looking up the table", &e))?;
    Ok(presence(exists))
}

pub async fn create_table(
    State(s): State<Arc<CatalogState>>,
    Path(ns): Path<String>,
    Json(request): Json<CreateTableRequest>,
) -> Answer {
    if request.stage_create == Some(true) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedOperationException",
            "staged table creation is not supported: create the table, then commit to it",
        ));
    }
    let creation = TableCreation::builder()
        .name(request.name)
        .location_opt(request.location)
        .schema(request.schema)
        .partition_spec_opt(request.partition_spec)
        .sort_order_opt(request.write_order)
        .properties(request.properties)
        .build();
    let table = s
        .backend
        .catalog
        .create_table(&namespace(&ns)?, creation)
        .await
        .map_err(|e| Refusal::from_iceberg("creating the table", &e))?;
    Ok(loaded(&s, &table))
}

/// `POST …/tables/{table}`: the requirements checked against the current metadata and the
/// updates applied, or 409 and nothing changed.
pub async fn commit_table(
    State(s): State<Arc<CatalogState>>,
    Path((ns, name)): Path<(String, String)>,
    Json(request): Json<CommitTableRequest>,
) -> Answer {
    let ident = table_ident(&ns, &name)?;
    if let Some(named) = &request.identifier
        && named != &ident
    {
        return Err(Refusal::bad_request(format!(
            "the request names {named} but was sent to {ident}"
        )));
    }
    let committed = s
        .backend
        .committer
        .commit(&ident, request.requirements, request.updates)
        .await;
    let table = match committed {
        Ok(table) => {
            count_commit("committed");
            table
        }
        Err(e) => {
            let refusal = Refusal::from_commit(&e);
            count_commit(if refusal_is_conflict(&e) {
                "conflict"
            } else {
                "failed"
            });
            return Err(refusal);
        }
    };
    let metadata_location = table
        .metadata_location()
        .map(str::to_string)
        .unwrap_or_default();
    tracing::info!(table = %ident, metadata = %metadata_location, "catalog: commit");
    Ok(Json(CommitTableResponse {
        metadata_location,
        metadata: table.metadata().clone(),
    })
    .into_response())
}

fn refusal_is_conflict(e: &k2_lake::LakeError) -> bool {
    matches!(e, k2_lake::LakeError::Conflict { .. })
}

#[derive(Deserialize)]
pub struct Purge {
    #[serde(rename = "purgeRequested")]
    purge_requested: Option<bool>,
}

pub async fn drop_table(
    State(s): State<Arc<CatalogState>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<Purge>,
) -> Answer {
    if q.purge_requested == Some(true) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "UnsupportedOperationException",
            "purging files on drop is not supported: drop the table, then sweep orphans",
        ));
    }
    s.backend
        .catalog
        .drop_table(&table_ident(&ns, &name)?)
        .await
        .map_err(|e| Refusal::from_iceberg("dropping the table", &e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn rename_table(
    State(s): State<Arc<CatalogState>>,
    Json(request): Json<RenameTableRequest>,
) -> Answer {
    s.backend
        .catalog
        .rename_table(&request.source, &request.destination)
        .await
        .map_err(|e| Refusal::from_iceberg("renaming the table", &e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
