//! Receivers of leaked-key reports from secret scanners. No bearer credential: each report is accepted only with
//! its sender's signature, which the service checks over the raw body.

pub mod github;
