//! Leaked keys reported by GitHub's secret scanning partner program: the signature check on the raw body, then
//! each reported token that is one of our keys is revoked at once, with an `api_key.leaked` event in the same
//! transaction. A token's value is never logged, stored or put in an event: only its SHA-256 leaves this module.

use super::Caller;
use super::keys;
use crate::app::App;
use crate::error::ApiError;
use crate::extract::RawBody;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write;
use tollgate_core::audit::{AuditEvent, EventType};
use tollgate_core::tenant::{ApiKey, KeyOwner, Timestamp};

/// The header naming which of GitHub's public keys signed the request.
pub const KEY_ID_HEADER: &str = "github-public-key-identifier";
/// The header carrying the signature: base64 of an ASN.1 DER ECDSA (P-256, SHA-256) signature of the raw body.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";
/// The `actor_id` of `api_key.leaked` events (with `actor_type` `operator`): the deployment acted on GitHub's
/// report, no member did.
pub const ACTOR_ID: &str = "github_secret_scanning";

/// The longest `url` and `source` kept in an event's details: the report is GitHub's to fill, the log is ours to
/// bound.
const MAX_URL_CHARS: usize = 2048;
const MAX_SOURCE_CHARS: usize = 256;

/// Why a report is refused before anything is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// No `[secret_scanning]` in the config: the receiver does not exist (404).
    #[error("The secret scanning receiver is disabled: configure [secret_scanning]")]
    Disabled,
    /// One of the two headers is absent or not text (401).
    #[error("Missing GITHUB-PUBLIC-KEY-IDENTIFIER or GITHUB-PUBLIC-KEY-SIGNATURE header")]
    MissingSignature,
    /// The key identifier names no configured key (401).
    #[error("Unknown GITHUB-PUBLIC-KEY-IDENTIFIER")]
    UnknownKey,
    /// Not base64 of a DER signature, or not a signature of this body by that key (401).
    #[error("Invalid GITHUB-PUBLIC-KEY-SIGNATURE")]
    BadSignature,
}

/// Why a configured public key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// The id is empty.
    #[error("the id must be non-empty")]
    EmptyId,
    /// Two keys share an id.
    #[error("duplicate id {0:?}")]
    DuplicateId(String),
    /// The PEM is not a P-256 public key (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    #[error("key {id:?}: not a P-256 public key in PEM ({reason})")]
    BadPem {
        /// The key's id.
        id: String,
        /// The parser's words.
        reason: String,
    },
}

/// GitHub's public keys by identifier, parsed once at start-up.
#[derive(Debug, Clone, Default)]
pub struct GithubKeys(HashMap<String, VerifyingKey>);

impl GithubKeys {
    /// Adds the key `id` from its PEM.
    pub fn insert(&mut self, id: &str, pem: &str) -> Result<(), PublicKeyError> {
        if id.is_empty() {
            return Err(PublicKeyError::EmptyId);
        }
        if self.0.contains_key(id) {
            return Err(PublicKeyError::DuplicateId(id.to_owned()));
        }
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| PublicKeyError::BadPem {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
        self.0.insert(id.to_owned(), key);
        Ok(())
    }

    /// Whether `signature` (the header's base64 text) is the key `key_id`'s signature of `body`, the raw bytes.
    pub fn verify(&self, key_id: &str, signature: &str, body: &[u8]) -> Result<(), ReportError> {
        let key = self.0.get(key_id).ok_or(ReportError::UnknownKey)?;
        let der = STANDARD
            .decode(signature.trim())
            .map_err(|_| ReportError::BadSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| ReportError::BadSignature)?;
        // GitHub signs with Go's crypto/ecdsa, which does not normalise S: p256 accepts either half, as it must.
        key.verify(body, &signature)
            .map_err(|_| ReportError::BadSignature)
    }
}

/// The two headers of a signed request, as sent (`None` when absent or not text).
#[derive(Debug, Clone, Default)]
pub struct SignedBy<'a> {
    /// `GITHUB-PUBLIC-KEY-IDENTIFIER`.
    pub key_id: Option<&'a str>,
    /// `GITHUB-PUBLIC-KEY-SIGNATURE`.
    pub signature: Option<&'a str>,
}

