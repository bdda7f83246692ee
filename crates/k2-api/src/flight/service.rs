//! The Flight SQL calls K2 answers: statements, prepared statements with bound
//! parameters, and the catalog's metadata (catalogs, schemas, tables, table types, server
//! information). Everything else (updates, ingestion, transactions, Substrait) is refused
//! as unimplemented: K2's lake is written by its writer only.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt};
use k2_lake::query::{Pin as Snapshot, ScalarValue};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::prepared::Statements;
use super::status;
use crate::config::Scope;
use crate::failure::Failure;
use crate::keys::Caller;
use crate::metrics;
use crate::state::ApiState;

/// The catalog K2's tables are in, as SQL names it.
const CATALOG: &str = "k2";

/// What the server says of itself (`GetSqlInfo`).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "K2");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.build().expect("the server's SQL info builds")
});

pub(crate) struct FlightSql {
    state: Arc<ApiState>,
    statements: Statements,
}

type Stream_ = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl FlightSql {
    pub fn new(state: Arc<ApiState>) -> Self {
        FlightSql {
            state,
            statements: Statements::default(),
        }
    }

    /// The caller of a request: a valid API key with the `sql` scope, presented as
    /// `authorization: Bearer <key>`, within its rate.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some(key) = header
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            metrics::auth_failed("missing");
            return Err(Status::unauthenticated(
                "Flight SQL needs an API key: send `authorization: Bearer <key>` (or a handshake with the key as password)",
            ));
        };
        self.check_key(key)
    }

    fn check_key(&self, key: &str) -> Result<Caller, Status> {
        let Some(caller) = self.state.keys.check(key).cloned() else {
            metrics::auth_failed("invalid");
            return Err(Status::unauthenticated("the API key is not valid"));
        };
        if !caller.may(Scope::Sql) {
            return Err(Status::permission_denied(format!(
                "the key '{}' lacks the sql scope Flight SQL needs",
                caller.name
            )));
        }
        let decision = self
            .state
            .limiter
            .check(&caller.name, caller.rate_per_second, caller.burst);
        if !decision.allowed {
            metrics::rate_limited("key");
            return Err(Status::resource_exhausted(format!(
                "the key '{}' is over its rate; retry in {} s",
                caller.name, decision.retry_after_s
            )));
        }
        Ok(caller)
    }

    /// The schema of `sql`'s answer and of its parameters: planned, not run (a statement
    /// that is not read-only is refused here).
    async fn plan(&self, sql: String) -> Result<(SchemaRef, SchemaRef), Status> {
        let prepared = self
            .state
            .query(move |engine| async move {
                engine
                    .prepare(&sql)
                    .await
                    .map_err(|e| Failure::from_lake(e, true))
            })
            .await
            .map_err(status)?;
        let parameters = Schema::new(
            prepared
                .parameters
                .iter()
                .map(|(name, ty)| {
                    Field::new(
                        name.clone(),
                        ty.clone().unwrap_or(arrow::datatypes::DataType::Null),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        Ok((prepared.schema, Arc::new(parameters)))
    }

    /// Runs `sql` with `params` and streams its answer (cut at `query.max_rows` rows,
    /// which the first message's app metadata then says).
    async fn run(
        &self,
        sql: String,
        params: Vec<ScalarValue>,
    ) -> Result<Response<Stream_>, Status> {
        if let Some(refusal) = crate::middleware::refusal(&self.state) {
            metrics::degradation_refusal();
            return Err(status(refusal));
        }
        let text = sql.clone();
        let answer = self
            .state
            .query(move |engine| async move {
                let (answer, _) = engine
                    .sql_with(&text, &Snapshot::Current, params)
                    .await
                    .map_err(|e| Failure::from_lake(e, true))?;
                // An empty answer still has a schema.
                let schema = match answer.batches.first() {
                    Some(b) => b.schema(),
                    None => {
                        engine
                            .prepare(&text)
                            .await
                            .map_err(|e| Failure::from_lake(e, true))?
                            .schema
                    }
                };
                Ok((answer, schema))
            })
            .await
            .map_err(status)?;
        let (answer, schema) = answer;
        let rows: usize = answer.batches.iter().map(RecordBatch::num_rows).sum();
        metrics::flight_rows(rows as u64);
        let mut encoder = FlightDataEncoderBuilder::new().with_schema(schema);
        if let Some(max) = answer.truncated_at {
            tracing::info!(max, "a Flight SQL answer was cut at query.max_rows");
            encoder = encoder.with_metadata(format!("{{\"truncated_at\":{max}}}").into());
        }
        let batches = answer.batches.into_iter().map(Ok::<_, FlightError>);
        let stream = encoder
            .build(futures::stream::iter(batches))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// Every table SQL sees, with its schema: (schema, table, type, columns).
    async fn tables(&self) -> Result<Vec<(String, String, &'static str, SchemaRef)>, Status> {
        let names = self
            .state
            .query(move |engine| async move {
                let answer = engine
                    .sql("SELECT table_schema, table_name, table_type FROM information_schema.tables WHERE table_catalog = 'k2' AND table_schema <> 'information_schema' ORDER BY 1, 2")
                    .await
                    .map_err(|e| Failure::from_lake(e, false))?;
                let mut out = Vec::new();
                for b in &answer.batches {
                    let text = |i: usize| {
                        arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
                            .map(|c| arrow::array::cast::as_string_array(&c).clone())
                            .map_err(|e| Failure::internal(format!("listing the tables: {e}")))
                    };
                    let (schema, table, kind) = (text(0)?, text(1)?, text(2)?);
                    for r in 0..b.num_rows() {
                        out.push((
                            schema.value(r).to_string(),
                            table.value(r).to_string(),
                            if kind.value(r) == "VIEW" { "VIEW" } else { "TABLE" },
                        ));
                    }
                }
                Ok(out)
            })
            .await
            .map_err(status)?;
        let mut out = Vec::with_capacity(names.len());
        for (schema, table, kind) in names {
            let (columns, _) = self
                .plan(format!("SELECT * FROM \"{schema}\".\"{table}\""))
                .await?;
            out.push((schema, table, kind, columns));
        }
        Ok(out)
    }
}

/// A FlightInfo whose one endpoint is `ticket`, describing an answer of `schema`.
fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
        .with_descriptor(descriptor)
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_ordered(true))
}

impl FlightSql {
    /// The FlightInfo of a metadata command: its answer's schema, and the command itself
    /// as the ticket (the framework hands it back to the matching `do_get_…`).
    fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        Ok(Response::new(info(
            schema,
            command.encode_to_vec(),
            request.into_inner(),
        )?))
    }
}

/// One batch as a Flight stream.
fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Response<Stream_> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("encoding a schema: {e}"))
        })?;
    Ok(bytes)
}

