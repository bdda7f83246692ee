//! K2's schema registry over HTTP: the Confluent Schema Registry REST API on K2's registry
//! tables, so stock Kafka clients (Java, librdkafka, confluent-kafka for Python) resolve
//! the schema ids in K2's topics. Only Avro schemas; nothing can be deleted, because the
//! ids describe bytes already in the log.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k2_log::{Compatibility, LocalSchemas, LogError, SubjectVersion};
use serde::Deserialize;
use serde_json::{Value, json};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes, to serve on their own or under another server.
pub fn router(schemas: LocalSchemas) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatible_with_subject),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatible_with_version),
        )
        .route("/config", get(global_level).put(set_global_level))
        .route(
            "/config/{subject}",
            get(subject_level).put(set_subject_level),
        )
        .with_state(schemas)
}

/// Serves the registry on `listen` until `shutdown` completes.
pub async fn serve(
    schemas: LocalSchemas,
    listen: &str,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {listen} for the schema registry: {e}"))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "schema registry listening");
    eprintln!("schema registry on http://{addr}");
    k2_api::serve_until_stopped(listener, router(schemas).into_make_service(), stop).await?;
    Ok(())
}

/// An error in the registry's own shape: `{"error_code": …, "message": …}`.
struct Failure {
    status: StatusCode,
    code: u32,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }
    fn subject_not_found(subject: &str) -> Failure {
        Failure::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }
    fn version_not_found(version: &str) -> Failure {
        Failure::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        )
    }
    fn schema_not_found(what: impl std::fmt::Display) -> Failure {
        Failure::new(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {what} not found."),
        )
    }
    fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }
}

impl From<LogError> for Failure {
    fn from(e: LogError) -> Failure {
        match e {
            LogError::InvalidSchema(m) => Failure::invalid(m),
            e @ LogError::IncompatibleSchema { .. } => {
                Failure::new(StatusCode::CONFLICT, 409, e.to_string())
            }
            e => {
                tracing::error!(error = %e, "schema registry storage failed");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, e.to_string())
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        reply(
            self.status,
            json!({"error_code": self.code, "message": self.message}),
        )
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

type Answer = Result<Response, Failure>;

/// Runs a registry read or write off the async threads.
async fn run<T: Send + 'static>(
    schemas: LocalSchemas,
    f: impl FnOnce(&LocalSchemas) -> Result<T, LogError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(move || f(&schemas))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, e.to_string()))?
        .map_err(Failure::from)
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

/// The request body: a schema, Avro only (the default type).
fn schema_request(body: &Bytes) -> Result<String, Failure> {
    let req: SchemaRequest = serde_json::from_slice(body)
        .map_err(|e| Failure::invalid(format!("the body must be {{\"schema\": \"…\"}}: {e}")))?;
    match req.schema_type.as_deref() {
        None | Some("AVRO") => Ok(req.schema),
        Some(other) => Err(Failure::invalid(format!(
            "schemaType {other} is not supported: K2's registry holds Avro schemas"
        ))),
    }
}

fn version_json(v: &SubjectVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema})
}

/// `latest`, `-1` or a version number of the subject.
fn pick(
    history: Vec<SubjectVersion>,
    subject: &str,
    version: &str,
) -> Result<SubjectVersion, Failure> {
    if history.is_empty() {
        return Err(Failure::subject_not_found(subject));
    }
    let wanted = match version {
        "latest" | "-1" => return Ok(history.into_iter().last().expect("not empty")),
        v => v.parse::<u32>().map_err(|_| {
            Failure::invalid(format!(
                "version must be a positive number, 'latest' or -1, not '{v}'"
            ))
        })?,
    };
    history
        .into_iter()
        .find(|v| v.version == wanted)
        .ok_or_else(|| Failure::version_not_found(version))
}

async fn schema_by_id(State(s): State<LocalSchemas>, Path(id): Path<u32>) -> Answer {
    match run(s, move |s| s.schema_blocking(id)).await? {
        Some(schema) => Ok(reply(StatusCode::OK, json!({ "schema": schema }))),
        None => Err(Failure::schema_not_found(id)),
    }
}

async fn raw_schema_by_id(State(s): State<LocalSchemas>, Path(id): Path<u32>) -> Answer {
    match run(s, move |s| s.schema_blocking(id)).await? {
        Some(schema) => Ok(reply(
            StatusCode::OK,
            serde_json::from_str(&schema).unwrap_or(Value::String(schema)),
        )),
        None => Err(Failure::schema_not_found(id)),
    }
}

async fn versions_of_id(State(s): State<LocalSchemas>, Path(id): Path<u32>) -> Answer {
    let found = run(s, move |s| {
        if s.schema_blocking(id)?.is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for subject in s.subjects_blocking()? {
            for v in s.versions_blocking(&subject)? {
                if v.id == id {
                    out.push(json!({"subject": v.subject, "version": v.version}));
                }
            }
        }
        Ok(Some(out))
    })
    .await?;
    match found {
        Some(list) => Ok(reply(StatusCode::OK, Value::Array(list))),
        None => Err(Failure::schema_not_found(id)),
    }
}