/// One reported match. Unknown fields are ignored, and `url` and `source` may be missing or null: GitHub may add
/// to its payload (its older examples have no `source`), and a report refused for its shape would leave a leaked
/// key working. Its `Debug` never shows the token.
#[derive(Clone, Deserialize)]
pub struct Match {
    /// The string found.
    pub token: String,
    /// The token type registered with GitHub, echoed back.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place it was found in (`content`, `commit`, `npm`…).
    #[serde(default)]
    pub source: Option<String>,
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Match")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// The verdict on one match, GitHub's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The match's `type`.
    pub token_type: String,
    /// `true_positive` for one of our keys (now revoked), else `false_positive`.
    pub label: Verdict,
}

/// Whether a reported token is one of our keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// One of our keys, active or not: it is revoked now if it was not already.
    TruePositive,
    /// Not a key of this deployment.
    FalsePositive,
}

/// Checks a report's signature against the raw `body` (before anything else is read from it), then judges each
/// match in order, revoking each key of ours that is not revoked yet. 404 when the receiver is not configured, 401
/// for any signature fault, 415 or 400 for a body that is not a JSON array of matches.
pub async fn receive(
    app: &App,
    by: &Caller,
    signed: SignedBy<'_>,
    body: &RawBody,
) -> Result<Vec<Label>, ApiError> {
    let keys = app.secret_scanning.as_ref().ok_or(ReportError::Disabled)?;
    let (Some(key_id), Some(signature)) = (signed.key_id, signed.signature) else {
        return Err(ReportError::MissingSignature.into());
    };
    keys.verify(key_id, signature, body.bytes())?;
    let matches: Vec<Match> = body.json_array()?;
    let mut labels = Vec::with_capacity(matches.len());
    for found in &matches {
        labels.push(judge(app, by, found).await?);
    }
    Ok(labels)
}

/// One match: a key of ours (format and checksum, then digest) is revoked with its `api_key.leaked` event, unless
/// it was revoked already (then nothing is written).
async fn judge(app: &App, by: &Caller, found: &Match) -> Result<Label, ApiError> {
    let verdict = match keys::lookup(app, &found.token).await? {
        None => Verdict::FalsePositive,
        Some(principal) => {
            let key = &principal.key;
            if key.revoked_at.is_none() {
                let now = app.clock.now();
                let event = leaked_event(by, key, found, now);
                // The store revokes only a key not yet revoked, in one transaction with the event, and its change
                // log carries the revocation to every node; a report racing another revocation writes nothing.
                if let Some(revoked) = app
                    .store
                    .revoke_key(&key.tenant_id, &key.id, now, &event)
                    .await?
                {
                    app.keys.invalidate(&revoked.digest).await;
                    tracing::warn!(
                        tenant = %key.tenant_id,
                        key_id = %key.id,
                        source = found.source.as_deref().map(|s| cut(s, MAX_SOURCE_CHARS)),
                        "a key that GitHub reported leaked is revoked"
                    );
                }
            }
            Verdict::TruePositive
        }
    };
    Ok(Label {
        token_hash: sha256_hex(&found.token),
        token_type: found.kind.clone(),
        label: verdict,
    })
}

