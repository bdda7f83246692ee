//! The OpenAPI document, generated from the handlers' annotations and the request types,
//! and `/docs`: a self-contained page that renders it (no script from elsewhere).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::doc::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "K2 market data API",
        description = "Trades, quotes, bars and aggregations from K2's Iceberg lake. Every \
            /v1 route needs an API key (X-API-Key or Authorization: Bearer). Prices and \
            quantities are exact decimal strings in JSON and CSV, decimal128(18,8) in Parquet \
            and Arrow."
    ),
    paths(
        trades, quotes, trades_recent, quotes_recent, trades_query, quotes_query, summary, ohlcv, ohlcv_batch, aggregations,
        symbols, stats, snapshots, snapshot_query, replay, replay_stream, replay_ws, sql, health, ready, metrics_text
    ),
    components(schemas(
        MarketQuery, BarRequest, BarBatch, AggregationQuery, SqlQuery, DataEnvelope, ErrorEnvelope
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

pub async fn openapi_json() -> Response {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    )
        .into_response()
}

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>K2 API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} .op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}
.m{display:inline-block;min-width:3.5rem;font-weight:bold;color:#fff;border-radius:4px;padding:0 .4rem;text-align:center}
.get{background:#2b7a3d}.post{background:#2457a6} code{background:#f4f4f4;padding:0 .25rem}
table{border-collapse:collapse;margin:.4rem 0} td,th{border:1px solid #e3e3e3;padding:.2rem .5rem;text-align:left;vertical-align:top}
details{margin:.3rem 0} pre{background:#f7f7f7;padding:.6rem;overflow:auto}
</style></head><body>
<h1>K2 market data API</h1><p id="desc"></p><p>The machine-readable document: <a href="openapi.json">openapi.json</a>.</p>
<div id="ops">Loading…</div>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
fetch("openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("desc").textContent = doc.info.description || "";
  const schemas = (doc.components || {}).schemas || {};
  const ref = s => s && s.$ref ? schemas[s.$ref.split("/").pop()] : s;
  let html = "";
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      html += `<div class="op"><span class="m ${method}">${method.toUpperCase()}</span> <code>${esc(path)}</code>`;
      html += ` <small>${esc((op.tags || []).join(", "))}</small><div>${esc(op.summary || op.description || "")}</div>`;
      if (op.parameters && op.parameters.length) {
        html += "<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>";
        for (const p of op.parameters) html += `<tr><td><code>${esc(p.name)}</code></td><td>${esc(p.in)}</td><td>${p.required ? "yes" : ""}</td><td>${esc(p.description)}</td></tr>`;
        html += "</table>";
      }
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) {
        const s = ref(body.schema) || {};
        html += "<table><tr><th>body field</th><th>required</th><th>description</th></tr>";
        for (const [k, v] of Object.entries(s.properties || {})) html += `<tr><td><code>${esc(k)}</code></td><td>${(s.required || []).includes(k) ? "yes" : ""}</td><td>${esc(v.description)}</td></tr>`;
        html += "</table>";
      }
      html += "<details><summary>responses</summary><table>";
      for (const [code, r] of Object.entries(op.responses || {})) html += `<tr><td>${esc(code)}</td><td>${esc(r.description)}</td></tr>`;
      html += "</table></details></div>";
    }
  }
  document.getElementById("ops").innerHTML = html;
}).catch(e => { document.getElementById("ops").textContent = "openapi.json could not be loaded: " + e; });
</script></body></html>
"#;
