//! Dashboard sessions: a member signed in with their email and password holds a random token in a cookie; the store
//! keeps only its SHA-256 digest, with the member it acts as and its idle and absolute expiry, so any node serves it
//! and signing out (or removing the member) ends it everywhere.

use crate::role::Role;
use crate::tenant::{TenantStatus, Timestamp};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// The cookie value's prefix: a session token is recognisable in a leak report or a log scan, like a key.
pub const TOKEN_PREFIX: &str = "tgs_";

/// A session's secret, as the cookie carries it. Never printed; stored only as its [`SessionDigest`].
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// A new token: 32 random bytes, base64url without padding (43 characters), after [`TOKEN_PREFIX`].
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as a cookie presented it, if it has the shape of one (no I/O).
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix(TOKEN_PREFIX)?;
        let decoded = URL_SAFE_NO_PAD.decode(rest).ok()?;
        (decoded.len() == 32).then(|| Self(value.to_owned()))
    }

    /// The value to put in the cookie.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn digest(&self) -> SessionDigest {
        SessionDigest(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The session's CSRF token: derived from the secret (SHA-256 over a label and the token), so it needs no
    /// storage, and only the cookie's holder can know it.
    pub fn csrf_token(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"tollgate dashboard csrf\0");
        hash.update(self.0.as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// SHA-256 of a session token: how the store finds a session.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionDigest(pub [u8; 32]);

impl fmt::Debug for SessionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionDigest({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `sess_…`: how events and listings name it (never the token).
    pub id: String,
    /// Its token's digest.
    pub digest: SessionDigest,
    /// The tenant it signed in to.
    pub tenant_id: String,
    /// The member it acts as.
    pub member_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its last use (moved forward at most once a minute): idle expiry counts from here.
    pub last_seen_at: Timestamp,
    /// It ends then whatever its use (absolute expiry).
    pub expires_at: Timestamp,
    /// When it was signed out, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// A live session's member, as the store has them now: the role decides what the session may do at every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMember {
    /// The session.
    pub session: Session,
    /// The member's email.
    pub email: String,
    /// The member's current role.
    pub role: Role,
    /// The tenant's name.
    pub tenant_name: String,
    /// The tenant's plan.
    pub tenant_plan: String,
    /// The tenant's status (a suspended tenant's sessions are refused).
    pub tenant_status: TenantStatus,
}

/// A member who may sign in with an email: one per tenant the email belongs to, with a password set.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginCandidate {
    /// The tenant.
    pub tenant_id: String,
    /// The member.
    pub member_id: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The tenant's status.
    pub tenant_status: TenantStatus,
}

impl fmt::Debug for LoginCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCandidate")
            .field("tenant_id", &self.tenant_id)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_digest_and_never_print() {
        let token = SessionToken::generate();
        let text = token.expose_secret().to_owned();
        assert_eq!(text.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(SessionToken::parse(&text), Some(token.clone()));
        assert_ne!(SessionToken::generate(), token);
        assert!(SessionToken::parse("tgs_short").is_none());
        assert!(SessionToken::parse(&text.replace("tgs_", "xxx_")).is_none());
        assert!(!format!("{token:?}").contains(&text[4..]));
        assert_eq!(token.digest(), SessionToken::parse(&text).unwrap().digest());
        assert_eq!(token.csrf_token().len(), 64);
        assert_ne!(token.csrf_token(), SessionToken::generate().csrf_token());
    }
}
