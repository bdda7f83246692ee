//! Arrow Flight SQL beside the REST API (`api.flight_listen`): the same tables as
//! `/v1/sql`, read-only, with prepared statements and bound parameters, through the same
//! query gate, row cap, timeout and memory limit; the API keys are its bearer tokens, and
//! a key needs the `sql` scope.
//!
//! Built on `arrow-flight`'s Flight SQL server trait over tonic (no crate that serves
//! DataFusion over Flight SQL matched DataFusion 53).

mod prepared;
mod service;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::ApiError;
use crate::failure::Failure;
use crate::state::ApiState;

/// Serves Flight SQL on `listener` until `stop`, then finishes the calls in flight for at
/// most [`crate::DRAIN`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    stop: CancellationToken,
) -> Result<(), ApiError> {
    let service = FlightServiceServer::new(service::FlightSql::new(state))
        // An answer is at most query.max_rows rows; a message may carry a large batch.
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let graceful = stop.clone();
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move { graceful.cancelled().await },
        );
    crate::drained(server, &stop, "Flight SQL calls")
        .await
        .map_err(|e| ApiError::Serve(std::io::Error::other(e)))
}

/// The gRPC status of an API failure.
fn status(f: Failure) -> Status {
    let code = match f.status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        413 => Code::ResourceExhausted,
        429 | 503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, format!("{}: {}", f.code, f.message))
}

/// A status code as a metric label.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::ResourceExhausted => "resource_exhausted",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Unavailable => "unavailable",
        Code::Unimplemented => "unimplemented",
        _ => "internal",
    }
}
