//! The OpenAPI document: the operations as the routes declare them (each route registered
//! once, for the router and the document together), completed with what the server really
//! enforces — the grammars of [`crate::params`], the limits of this server's
//! configuration, the columns of the tables — and every status each operation can answer.
//! A client generated from it works unmodified; the conformance suite holds the server to
//! it.

use serde_json::{Map, Value, json};

use crate::config::ApiConfig;
use crate::handlers::analytics::{MAX_BATCH, METRICS};
use crate::handlers::catalogue::{MAX_SNAPSHOTS, table_names};
use crate::handlers::dead_letters::MAX_LETTERS;
use crate::params;
use k2_lake::LakeTable;
use k2_lake::query::{BarInterval, columns};

const FORMATS: [&str; 4] = ["json", "csv", "parquet", "arrow"];

/// The document served at `/openapi.json`.
pub fn document(doc: utoipa::openapi::OpenApi, config: &ApiConfig) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    doc["info"] = json!({
        "title": "K2 market data API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Trades, quotes, bars and aggregations from K2's Iceberg lake. Every \
            /v1 route needs an API key (X-API-Key, or Authorization: Bearer). Prices and \
            quantities are exact decimal text in JSON and CSV, decimal128(18,8) in Parquet \
            and Arrow. Replays also stream over a WebSocket at /v1/replay/ws, with the \
            parameters and rows of /v1/replay/stream.",
    });
    let components = doc["components"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    doc["components"] = Value::Object(components);
    doc["components"]["securitySchemes"] = json!({
        "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    });
    bodies(&mut doc["components"]["schemas"], config);
    // A page without rows is a page of trades and of quotes alike: either shape, not
    // exactly one.
    let page = &mut doc["components"]["schemas"]["MarketPage"];
    if let Some(shapes) = page.as_object_mut().and_then(|o| o.remove("oneOf")) {
        page["anyOf"] = shapes;
    }
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (method, op) in item.as_object_mut().expect("a path item").iter_mut() {
            operation(path, method, op, config);
        }
    }
    doc
}

/// The schema of an instant: RFC 3339, or a trading day.
fn instant() -> Value {
    json!({
        "type": "string",
        "pattern": params::INSTANT,
        "anyOf": [{"format": "date-time"}, {"format": "date"}],
    })
}

/// The schema of a price or quantity bound.
fn bound() -> Value {
    json!({"oneOf": [
        {"type": "string", "pattern": params::DECIMAL},
        {"type": "number", "minimum": 0, "exclusiveMaximum": 10_000_000_000u64},
    ]})
}

/// An optional member of a body: absent, null, or as `schema` says.
fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn string_enum<S: AsRef<str>>(values: &[S]) -> Value {
    json!({"type": "string", "enum": values.iter().map(AsRef::as_ref).collect::<Vec<_>>()})
}

fn intervals() -> Vec<&'static str> {
    BarInterval::ALL.iter().map(|i| i.as_str()).collect()
}

