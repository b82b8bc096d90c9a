//! The API key format: `<prefix><32 base62 body><6 base62 CRC32 checksum>`.
//!
//! A [`PlainKey`] is the secret; it exists only while a request is being authenticated or a key is being created, and
//! it refuses to print itself. Storage and caches only ever see its [`KeyDigest`] (SHA-256 of the whole key).
//! The checksum lets a typo or a truncated key be rejected with no I/O and lets secret scanners recognise our keys.
//! NEVER change the prefix or checksum rules of existing keys: every key ever issued would stop parsing.

use rand::Rng;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Base62 digits in the order the checksum uses: `0-9A-Za-z`.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters after the prefix (62^32 ≈ 2^190).
pub const BODY_LEN: usize = 32;
/// Characters of the CRC32 checksum in base62 (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Characters of a key that stay visible forever (`prefix` field).
pub const VISIBLE_PREFIX_LEN: usize = 12;
/// Characters at the end that stay visible forever (`last4` field).
pub const LAST_LEN: usize = 4;

/// Which credential a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A project key, for inference routes.
    Project,
    /// An admin key, for management routes; acts as its member.
    Admin,
}

impl KeyKind {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Admin => "admin",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "project" => Some(Self::Project),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Why a string is not a key of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Wrong prefix, length, alphabet or checksum.
    #[error("Malformed API key")]
    Malformed,
}

/// Why a configured key prefix is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not 4–12 characters of `[A-Za-z0-9_]` ending in `_`.
    #[error(
        "a key prefix must be 4–12 characters of letters, digits and '_', ending in '_' (got {0:?})"
    )]
    Invalid(String),
    /// Both kinds would share a prefix, so a key's kind could not be told from its value.
    #[error("the project and admin key prefixes must differ")]
    Ambiguous,
    /// An earlier project prefix that is the admin prefix: its keys' kind could not be told from their value.
    #[error("an accepted key prefix must differ from the admin key prefix (got {0:?})")]
    AcceptedIsAdmin(String),
}

/// The prefixes of a deployment, validated: the one new keys of each kind get, and earlier project prefixes whose
/// keys still parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefixes {
    project: String,
    admin: String,
    /// Project prefixes of the past (`accepted_key_prefixes`): each issued key embeds its prefix in its checksum,
    /// so a changed `key_prefix` would otherwise make every key issued before the change malformed.
    earlier: Vec<String>,
}

/// Whether `p` is a usable prefix: 4–12 characters of `[A-Za-z0-9_]` ending in `_`.
fn check_prefix(p: &str) -> Result<(), PrefixError> {
    let ok = (4..=12).contains(&p.len())
        && p.ends_with('_')
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PrefixError::Invalid(p.to_owned()))
    }
}

impl KeyPrefixes {
    /// Validates both prefixes: each 4–12 characters ending in `_`, and different. One may start with the other
    /// (`btoo_` and `btoo_admin_`): a body has no `_`, so the longer prefix decides.
    pub fn new(project: &str, admin: &str) -> Result<Self, PrefixError> {
        check_prefix(project)?;
        check_prefix(admin)?;
        if project == admin {
            return Err(PrefixError::Ambiguous);
        }
        Ok(Self {
            project: project.to_owned(),
            admin: admin.to_owned(),
            earlier: Vec::new(),
        })
    }

    /// Also accepts project keys issued under the `earlier` prefixes (validated as the others are); new keys keep
    /// the current one. Listing the current project prefix again is harmless.
    pub fn accepting(mut self, earlier: &[String]) -> Result<Self, PrefixError> {
        for p in earlier {
            check_prefix(p)?;
            if *p == self.admin {
                return Err(PrefixError::AcceptedIsAdmin(p.clone()));
            }
            if *p != self.project && !self.earlier.contains(p) {
                self.earlier.push(p.clone());
            }
        }
        Ok(self)
    }

    /// Every prefix a key of ours may start with, with its kind: the current two, then the earlier project ones.
    pub fn all(&self) -> impl Iterator<Item = (KeyKind, &str)> {
        [
            (KeyKind::Project, &self.project),
            (KeyKind::Admin, &self.admin),
        ]
        .into_iter()
        .chain(self.earlier.iter().map(|p| (KeyKind::Project, p)))
        .map(|(kind, p)| (kind, p.as_str()))
    }

