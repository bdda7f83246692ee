//! The page at `/`: charts, data quality and pipeline health for a browser, built from
//! `web/` at compile time (see `build.rs`) and served from memory. The page itself needs no
//! key; every question it asks goes to `/v1` with the key the user gives it, which it keeps
//! in the tab's session storage. A key in a link (`/#key=…`) is in the fragment, which
//! browsers never send.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!(concat!(env!("OUT_DIR"), "/web/dist/index.html"));
const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/web/dist/app.js"));
const STYLE: &str = include_str!(concat!(env!("OUT_DIR"), "/web/dist/app.css"));

/// Scripts and styles from this server only; data from this server only; no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One served file and its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
        Asset {
            body,
            content_type,
            etag: HeaderValue::from_str(&format!("\"{digest:016x}\"")).expect("ascii"),
        }
    }

    /// The file, or 304 when the browser holds this version. Browsers revalidate each load
    /// (`no-cache`), so a new binary's page is never mixed with an old one's script.
    fn serve(&self, request: &HeaderMap) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == self.etag.as_bytes());
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

static PAGE: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        Asset::new(INDEX, "text/html; charset=utf-8"),
        Asset::new(SCRIPT, "text/javascript; charset=utf-8"),
        Asset::new(STYLE, "text/css; charset=utf-8"),
    ]
});

pub async fn index(request: HeaderMap) -> Response {
    PAGE[0].serve(&request)
}

pub async fn script(request: HeaderMap) -> Response {
    PAGE[1].serve(&request)
}

pub async fn style(request: HeaderMap) -> Response {
    PAGE[2].serve(&request)
}
