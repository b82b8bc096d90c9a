//! Request plumbing that runs before handlers: request ids, access logs, client addresses (and the audit origin),
//! body limits, the `Idempotency-Key` slot (all run by the one [`edge`] layer), authentication and its limit on
//! failures.

pub mod access_log;
pub mod auth;
pub mod auth_failures;
pub mod body_limit;
pub mod client_ip;
pub mod edge;
pub mod idempotency;
pub mod origin;
pub mod request_id;