    /// The prefix for keys of this kind.
    pub fn for_kind(&self, kind: KeyKind) -> &str {
        match kind {
            KeyKind::Project => &self.project,
            KeyKind::Admin => &self.admin,
        }
    }

    /// Checks a presented string without any I/O: which kind it is, if its shape and checksum are right.
    pub fn parse(&self, raw: &str) -> Result<(KeyKind, PlainKey), KeyFormatError> {
        // Every valid key is ASCII; checking first also makes every byte offset below a char boundary, so a
        // multi-byte character where the checksum starts is a malformed key, not a panic.
        if !raw.is_ascii() {
            return Err(KeyFormatError::Malformed);
        }
        // Take the longest prefix the string starts with: when one prefix starts with another, only the longer one
        // can match a well-formed key, because the rest of the longer prefix ends in `_`, which no body contains.
        let (kind, prefix_len) = self
            .all()
            .filter(|(_, p)| raw.starts_with(p))
            .map(|(kind, p)| (kind, p.len()))
            .max_by_key(|&(_, len)| len)
            .ok_or(KeyFormatError::Malformed)?;
        if raw.len() != prefix_len + BODY_LEN + CHECKSUM_LEN {
            return Err(KeyFormatError::Malformed);
        }
        let (signed, checksum) = raw.split_at(prefix_len + BODY_LEN);
        if !signed.as_bytes()[prefix_len..]
            .iter()
            .all(u8::is_ascii_alphanumeric)
        {
            return Err(KeyFormatError::Malformed);
        }
        let expected = checksum_of(signed);
        // The checksum is public information, but comparing in constant time costs nothing.
        if !bool::from(expected.as_bytes().ct_eq(checksum.as_bytes())) {
            return Err(KeyFormatError::Malformed);
        }
        Ok((kind, PlainKey(raw.to_owned())))
    }

    /// A fresh key of this kind from a CSPRNG (ChaCha12 seeded by the OS).
    pub fn generate(&self, kind: KeyKind) -> PlainKey {
        let prefix = self.for_kind(kind);
        // ThreadRng is ChaCha12 seeded from the OS and reseeded periodically: a CSPRNG.
        let mut rng = rand::rng();
        let mut value = String::with_capacity(prefix.len() + BODY_LEN + CHECKSUM_LEN);
        value.push_str(prefix);
        for _ in 0..BODY_LEN {
            value.push(char::from(BASE62[rng.random_range(0..BASE62.len())]));
        }
        let checksum = checksum_of(&value);
        value.push_str(&checksum);
        PlainKey(value)
    }
}

/// CRC32 (IEEE) of `signed` in base62, most significant digit first, left-padded with `0` to 6 characters.
fn checksum_of(signed: &str) -> String {
    let mut n = crc32fast::hash(signed.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// A key's secret value. It never prints: `Debug` and `Display` show only the visible prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// The secret itself; call only to show it once to its creator.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The digest stored in place of the key.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The first 12 characters, visible forever.
    pub fn visible_prefix(&self) -> &str {
        self.0.get(..VISIBLE_PREFIX_LEN).unwrap_or(&self.0)
    }

    /// The last 4 characters, visible forever.
    pub fn last4(&self) -> &str {
        self.0
            .get(self.0.len().saturating_sub(LAST_LEN)..)
            .unwrap_or("")
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainKey({}…)", self.visible_prefix())
    }
}

impl fmt::Display for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.visible_prefix())
    }
}