/// Times a call and counts it by its outcome.
async fn counted<T>(
    call: &'static str,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = work.await;
    let code = match &result {
        Ok(_) => "ok",
        Err(s) => super::code_label(s.code()),
    };
    metrics::flight_call(call, code, started.elapsed());
    if let Err(s) = &result {
        tracing::info!(call, code, message = s.message(), "Flight SQL call refused");
    }
    result
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// Basic authentication with the API key as the password: the answer carries the key
    /// back as the bearer token of the calls that follow.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        counted("handshake", async {
            let basic = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .ok_or_else(|| {
                    metrics::auth_failed("missing");
                    Status::unauthenticated(
                        "a handshake needs `authorization: Basic` with the API key as password",
                    )
                })?;
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Status::invalid_argument("the Basic credentials are not base64 text")
                })?;
            let key = decoded.split_once(':').map_or(decoded.as_str(), |(_, p)| p);
            self.check_key(key)?;
            let bearer = format!("Bearer {key}");
            let answer = HandshakeResponse {
                protocol_version: 0,
                payload: key.as_bytes().to_vec().into(),
            };
            let mut response: Response<
                Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
            > = Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
            response.metadata_mut().insert(
                "authorization",
                bearer
                    .parse()
                    .map_err(|_| Status::invalid_argument("the key is not header text"))?,
            );
            Ok(response)
        })
        .await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("statement", async {
            self.caller(&request)?;
            let (schema, _) = self.plan(query.query.clone()).await?;
            let ticket = TicketStatementQuery {
                statement_handle: query.query.into_bytes().into(),
            };
            let info = info(
                &schema,
                ticket.as_any().encode_to_vec(),
                request.into_inner(),
            )?;
            Ok(Response::new(info))
        })
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("fetch", async {
            self.caller(&request)?;
            let sql = String::from_utf8(ticket.statement_handle.to_vec())
                .map_err(|_| Status::invalid_argument("the ticket is not one this server gave"))?;
            self.run(sql, Vec::new()).await
        })
        .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        counted("prepare", async {
            let caller = self.caller(&request)?;
            let (schema, parameters) = self.plan(query.query.clone()).await?;
            let handle = self.statements.add(
                query.query,
                schema.clone(),
                parameters.clone(),
                &caller.name,
            );
            Ok(ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle.into(),
                dataset_schema: ipc_schema(&schema)?,
                parameter_schema: ipc_schema(&parameters)?,
            })
        })
        .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        counted("bind", async {
            let caller = self.caller(&request)?;
            let statement = self
                .statements
                .get(&query.prepared_statement_handle, &caller.name)?;
            let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("the parameters do not decode: {e}")))?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows != 1 {
                return Err(Status::invalid_argument(format!(
                    "a query binds one row of parameters, not {rows}"
                )));
            }
            let batch = batches
                .into_iter()
                .find(|b| b.num_rows() == 1)
                .expect("one row");
            let expected = statement.parameters.fields().len();
            if batch.num_columns() != expected {
                return Err(Status::invalid_argument(format!(
                    "the statement has {expected} parameters; {} were bound",
                    batch.num_columns()
                )));
            }
            let values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("a parameter's value: {e}")))?;
            self.statements
                .bind(&query.prepared_statement_handle, &caller.name, values)?;
            Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(query.prepared_statement_handle),
            })
        })
        .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("execute", async {
            let caller = self.caller(&request)?;
            let statement = self
                .statements
                .get(&query.prepared_statement_handle, &caller.name)?;
            let info = info(
                &statement.schema,
                query.as_any().encode_to_vec(),
                request.into_inner(),
            )?;
            Ok(Response::new(info))
        })
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("fetch", async {
            let caller = self.caller(&request)?;
            let statement = self
                .statements
                .get(&query.prepared_statement_handle, &caller.name)?;
            let expected = statement.parameters.fields().len();
            if statement.bound.len() != expected {
                return Err(Status::invalid_argument(format!(
                    "the statement has {expected} parameters and none are bound"
                )));
            }
            self.run(statement.sql, statement.bound).await
        })
        .await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        counted("close", async {
            let caller = self.caller(&request)?;
            self.statements
                .close(&query.prepared_statement_handle, &caller.name)
        })
        .await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("metadata", async {
            let command = query.as_any();
            self.metadata_info(request, &query.into_builder(&SQL_INFO).schema(), command)
        })
        .await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("metadata", async {
            self.caller(&request)?;
            let builder = query.into_builder(&SQL_INFO);
            Ok(one_batch(builder.schema(), builder.build()))
        })
        .await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("metadata", async {
            let command = query.as_any();
            self.metadata_info(request, &query.into_builder().schema(), command)
        })
        .await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("metadata", async {
            self.caller(&request)?;
            let mut builder = query.into_builder();
            builder.append(CATALOG);
            Ok(one_batch(builder.schema(), builder.build()))
        })
        .await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("metadata", async {
            let command = query.as_any();
            self.metadata_info(request, &query.into_builder().schema(), command)
        })
        .await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("metadata", async {
            self.caller(&request)?;
            let mut schemas: Vec<String> =
                self.tables().await?.into_iter().map(|(s, ..)| s).collect();
            schemas.dedup();
            let mut builder = query.into_builder();
            for schema in schemas {
                builder.append(CATALOG, schema);
            }
            Ok(one_batch(builder.schema(), builder.build()))
        })
        .await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("metadata", async {
            let command = query.as_any();
            self.metadata_info(request, &query.into_builder().schema(), command)
        })
        .await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("metadata", async {
            self.caller(&request)?;
            let tables = self.tables().await?;
            let mut builder = query.into_builder();
            for (schema, table, kind, columns) in &tables {
                builder
                    .append(CATALOG, schema, table, kind, columns)
                    .map_err(|e| Status::internal(format!("listing the tables: {e}")))?;
            }
            Ok(one_batch(builder.schema(), builder.build()))
        })
        .await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        counted("metadata", async {
            let command = query.as_any();
            self.metadata_info(request, &query.into_builder().schema(), command)
        })
        .await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        counted("metadata", async {
            self.caller(&request)?;
            let mut builder = query.into_builder();
            builder.append("TABLE");
            builder.append("VIEW");
            Ok(one_batch(builder.schema(), builder.build()))
        })
        .await
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "K2 does not answer {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