/// The constraints of the request bodies.
fn bodies(schemas: &mut Value, config: &ApiConfig) {
    let market = |table: LakeTable, schema: &mut Value| {
        let p = &mut schema["properties"];
        p["symbols"] = json!({"type": "array", "maxItems": 100, "items": {"type": "string", "pattern": params::SYMBOL}});
        p["exchanges"] = json!({"type": "array", "maxItems": 20, "items": {"type": "string", "pattern": params::EXCHANGE}});
        p["start_time"] = nullable(instant());
        p["end_time"] = nullable(instant());
        p["fields"] = json!({"type": "array", "items": string_enum(&columns(table))});
        p["limit"] =
            nullable(json!({"type": "integer", "minimum": 1, "maximum": config.max_query_limit}));
        p["cursor"] = nullable(json!({"type": "string", "pattern": params::CURSOR}));
        p["format"] = nullable(string_enum(&FORMATS));
        p["as_of"] = nullable(instant());
        p["snapshot"] = nullable(json!({"type": "string", "pattern": params::SNAPSHOT}));
        if table == LakeTable::Trades {
            for b in ["min_price", "max_price", "min_quantity", "max_quantity"] {
                p[b] = nullable(bound());
            }
        }
    };
    market(LakeTable::Trades, &mut schemas["TradeQuery"]);
    market(LakeTable::Quotes, &mut schemas["QuoteQuery"]);
    // A body naming its table: a trades query (`data_type` optional) or a quotes query
    // (`data_type` = `quotes`).
    let tagged = |base: &Value, tag: &str, required: bool| {
        let mut s = base.clone();
        s["properties"]["data_type"] = string_enum(&[tag]);
        if required {
            let req = s["required"].as_array().cloned().unwrap_or_default();
            let mut req: Vec<Value> = req;
            req.push(json!("data_type"));
            s["required"] = Value::Array(req);
        }
        s
    };
    schemas["TradesRequest"] = tagged(&schemas["TradeQuery"], "trades", false);
    schemas["QuotesRequest"] = tagged(&schemas["QuoteQuery"], "quotes", true);
    schemas["MarketRequest"] = json!({"oneOf": [
        {"$ref": "#/components/schemas/TradesRequest"},
        {"$ref": "#/components/schemas/QuotesRequest"},
    ]});
    let agg = &mut schemas["AggregationQuery"]["properties"];
    agg["symbols"] = json!({"type": "array", "minItems": 1, "maxItems": 50,
        "items": {"type": "string", "pattern": params::SYMBOL}});
    agg["metrics"] = json!({"type": "array", "minItems": 1, "items": string_enum(&METRICS)});
    agg["interval"] = string_enum(&intervals());
    agg["start_time"] = instant();
    agg["end_time"] = instant();
    agg["exchange"] = nullable(json!({"type": "string", "pattern": params::EXCHANGE}));
    agg["format"] = nullable(string_enum(&FORMATS));
    schemas["BarBatch"]["properties"]["requests"]["minItems"] = json!(1);
    schemas["BarBatch"]["properties"]["requests"]["maxItems"] = json!(MAX_BATCH);
    let sql = &mut schemas["SqlQuery"]["properties"];
    sql["sql"] = json!({"type": "string", "pattern": params::SQL,
        "examples": ["SELECT symbol, count(*) FROM trades GROUP BY symbol"]});
    sql["format"] = nullable(string_enum(&FORMATS));
}

/// The schema of a query or path parameter of `path`, by its name.
fn parameter(path: &str, name: &str, config: &ApiConfig) -> Option<Value> {
    Some(match name {
        "symbol" => json!({"type": "string", "pattern": params::SYMBOL}),
        "exchange" => json!({"type": "string", "pattern": params::EXCHANGE}),
        "symbols" => json!({"type": "string", "pattern": params::SYMBOL_LIST}),
        "exchanges" => json!({"type": "string", "pattern": params::EXCHANGE_LIST}),
        "start_time" | "end_time" | "as_of" => instant(),
        "snapshot" => json!({"type": "string", "pattern": params::SNAPSHOT}),
        "date" | "start_date" | "end_date" => {
            json!({"type": "string", "pattern": params::DATE, "format": "date"})
        }
        "cursor" => json!({"type": "string", "pattern": params::CURSOR}),
        "format" => string_enum(&FORMATS),
        "data_type" => string_enum(&["trades", "quotes"]),
        "speed" => json!({"type": "string", "pattern": params::SPEED}),
        "fields" => json!({"type": "string",
            "pattern": params::column_list_pattern(&params::market_columns())}),
        "snapshot_id" => json!({"type": "integer", "format": "int64"}),
        "table" if path.starts_with("/v1/quality/") => string_enum(&["trades", "quotes"]),
        "table" => string_enum(&table_names()),
        "status" => string_enum(&["open", "filled", "lost"]),
        "kind" => json!({"type": "string", "pattern": params::LETTER_KIND}),
        "id" if path.starts_with("/v1/dead-letters/") => {
            json!({"type": "integer", "format": "int64", "minimum": 0})
        }
        "timeframe" => string_enum(&intervals()),
        "limit" => {
            let max = match path {
                "/v1/snapshots" => MAX_SNAPSHOTS,
                "/v1/dead-letters" => MAX_LETTERS,
                _ => config.max_limit,
            };
            json!({"type": "integer", "minimum": 1, "maximum": max})
        }
        _ => return None,
    })
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {"x-request-id": request_id_header()},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    })
}

fn request_id_header() -> Value {
    json!({"description": "The request's id (the client's, when sane), also in the answer's meta",
        "required": true, "schema": {"type": "string"}})
}

