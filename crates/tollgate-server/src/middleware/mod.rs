//! Request plumbing that runs before handlers: request ids, access logs, client addresses (and the audit origin),
//! body limits and authentication.

pub mod access_log;
pub mod auth;
pub mod body_limit;
pub mod client_ip;
pub mod origin;
pub mod request_id;
