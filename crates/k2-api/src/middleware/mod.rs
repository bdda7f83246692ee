//! What runs around the handlers: every request observed (request id, access log, RED
//! metrics), `/v1` requests authenticated by API key, and requests counted against their
//! rate limit.

mod auth;
mod degradation;
mod observe;
mod rate_limit;

pub use self::auth::authenticate;
pub(crate) use self::degradation::refusal;
pub use self::degradation::refuse_expensive;
pub use self::observe::{CallerName, REQUEST_ID, RequestId, observe};
pub use self::rate_limit::ip_limit;
