//! `GET /v1/organization`.

pub mod get;