/// SHA-256 of a whole key: what storage and caches hold.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// From stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From a stored slice; `None` unless it is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality, for wherever a presented digest meets a stored one.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but eight hex digits are enough to correlate log lines.
        write!(f, "KeyDigest(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes() -> KeyPrefixes {
        KeyPrefixes::new("sk_live_", "sk_admin_").unwrap()
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let p = prefixes();
        let key = p.generate(KeyKind::Project);
        let v = key.expose_secret();
        assert!(v.starts_with("sk_live_"));
        assert_eq!(v.len(), 8 + 32 + 6);
        assert!(v[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(p.parse(v).unwrap(), (KeyKind::Project, key.clone()));
        assert_eq!(key.visible_prefix(), &v[..12]);
        assert_eq!(key.last4(), &v[v.len() - 4..]);
        let admin = p.generate(KeyKind::Admin);
        assert_eq!(p.parse(admin.expose_secret()).unwrap().0, KeyKind::Admin);
    }

    #[test]
    fn keys_are_unique() {
        let p = prefixes();
        let a = p.generate(KeyKind::Project);
        let b = p.generate(KeyKind::Project);
        assert_ne!(a, b);
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn checksum_matches_zlib_crc32_in_base62() {
        let signed = format!("sk_live_{}", "A".repeat(32));
        let crc = crc32fast::hash(signed.as_bytes());
        let cs = checksum_of(&signed);
        // Decode the base62 digits back and compare with the CRC.
        let decoded = cs.bytes().fold(0u64, |acc, b| {
            acc * 62 + BASE62.iter().position(|&d| d == b).unwrap() as u64
        });
        assert_eq!(decoded, u64::from(crc));
        assert_eq!(cs.len(), 6);
        // A known vector: zlib.crc32(b"") == 0 → "000000".
        assert_eq!(checksum_of(""), "000000");
        // zlib.crc32(b"a") == 0xe8b7be43, in base62 by an independent Python implementation: "4GEHKN".
        let a = checksum_of("a");
        assert_eq!(a, "4GEHKN");
        let dec = a.bytes().fold(0u64, |acc, b| {
            acc * 62 + BASE62.iter().position(|&d| d == b).unwrap() as u64
        });
        assert_eq!(dec, 0xe8b7_be43);
    }

    #[test]
    fn typos_and_truncation_are_rejected_before_any_lookup() {
        let p = prefixes();
        let key = p.generate(KeyKind::Project);
        let v = key.expose_secret();
        // Truncated.
        assert!(p.parse(&v[..v.len() - 1]).is_err());
        // One character changed in the body.
        let mut chars: Vec<char> = v.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(p.parse(&typo), Err(KeyFormatError::Malformed));
        // Wrong case of the whole key (keys are case-sensitive).
        assert!(p.parse(&v.to_uppercase()).is_err());
        // Unknown prefix, non-base62 body.
        assert!(p.parse(&v.replacen("sk_live_", "sk_test_", 1)).is_err());
        let bad_alpha = format!("sk_live_{}", "-".repeat(38));
        assert!(p.parse(&bad_alpha).is_err());
        assert!(p.parse("").is_err());
    }

    #[test]
    fn non_ascii_input_is_malformed_and_never_panics() {
        let p = prefixes();
        // The exact length of a project key (46 bytes), with a multi-byte character at every position after the
        // prefix: in particular straddling byte 40, where the checksum starts.
        for ch in ['é', '€', '𝄞'] {
            let filler = 46 - 8 - ch.len_utf8();
            for at in 0..=filler {
                let raw = format!("sk_live_{}{ch}{}", "a".repeat(at), "a".repeat(filler - at));
                assert_eq!(raw.len(), 46);
                assert_eq!(p.parse(&raw), Err(KeyFormatError::Malformed), "{raw}");
            }
        }
        // Inside the prefix, and an admin-length string.
        assert!(p.parse(&format!("sk_livé{}", "a".repeat(38))).is_err());
        assert!(
            p.parse(&format!("sk_admin_{}é{}", "a".repeat(31), "a".repeat(5)))
                .is_err()
        );
    }

    #[test]
    fn secrets_never_print() {
        let key = prefixes().generate(KeyKind::Project);
        let secret = key.expose_secret().to_owned();
        for shown in [format!("{key:?}"), format!("{key}")] {
            assert!(!shown.contains(&secret[12..]), "{shown}");
            assert!(shown.contains(key.visible_prefix()));
        }
        let digest = format!("{:?}", key.digest());
        assert!(digest.len() < 30);
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyPrefixes::new("sk_x_", "sk_x_").is_err(), "ambiguous");
        let nested = KeyPrefixes::new("btoo_", "btoo_admin_").unwrap();
        let admin = nested.generate(KeyKind::Admin);
        let project = nested.generate(KeyKind::Project);
        assert_eq!(
            nested.parse(admin.expose_secret()).unwrap().0,
            KeyKind::Admin
        );
        assert_eq!(
            nested.parse(project.expose_secret()).unwrap().0,
            KeyKind::Project
        );
        assert!(KeyPrefixes::new("abc", "sk_admin_").is_err(), "too short");
        assert!(
            KeyPrefixes::new("sk_live", "sk_admin_").is_err(),
            "no underscore"
        );
        assert!(KeyPrefixes::new("a_very_long_prefix_", "sk_admin_").is_err());
        assert!(KeyPrefixes::new("btoo_", "sk_admin_").is_ok());
    }

    #[test]
    fn keys_of_earlier_prefixes_still_parse_and_new_ones_get_the_current_prefix() {
        let old = prefixes();
        let old_key = old.generate(KeyKind::Project);
        let old_admin = old.generate(KeyKind::Admin);
        let renamed = KeyPrefixes::new("btoo_", "sk_admin_").unwrap();
        assert!(renamed.parse(old_key.expose_secret()).is_err());
        let accepting = renamed
            .clone()
            .accepting(&["sk_live_".to_owned(), "btoo_".to_owned()])
            .unwrap();
        assert_eq!(
            accepting.parse(old_key.expose_secret()),
            Ok((KeyKind::Project, old_key.clone()))
        );
        assert_eq!(
            accepting.parse(old_admin.expose_secret()).unwrap().0,
            KeyKind::Admin
        );
        let new = accepting.generate(KeyKind::Project);
        assert!(new.expose_secret().starts_with("btoo_"));
        assert_eq!(
            accepting.parse(new.expose_secret()).unwrap().0,
            KeyKind::Project
        );
        // The checksum covers the prefix: an old key's body under the new prefix is no key.
        let moved = old_key.expose_secret().replacen("sk_live_", "sk_test_", 1);
        let both = accepting
            .clone()
            .accepting(&["sk_test_".to_owned()])
            .unwrap();
        assert!(both.parse(&moved).is_err());
        // An earlier prefix that another one starts with: the longer one decides, as for the current two.
        let nested = KeyPrefixes::new("btoo_live_", "btoo_admin_")
            .unwrap()
            .accepting(&["btoo_".to_owned()])
            .unwrap();
        let current = nested.generate(KeyKind::Project);
        assert_eq!(
            nested.parse(current.expose_secret()).unwrap().0,
            KeyKind::Project
        );
        let admin = nested.generate(KeyKind::Admin);
        assert_eq!(
            nested.parse(admin.expose_secret()).unwrap().0,
            KeyKind::Admin
        );
        let earlier = KeyPrefixes::new("btoo_", "btoo_admin_")
            .unwrap()
            .generate(KeyKind::Project);
        assert_eq!(
            nested.parse(earlier.expose_secret()).unwrap().0,
            KeyKind::Project
        );
    }

    #[test]
    fn accepted_prefixes_are_validated_like_the_others() {
        let p = || KeyPrefixes::new("btoo_", "sk_admin_").unwrap();
        for bad in ["abc", "sk_test", "a_very_long_prefix_", "sk-test_"] {
            assert_eq!(
                p().accepting(&[bad.to_owned()]),
                Err(PrefixError::Invalid(bad.to_owned()))
            );
        }
        assert_eq!(
            p().accepting(&["sk_admin_".to_owned()]),
            Err(PrefixError::AcceptedIsAdmin("sk_admin_".to_owned()))
        );
        assert_eq!(p().accepting(&[]), Ok(p()));
    }

    #[test]
    fn digest_round_trips_and_compares_in_constant_time() {
        let key = prefixes().generate(KeyKind::Admin);
        let d = key.digest();
        let back = KeyDigest::from_slice(d.as_bytes()).unwrap();
        assert!(d.ct_eq(&back));
        assert!(KeyDigest::from_slice(&[0; 31]).is_none());
    }
}