/// One operation completed: parameter constraints, and every status it can answer.
fn operation(path: &str, method: &str, op: &mut Value, config: &ApiConfig) {
    let v1 = path.starts_with("/v1/");
    let mut has_input = method == "post";
    let mut formats = false;
    let mut cursor = false;
    let mut travels = false;
    if let Some(list) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        // Answers over the live tail cannot travel in time (the server refuses both).
        if path.ends_with("/recent") {
            list.retain(|p| !matches!(p["name"].as_str(), Some("as_of" | "snapshot")));
        }
        for p in list.iter_mut() {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            has_input = true;
            formats |= name == "format";
            cursor |= name == "cursor";
            travels |= name == "snapshot";
            if let Some(schema) = parameter(path, &name, config) {
                p["schema"] = schema;
            }
        }
    }
    if method == "post" {
        formats |= !path.starts_with("/v1/ohlcv/batch");
        cursor |= path.ends_with("/query") || path == "/v1/replay";
    }
    let responses = op["responses"].as_object_mut().expect("responses");
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error(description));
    };
    add(
        "429",
        "Over the rate limit of the key or client address; see Retry-After",
    );
    add("500", "The server failed; the server log has the details");
    if v1 {
        add(
            "400",
            "The query string or the body cannot be read (unknown parameters, wrong types, malformed JSON)",
        );
        add("401", "No API key");
        add("403", "The API key is not valid, or lacks the scope");
        add(
            "503",
            "Too many queries are running and waiting, or a dependency is unavailable; see Retry-After",
        );
        add("504", "The query ran out of time");
        if has_input {
            add(
                "422",
                "A value is outside its grammar; `error.field` names it",
            );
        }
        if formats {
            add("406", "The Accept header names no format served here");
        }
        if cursor {
            add(
                "409",
                "The cursor belongs to another query or snapshot (the same filters are needed to continue)",
            );
        }
        if path.starts_with("/v1/replay") && method == "get" {
            add(
                "503",
                "As many replays as the server runs at once are running",
            );
        }
        if path.ends_with("/query") {
            add("404", "The table has no such snapshot");
        }
        if travels {
            add(
                "404",
                "No such snapshot or tag, no snapshot was current at `as_of`, or the two name different snapshots",
            );
        }
        if path == "/v1/replay/stream" {
            add("404", "The table has no such snapshot");
        }
        if path == "/v1/replay" && method == "post" {
            add(
                "404",
                "No such snapshot or tag, no snapshot was current at `as_of`, or the two name different snapshots",
            );
        }
    }
    if method == "post" {
        add(
            "413",
            "The body is larger than the server accepts (api.body_limit_bytes)",
        );
        add("415", "The body is not sent as application/json");
    }
    for (status, response) in responses.iter_mut() {
        let headers = response["headers"]
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_else(Map::new);
        response["headers"] = Value::Object(headers);
        response["headers"]["x-request-id"] = request_id_header();
        if status == "429" || status == "503" {
            response["headers"]["retry-after"] = json!({
                "description": "Seconds to wait before retrying",
                "schema": {"type": "integer"},
            });
        }
    }
    if v1 {
        op["security"] = json!([{"api_key": []}, {"bearer": []}]);
    }
    // An operation with a `format` answers in each of them; JSON is the documented shape.
    let ok_content = op
        .pointer_mut("/responses/200/content")
        .and_then(Value::as_object_mut);
    if formats && let Some(content) = ok_content {
        for (media, schema) in [
            ("text/csv", json!({"type": "string"})),
            (
                "application/vnd.apache.parquet",
                json!({"type": "string", "format": "binary"}),
            ),
            (
                "application/vnd.apache.arrow.stream",
                json!({"type": "string", "format": "binary"}),
            ),
        ] {
            content.insert(media.into(), json!({"schema": schema}));
        }
    }
    // Bodies that name their table (read by `market_request`).
    if method == "post"
        && (path.ends_with("/query") && path.starts_with("/v1/snapshots/") || path == "/v1/replay")
    {
        let (description, required) = if path == "/v1/replay" {
            (
                "A trades query, or a quotes query with `data_type` = `quotes`; `start_time` and `end_time` are required",
                true,
            )
        } else {
            (
                "A trades query, or a quotes query with `data_type` = `quotes`",
                false,
            )
        };
        let schema = if required {
            json!({"allOf": [
                {"$ref": "#/components/schemas/MarketRequest"},
                {"type": "object", "required": ["start_time", "end_time"],
                 "properties": {"start_time": instant(), "end_time": instant()}},
            ]})
        } else {
            json!({"$ref": "#/components/schemas/MarketRequest"})
        };
        op["requestBody"] = json!({
            "description": description,
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
}
