//! Idempotency keys (Stripe's rules): what a first request claims in the store, what a retry with the same key
//! finds there, and the response stored for replay.
//!
//! A key is scoped to its tenant (any of the tenant's keys replays it; the operator's requests have a scope of their
//! own) and lives for a window (24 h by default) from its first use. The first request *claims* it with a unique
//! insert, so of two nodes racing with one key exactly one executes. A claim is held by the node that took it for
//! [`CLAIM_LEASE_SECONDS`] at a time and renewed while the request runs: the claim of a process that died is free
//! again once its lease runs out (at once when the same server restarts: it releases every claim of its
//! [`instance`](Claim::instance)). Completing a claim stores the response, in the same transaction as the
//! request's charge for an inference request; a claim whose request ended without a response worth replaying
//! (refused before executing, or failed with a 5xx) is released, so a retry executes afresh.

use crate::tenant::Timestamp;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// The longest key accepted (`Idempotency-Key` over this is a 400).
pub const MAX_KEY_LEN: usize = 255;

/// How long a node's claim holds without renewal: a claim of a process that died is free again after at most this.
pub const CLAIM_LEASE_SECONDS: i64 = 10;

/// The scope of requests made with the operator token (tenants are scoped by their id).
pub const OPERATOR_SCOPE: &str = "operator";

/// What identifies a request for its key: SHA-256 over its method, path (with query) and raw body, so the same key
/// sent with another request is recognised as a reuse (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `method` `path` with `body`.
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        // Lengths first, so no two different (method, path) pairs hash the same bytes.
        for part in [method.as_bytes(), path.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(body);
        Self(hash.finalize().into())
    }
}

/// Why an `Idempotency-Key` header is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty.
    #[error("Idempotency-Key must not be empty")]
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    #[error("Idempotency-Key must be at most 255 characters")]
    TooLong,
    /// Outside visible ASCII and space.
    #[error("Idempotency-Key must be printable ASCII")]
    NotPrintable,
}

/// Checks an `Idempotency-Key` header's value: 1–255 characters of printable ASCII (space included).
pub fn validate_key(value: &[u8]) -> Result<&str, KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty);
    }
    if value.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(KeyError::NotPrintable);
    }
    std::str::from_utf8(value).map_err(|_| KeyError::NotPrintable)
}

/// A response as stored for replay: its status, the headers that matter, its body as sent (a stream's events
/// included), never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `(name, value)` pairs, lower-case names: content type, rate-limit headers.
    pub headers: Vec<(String, String)>,
    /// The body's bytes.
    pub body: Vec<u8>,
}

/// A first request's claim of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The tenant's id, or [`OPERATOR_SCOPE`].
    pub scope: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// The request it was first sent with.
    pub fingerprint: Fingerprint,
    /// This claim's own id: completing or releasing it touches the record only while this claim holds it.
    pub claim_id: String,
    /// The node (process) holding it, whose renewals keep it.
    pub node_id: String,
    /// The server the node runs as (host and listening address): the same server restarted releases its dead
    /// predecessor's claims at once.
    pub instance: String,
    /// The first request's id (`X-Request-Id`), for the replays' audit events.
    pub request_id: String,
    /// When it is claimed.
    pub now: Timestamp,
    /// Its lease: another node may take over a claim still running after this.
    pub locked_until: Timestamp,
    /// The end of the key's window: after it the key may be used afresh.
    pub expires_at: Timestamp,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free (new, past its window, or its holder's lease ran out): this request executes.
    Claimed,
    /// The key's first request, with the same fingerprint, is still running (409).
    InFlight,
    /// The key was first used with another request (422).
    Mismatch,
    /// The key's request completed: replay this, executing nothing.
    Completed {
        /// The stored response.
        response: StoredResponse,
        /// The request id of the execution it came from.
        request_id: String,
    },
}

/// Which claim a management request holds once it holds one, shared with the audit events its change writes
/// ([`crate::audit::Origin::claim`]): the store locks that claim in the change's own transaction
/// ([`crate::ports::IdempotencyStore`]), so a change that committed is never made again by a retry, even if the
/// server dies before it stored the answer. Empty until the claim is made (the origin is taken earlier).
#[derive(Debug, Clone, Default)]
pub struct ClaimMark(Arc<OnceLock<ClaimRef>>);

/// A claim, by what finds its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// The claim's scope.
    pub scope: String,
    /// Its key.
    pub key: String,
    /// The claim.
    pub claim_id: String,
}

impl ClaimMark {
    /// The request now holds `claim` (set once; later calls change nothing).
    pub fn set(&self, claim: ClaimRef) {
        let _ = self.0.set(claim);
    }

    /// The claim held, if any.
    pub fn get(&self) -> Option<&ClaimRef> {
        self.0.get()
    }
}

/// Not one of an event's facts: events compare equal whatever claim their request held.
impl PartialEq for ClaimMark {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ClaimMark {}

/// A claim's request completed with a response to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The claim's scope.
    pub scope: String,
    /// Its key.
    pub key: String,
    /// The claim completing it (a claim taken over by another node is not completed by this one).
    pub claim_id: String,
    /// What retries get.
    pub response: StoredResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_and_at_most_255_characters() {
        assert_eq!(validate_key(b"order-42 retry"), Ok("order-42 retry"));
        assert_eq!(validate_key(&[b'a'; 255]).map(str::len), Ok(255));
        assert_eq!(validate_key(&[b'a'; 256]), Err(KeyError::TooLong));
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(validate_key(b"tab\there"), Err(KeyError::NotPrintable));
        assert_eq!(validate_key("é".as_bytes()), Err(KeyError::NotPrintable));
    }

    #[test]
    fn the_fingerprint_tells_method_path_and_body_apart() {
        let base = Fingerprint::of("POST", "/v1/chat/completions", b"{}");
        assert_eq!(base, Fingerprint::of("POST", "/v1/chat/completions", b"{}"));
        assert_ne!(
            base,
            Fingerprint::of("POST", "/v1/chat/completions", b"{ }")
        );
        assert_ne!(base, Fingerprint::of("POST", "/v1/embeddings", b"{}"));
        assert_ne!(base, Fingerprint::of("PUT", "/v1/chat/completions", b"{}"));
        // The boundary between the parts is part of the hash.
        assert_ne!(
            Fingerprint::of("POST", "/a", b"b"),
            Fingerprint::of("POST", "/ab", b"")
        );
    }
}
