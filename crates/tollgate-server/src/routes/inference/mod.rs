//! Inference routes, for project keys: the model catalog, chat completions, and the project's usage.

pub mod chat;
pub mod models;
pub mod usage;