async fn subjects(State(s): State<LocalSchemas>) -> Answer {
    let list = run(s, |s| s.subjects_blocking()).await?;
    Ok(reply(StatusCode::OK, json!(list)))
}

async fn versions(State(s): State<LocalSchemas>, Path(subject): Path<String>) -> Answer {
    let sub = subject.clone();
    let history = run(s, move |s| s.versions_blocking(&sub)).await?;
    if history.is_empty() {
        return Err(Failure::subject_not_found(&subject));
    }
    let numbers: Vec<u32> = history.iter().map(|v| v.version).collect();
    Ok(reply(StatusCode::OK, json!(numbers)))
}

/// One version of a subject, by number, `latest` or -1.
async fn subject_version(
    s: LocalSchemas,
    subject: String,
    version: &str,
) -> Result<SubjectVersion, Failure> {
    let sub = subject.clone();
    let history = run(s, move |s| s.versions_blocking(&sub)).await?;
    pick(history, &subject, version)
}

async fn version(
    State(s): State<LocalSchemas>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let v = subject_version(s, subject, &version).await?;
    Ok(reply(StatusCode::OK, version_json(&v)))
}

async fn version_schema(
    State(s): State<LocalSchemas>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let v = subject_version(s, subject, &version).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&v.schema).unwrap_or(Value::String(v.schema)),
    ))
}

async fn register(
    State(s): State<LocalSchemas>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    let schema = schema_request(&body)?;
    let registered = run(s, move |s| s.register_blocking(&subject, &schema)).await?;
    Ok(reply(StatusCode::OK, json!({ "id": registered.id })))
}

/// Is this schema registered under the subject? (compared in Avro's canonical form)
async fn lookup(State(s): State<LocalSchemas>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let schema = schema_request(&body)?;
    let wanted = k2_log::registry::canonical(&schema).map_err(Failure::from)?;
    let sub = subject.clone();
    let history = run(s, move |s| s.versions_blocking(&sub)).await?;
    if history.is_empty() {
        return Err(Failure::subject_not_found(&subject));
    }
    history
        .iter()
        .find(|v| k2_log::registry::canonical(&v.schema).ok().as_deref() == Some(&wanted))
        .map(|v| reply(StatusCode::OK, version_json(v)))
        .ok_or_else(|| Failure::schema_not_found("under this subject"))
}

async fn compatible_with_subject(
    State(s): State<LocalSchemas>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    compatibility(s, subject, None, body).await
}

async fn compatible_with_version(
    State(s): State<LocalSchemas>,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    compatibility(s, subject, Some(version), body).await
}

/// Would the schema be accepted: against every version the subject's level asks for, or
/// against one version.
async fn compatibility(
    s: LocalSchemas,
    subject: String,
    version: Option<String>,
    body: Bytes,
) -> Answer {
    let schema = schema_request(&body)?;
    let sub = subject.clone();
    let (history, level) = run(s, move |s| {
        Ok((
            s.versions_blocking(&sub)?,
            s.compatibility_blocking(Some(&sub))?,
        ))
    })
    .await?;
    let against: Vec<String> = match &version {
        None => history.into_iter().map(|v| v.schema).collect(),
        Some(v) => vec![pick(history, &subject, v)?.schema],
    };
    let verdict = level.check_text(&against, &schema)?;
    Ok(reply(
        StatusCode::OK,
        match verdict {
            Ok(()) => json!({"is_compatible": true}),
            Err(why) => json!({"is_compatible": false, "messages": [why]}),
        },
    ))
}

#[derive(Deserialize)]
struct LevelRequest {
    compatibility: String,
}

async fn global_level(State(s): State<LocalSchemas>) -> Answer {
    let level = run(s, |s| s.compatibility_blocking(None)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": level.as_str()}),
    ))
}

async fn subject_level(State(s): State<LocalSchemas>, Path(subject): Path<String>) -> Answer {
    let level = run(s, move |s| s.compatibility_blocking(Some(&subject))).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibilityLevel": level.as_str()}),
    ))
}

async fn set_level(s: LocalSchemas, subject: Option<String>, body: Bytes) -> Answer {
    let req: LevelRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure::invalid(format!(
            "the body must be {{\"compatibility\": \"…\"}}: {e}"
        ))
    })?;
    let level = Compatibility::parse(&req.compatibility).ok_or_else(|| {
        Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("Invalid compatibility level {}", req.compatibility),
        )
    })?;
    run(s, move |s| {
        s.set_compatibility_blocking(subject.as_deref(), level)
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        json!({"compatibility": level.as_str()}),
    ))
}

async fn set_global_level(State(s): State<LocalSchemas>, body: Bytes) -> Answer {
    set_level(s, None, body).await
}

async fn set_subject_level(
    State(s): State<LocalSchemas>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    set_level(s, Some(subject), body).await
}
