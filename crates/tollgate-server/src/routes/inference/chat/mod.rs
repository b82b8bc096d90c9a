//! `POST /v1/chat/completions`.

pub mod completions;
