//! Inference routes, for project keys: the model catalog and chat completions.

pub mod chat;
pub mod models;
