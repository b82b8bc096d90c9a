//! The limit on failed authentications: a source address that sends more than `auth_failures_per_minute` malformed
//! or unknown keys gets 429 before its key is looked up, so a flood of guessed keys costs no store reads. It uses the
//! app's rate limiter ([`Scope::AuthFailures`], one bucket per address: an IPv4 address, or an IPv6 /64, which one
//! client usually holds whole). A key found in the key cache never touches it; before a key is read from the store
//! the address's bucket is asked whether it is over its limit (a check of cost 0) and the read's failure is added
//! after it, so only failures add up, and a client's first burst with a new key is never counted.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::client_ip::SourceIp;
use axum::http::request::Parts;
use std::net::IpAddr;
use tollgate_core::ports::{Bucket, Decision, Scope, Unit};

/// The bucket id of the request's source address.
fn address(parts: &Parts) -> String {
    address_of(parts.extensions.get::<SourceIp>().copied())
}

/// The bucket id of a source address (shared with the dashboard's sign-in limit, which counts the same way).
pub(crate) fn address_of(source: Option<SourceIp>) -> String {
    match source {
        Some(SourceIp::Known(IpAddr::V6(ip))) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(SourceIp::Known(ip)) => ip.to_string(),
        // Behind a trusted proxy that sent an unreadable X-Forwarded-For, or with no client_ip layer: one shared
        // bucket, so unknown sources cannot flood the store either.
        Some(SourceIp::Unknown) | None => "unknown".to_owned(),
    }
}

fn bucket<'a>(state: &AppState, id: &'a str) -> Bucket<'a> {
    Bucket {
        scope: Scope::AuthFailures,
        id,
        unit: Unit::Requests,
        per_minute: state.config.auth_failures_per_minute,
        cost: 1,
    }
}

/// Counts one failure of the request's address (a malformed key, or one known to be unknown): 429 when it is over
/// its limit.
pub async fn count(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    take(state, parts, 1).await
}

/// 429 when the request's address is over its limit already, counting nothing: asked before a store read.
pub async fn admit(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    take(state, parts, 0).await
}

async fn take(state: &AppState, parts: &Parts, cost: u64) -> Result<(), ApiError> {
    if state.config.auth_failures_per_minute == 0 {
        return Ok(());
    }
    let id = address(parts);
    let bucket = Bucket {
        cost,
        ..bucket(state, &id)
    };
    let decision = state.limiter.check(std::slice::from_ref(&bucket)).await;
    match decision {
        Ok(Decision::Refused { retry_after_ms, .. }) => Err(ApiError::RateLimited {
            message: "Too many requests with invalid API keys from this address; retry later"
                .to_owned(),
            retry_after_ms,
            quota: None,
        }),
        Ok(Decision::Admitted(_)) => Ok(()),
        Err(error) => {
            // The limit protects the store; a limiter that cannot answer must not lock every new key out.
            tracing::warn!(%error, "auth-failure limit unavailable; not counted");
            Ok(())
        }
    }
}

/// Adds one failure to the request's address once a store read found nothing (after [`admit`] let it read).
pub async fn add(state: &AppState, parts: &Parts) {
    if state.config.auth_failures_per_minute == 0 {
        return;
    }
    let id = address(parts);
    if let Err(error) = state.limiter.adjust(&bucket(state, &id), 1).await {
        tracing::warn!(%error, "auth-failure limit unavailable; not counted");
    }
}
