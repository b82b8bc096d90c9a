//! Request plumbing that runs before handlers: request ids, body limits, client addresses and authentication.

pub mod auth;
pub mod body_limit;
pub mod client_ip;
pub mod request_id;