/// The `api_key.leaked` event of `key`: the key as `api_key.revoked` names it (a project key as `key_id` and its
/// project, an admin key as the target with its member), and the report's `url` and `source` as details.
fn leaked_event(by: &Caller, key: &ApiKey, found: &Match, at: Timestamp) -> AuditEvent {
    let url = found.url.as_deref().map(|u| cut(u, MAX_URL_CHARS));
    let source = found.source.as_deref().map(|s| cut(s, MAX_SOURCE_CHARS));
    let event = by
        .event(EventType::ApiKeyLeaked, &key.tenant_id, at)
        .target(&key.id);
    match &key.owner {
        KeyOwner::Project(project_id) => event
            .key(&key.id, &key.last4)
            .project(project_id)
            .details(&json!({"url": url, "source": source})),
        KeyOwner::Member(member_id) => {
            event.details(&json!({"url": url, "source": source, "member_id": member_id}))
        }
    }
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at])
}

/// Lower-case hex of the SHA-256 of `token`'s UTF-8 bytes, as GitHub expects `token_hash`.
fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn keypair() -> (SigningKey, String) {
        // A fixed scalar: the unit test needs no randomness, only a valid key.
        let signing = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (signing, pem)
    }

    fn signed(signing: &SigningKey, body: &[u8]) -> (Signature, String) {
        let signature: Signature = signing.sign(body);
        let header = STANDARD.encode(signature.to_der().as_bytes());
        (signature, header)
    }

    #[test]
    fn only_the_named_key_signing_these_very_bytes_passes() {
        let (signing, pem) = keypair();
        let mut keys = GithubKeys::default();
        keys.insert("k1", &pem).unwrap();
        let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
        let (_, header) = signed(&signing, body);
        assert_eq!(keys.verify("k1", &header, body), Ok(()));
        assert_eq!(
            keys.verify("k2", &header, body),
            Err(ReportError::UnknownKey)
        );
        let mut altered = body.to_vec();
        altered[12] = b'y';
        assert_eq!(
            keys.verify("k1", &header, &altered),
            Err(ReportError::BadSignature)
        );
        assert_eq!(
            keys.verify("k1", "not base64!", body),
            Err(ReportError::BadSignature)
        );
        assert_eq!(
            keys.verify("k1", &STANDARD.encode(b"not DER"), body),
            Err(ReportError::BadSignature)
        );
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let (_, forged) = signed(&other, body);
        assert_eq!(
            keys.verify("k1", &forged, body),
            Err(ReportError::BadSignature)
        );
    }

    #[test]
    fn a_high_s_signature_is_as_good_as_its_low_s_twin() {
        // Go's crypto/ecdsa (GitHub's signer) leaves S in either half; rejecting the high half would refuse about
        // every second genuine report.
        let (signing, pem) = keypair();
        let mut keys = GithubKeys::default();
        keys.insert("k1", &pem).unwrap();
        let body = b"[]";
        let (signature, _) = signed(&signing, body);
        let (r, s) = signature.split_scalars();
        let flipped = Signature::from_scalars(r, -*s).unwrap();
        assert_ne!(flipped, signature);
        for sig in [signature, flipped] {
            let header = STANDARD.encode(sig.to_der().as_bytes());
            assert_eq!(keys.verify("k1", &header, body), Ok(()));
        }
    }

    #[test]
    fn configured_keys_are_checked() {
        let (_, pem) = keypair();
        let mut keys = GithubKeys::default();
        assert_eq!(keys.insert("", &pem), Err(PublicKeyError::EmptyId));
        keys.insert("k1", &pem).unwrap();
        assert_eq!(
            keys.insert("k1", &pem),
            Err(PublicKeyError::DuplicateId("k1".into()))
        );
        let bad = keys.insert(
            "k2",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        );
        assert!(
            matches!(&bad, Err(PublicKeyError::BadPem { id, .. }) if id == "k2"),
            "{bad:?}"
        );
        assert!(bad.unwrap_err().to_string().contains("\"k2\""));
    }

    #[test]
    fn a_match_never_prints_its_token() {
        let found: Match =
            serde_json::from_str(r#"{"token":"sk_live_secretvalue","type":"t"}"#).unwrap();
        let shown = format!("{found:?}");
        assert!(!shown.contains("secretvalue"), "{shown}");
    }

    #[test]
    fn token_hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
