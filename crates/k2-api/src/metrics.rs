//! Every metric of the query API, declared once with its help text. Labels are bounded:
//! routes are the router's matched templates, methods and statuses closed sets.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text of every metric below (the Prometheus `# HELP` lines).
pub fn describe() {
    describe_counter!(
        "k2_api_requests_total",
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        "k2_api_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its answer, by route template and method."
    );
    describe_gauge!(
        "k2_api_requests_in_flight",
        "HTTP requests being answered now."
    );
    describe_counter!(
        "k2_catalog_commits_total",
        "Commits to tables through the Iceberg REST catalog server, by outcome (committed, conflict: a requirement failed or another commit came first, failed)."
    );
    describe_counter!(
        "k2_api_rate_limited_total",
        "Requests refused with 429, by what was limited (key or client address)."
    );
    describe_counter!(
        "k2_api_auth_failures_total",
        "Requests refused for their API key, by reason (missing or invalid)."
    );
    describe_gauge!(
        "k2_api_dependency_up",
        "Whether a dependency answered the last readiness check (1) or not (0)."
    );
    describe_counter!(
        "k2_api_cache_total",
        "Answers looked up in the answer cache, by outcome (hit or miss)."
    );
    describe_gauge!(
        "k2_api_cache_bytes",
        Unit::Bytes,
        "Estimated bytes of answers held in the answer cache."
    );
    describe_counter!(
        "k2_api_queries_shed_total",
        "Queries refused with 503 by the query gate, by reason (queue_full, queue_timeout)."
    );
    describe_gauge!(
        "k2_api_queries_queued",
        "Queries waiting for a slot of the query gate."
    );
    describe_gauge!(
        "k2_api_queries_running",
        "Queries running on the query runtime."
    );
    describe_gauge!("k2_api_replays_active", "Streamed replays running now.");
    describe_counter!(
        "k2_flight_requests_total",
        "Arrow Flight SQL calls answered, by call (statement, prepare, bind, execute, fetch, close, metadata, handshake) and gRPC status (ok, unauthenticated, permission_denied, invalid_argument, not_found, resource_exhausted, deadline_exceeded, unavailable, internal)."
    );
    describe_histogram!(
        "k2_flight_request_duration_seconds",
        Unit::Seconds,
        "Time of an Arrow Flight SQL call, by call."
    );
    describe_counter!(
        "k2_flight_rows_total",
        "Rows sent to Arrow Flight SQL clients."
    );
    describe_counter!(
        "k2_api_replays_total",
        "Streamed replays ended, by outcome (complete, client_gone, stopped, failed)."
    );
}

/// `outcome`: `committed`, `conflict` or `failed`.
pub(crate) fn catalog_commit(outcome: &'static str) {
    metrics::counter!("k2_catalog_commits_total", "outcome" => outcome).increment(1);
}

pub(crate) fn request_started() {
    metrics::gauge!("k2_api_requests_in_flight").increment(1.0);
}

pub(crate) fn request_answered(route: String, method: &'static str, status: u16, took: Duration) {
    metrics::gauge!("k2_api_requests_in_flight").decrement(1.0);
    metrics::counter!("k2_api_requests_total", "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    metrics::histogram!("k2_api_request_duration_seconds", "route" => route, "method" => method)
        .record(took.as_secs_f64());
}

/// `by`: `key` or `address`.
pub(crate) fn rate_limited(by: &'static str) {
    metrics::counter!("k2_api_rate_limited_total", "by" => by).increment(1);
}

/// `reason`: `missing` or `invalid`.
pub(crate) fn auth_failed(reason: &'static str) {
    metrics::counter!("k2_api_auth_failures_total", "reason" => reason).increment(1);
}

pub(crate) fn dependency_up(dependency: &'static str, up: bool) {
    metrics::gauge!("k2_api_dependency_up", "dependency" => dependency).set(if up {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn cache_lookup(hit: bool) {
    metrics::counter!("k2_api_cache_total", "outcome" => if hit { "hit" } else { "miss" })
        .increment(1);
}

pub(crate) fn cache_bytes(bytes: u64) {
    metrics::gauge!("k2_api_cache_bytes").set(bytes as f64);
}

/// `reason`: `queue_full` or `queue_timeout`.
pub(crate) fn query_shed(reason: &'static str) {
    metrics::counter!("k2_api_queries_shed_total", "reason" => reason).increment(1);
}

pub(crate) fn queries_queued(change: f64) {
    metrics::gauge!("k2_api_queries_queued").increment(change);
}

pub(crate) fn queries_running(change: f64) {
    metrics::gauge!("k2_api_queries_running").increment(change);
}

pub(crate) fn replay_started() {
    metrics::gauge!("k2_api_replays_active").increment(1.0);
}

pub(crate) fn replay_ended(outcome: &'static str) {
    metrics::gauge!("k2_api_replays_active").decrement(1.0);
    metrics::counter!("k2_api_replays_total", "outcome" => outcome).increment(1);
}

/// `call` and `status` from closed sets (see the help text).
pub(crate) fn flight_call(call: &'static str, status: &'static str, took: Duration) {
    metrics::counter!("k2_flight_requests_total", "call" => call, "status" => status).increment(1);
    metrics::histogram!("k2_flight_request_duration_seconds", "call" => call)
        .record(took.as_secs_f64());
}

pub(crate) fn flight_rows(rows: u64) {
    metrics::counter!("k2_flight_rows_total").increment(rows);
}

/// An expensive question refused under degradation (REST or Flight SQL).
pub(crate) fn degradation_refusal() {
    metrics::counter!("k2_degradation_actions_total", "action" => "refuse_query").increment(1);
}
