//! `/openapi.json` (the document [`crate::openapi`] assembles, serialised once) and
//! `/docs`: a self-contained page that renders it (no script from elsewhere).

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The OpenAPI document as served.
pub struct Document {
    json: String,
}

impl Document {
    pub fn new(doc: serde_json::Value) -> Self {
        Document {
            json: serde_json::to_string_pretty(&doc).expect("the document serialises"),
        }
    }
}

pub async fn openapi_json(Extension(doc): Extension<Arc<Document>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.json.clone(),
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
