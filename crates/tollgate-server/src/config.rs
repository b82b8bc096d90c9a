//! The configuration file (TOML) and its environment overrides, validated at start-up so a typo is an error that
//! names the field, never a silent default.

use crate::rate_limit::FailPolicy;
use crate::service::secret_scanning::GithubKeys;
use ipnet::IpNet;
/// The operator token and the database and Redis URLs (which may carry passwords) are [`SecretString`]s: its `Debug` prints `[REDACTED]`, and reading it takes an explicit
/// [`ExposeSecret::expose_secret`].
pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use tollgate_core::catalog::{DEFAULT_MAX_OUTPUT_TOKENS, ECHO_MODEL, ECHO_PROVIDER};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::plan::{Plans, default_plans};
use tollgate_core::ports::Durability;

/// Default `max_body_bytes`: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default `max_choices`.
pub const DEFAULT_MAX_CHOICES: u64 = 8;
/// The largest `max_choices` a deployment may set (OpenAI's own limit).
pub const MAX_MAX_CHOICES: u64 = 128;
/// Default upstream timeout.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 60_000;
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `auth_failures_per_minute`, per source address.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u64 = 600;

/// Default `dashboard_session_idle_minutes`: a dashboard session unused this long ends.
pub const DEFAULT_DASHBOARD_SESSION_IDLE_MINUTES: u64 = 60;
/// The longest `dashboard_session_idle_minutes`: a day.
const MAX_DASHBOARD_SESSION_IDLE_MINUTES: u64 = 1_440;
/// Default `dashboard_session_hours`: a dashboard session ends this long after sign-in, however much it is used.
pub const DEFAULT_DASHBOARD_SESSION_HOURS: u64 = 12;
/// The longest `dashboard_session_hours`: 30 days.
const MAX_DASHBOARD_SESSION_HOURS: u64 = 720;

/// Default `idempotency_window_hours`: a day, as Stripe.
pub const DEFAULT_IDEMPOTENCY_WINDOW_HOURS: u64 = 24;
/// The longest `idempotency_window_hours`: 30 days.
const MAX_IDEMPOTENCY_WINDOW_HOURS: u64 = 720;

/// Why a configuration cannot be used. Every message names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown field, or a wrong type (toml's message names the key and line).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value that parses but cannot work.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// The field at fault, e.g. `models[1].provider`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// `sqlite://…` (default) or `postgres://…`.
    pub database_url: SecretString,
    /// Shared rate limits across nodes: every node on this Redis shares one set of buckets; unset, each node
    /// limits in its own memory.
    pub redis_url: Option<SecretString>,
    /// What requests meet while the rate limiter (Redis) cannot answer: admitted (`open`, the default) or 503
    /// (`closed`).
    pub rate_limit_fail: FailPolicy,
    /// Enables `/operator/v1/*` when set. A secret: it never prints, `Config`'s `Debug` included.
    pub operator_token: Option<SecretString>,
    /// Prefix of project keys.
    pub key_prefix: String,
    /// Prefix of admin keys.
    pub admin_key_prefix: String,
    /// Earlier project-key prefixes whose issued keys still authenticate (new keys always get `key_prefix`).
    pub accepted_key_prefixes: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Upstreams.
    pub providers: Vec<ProviderConfig>,
    /// The public catalog; empty means the built-in `echo` model alone.
    pub models: Vec<ModelConfig>,
    /// Plan tiers; empty means free, pro and enterprise as documented.
    pub plans: Plans,
    /// The largest `n` (choices per chat completion) accepted; each choice is held for.
    pub max_choices: u64,
    /// What an answered request's charge survives: power loss (`fsync`, the default) or a crash (`process`).
    pub durability: Durability,
    /// After SIGTERM or Ctrl-C, how long connections may take to finish before they are cut.
    pub shutdown_timeout_seconds: u64,
    /// A request head not complete this long after the connection opened, or after its first byte on a
    /// keep-alive connection: the connection is closed.
    pub header_read_timeout_seconds: u64,
    /// The longest wait between two reads of a request body; then 408 and the connection is closed.
    pub body_read_timeout_seconds: u64,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout_seconds: u64,
    /// Open client connections at most; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Unknown or malformed keys a source address may send per minute before it gets 429 without any store read;
    /// 0 turns the limit off.
    pub auth_failures_per_minute: u64,
    /// Audit events older than this many days are pruned (each chain keeps an anchor, so the rest still
    /// verifies); 0 keeps them forever.
    pub audit_retention_days: u64,
    /// How long an `Idempotency-Key` replays its first request's response, from that request (1 to 720 hours).
    pub idempotency_window_hours: u64,
    /// GitHub's secret scanning partner program; absent, `POST /secret_scanning/v1/github` answers 404.
    pub secret_scanning: Option<SecretScanningConfig>,
    /// A dashboard session unused for this many minutes ends (1 to 1440).
    pub dashboard_session_idle_minutes: u64,
    /// A dashboard session ends this many hours after sign-in, however much it is used (1 to 720).
    pub dashboard_session_hours: u64,
    /// Marks the dashboard's cookies `Secure` (sent over HTTPS only). The server itself listens on plain HTTP, so it
    /// cannot tell: set this when clients reach it through a TLS-terminating proxy, as any deployment beyond
    /// localhost should.
    pub dashboard_secure_cookie: bool,
}

/// `[secret_scanning]`: the public keys GitHub signs its leaked-key reports with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretScanningConfig {
    /// Keys by the identifier GitHub sends in `GITHUB-PUBLIC-KEY-IDENTIFIER`.
    pub public_keys: Vec<PublicKeyConfig>,
}

/// One of GitHub's public keys, as GitHub publishes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// Its `key_identifier`.
    pub id: String,
    /// Its `key`: a P-256 public key, `-----BEGIN PUBLIC KEY-----…`.
    pub pem: String,
}

/// The longest audit retention: 1,000 years (a cut-off this far back is keeping forever; the bound keeps the
/// arithmetic far from overflow).
const MAX_RETENTION_DAYS: u64 = 365_250;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            database_url: "sqlite://tollgate-data/tollgate.db".into(),
            redis_url: None,
            rate_limit_fail: FailPolicy::Open,
            operator_token: None,
            key_prefix: "sk_live_".to_owned(),
            admin_key_prefix: "sk_admin_".to_owned(),
            accepted_key_prefixes: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            trusted_proxies: Vec::new(),
            providers: Vec::new(),
            models: Vec::new(),
            plans: Plans::new(),
            max_choices: DEFAULT_MAX_CHOICES,
            durability: Durability::Fsync,
            shutdown_timeout_seconds: 30,
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            idle_timeout_seconds: 75,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            audit_retention_days: 0,
            idempotency_window_hours: DEFAULT_IDEMPOTENCY_WINDOW_HOURS,
            secret_scanning: None,
            dashboard_session_idle_minutes: DEFAULT_DASHBOARD_SESSION_IDLE_MINUTES,
            dashboard_session_hours: DEFAULT_DASHBOARD_SESSION_HOURS,
            dashboard_secure_cookie: false,
        }
    }
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Referenced by models.
    pub id: String,
    /// `openai`: any OpenAI-compatible upstream.
    pub kind: String,
    /// e.g. `http://127.0.0.1:9100/v1`.
    pub base_url: String,
    /// Environment variable holding the upstream credential.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Upper bound on waiting for the upstream's answer and for each stream chunk (default 60 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_MS
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public id.
    pub id: String,
    /// A provider id, or `builtin` for the echo model.
    pub provider: String,
    /// Name sent upstream.
    pub upstream_model: String,
    /// Cents per million input tokens.
    #[serde(default)]
    pub input_cents_per_million_tokens: u64,
    /// Cents per million output tokens.
    #[serde(default)]
    pub output_cents_per_million_tokens: u64,
    /// Held when a request sets no maximum.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u64,
    /// Input tokens held per image part; absent: the model takes no images (400).
    #[serde(default)]
    pub max_image_tokens: Option<u64>,
}

fn default_max_output_tokens() -> u64 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

impl Config {
    /// Reads `path` (or the embedded defaults when `None`), applies the environment overrides, validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text)?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML without validating.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies `TOLLGATE_*` overrides read through `var`; an empty variable counts as unset.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let get = |name| var(name).filter(|v: &String| !v.is_empty());
        if let Some(v) = get("TOLLGATE_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("TOLLGATE_DATABASE_URL") {
            self.database_url = v.into();
        }
        if let Some(v) = get("TOLLGATE_OPERATOR_TOKEN") {
            self.operator_token = Some(v.into());
        }
        if let Some(v) = get("TOLLGATE_REDIS_URL") {
            self.redis_url = Some(v.into());
        }
    }

    /// Checks everything that parses but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.key_prefixes()?;
        self.secret_scanning_keys()?;
        if let Some(url) = &self.redis_url {
            tollgate_redis::validate_url(url.expose_secret())
                .map_err(|e| invalid("redis_url", e.to_string()))?;
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1"));
        }
        if !(1..=MAX_MAX_CHOICES).contains(&self.max_choices) {
            return Err(invalid(
                "max_choices",
                format!("must be from 1 to {MAX_MAX_CHOICES}"),
            ));
        }
        for (field, seconds) in [
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds),
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("body_read_timeout_seconds", self.body_read_timeout_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
        ] {
            if seconds == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if !(1..=MAX_IDEMPOTENCY_WINDOW_HOURS).contains(&self.idempotency_window_hours) {
            return Err(invalid(
                "idempotency_window_hours",
                format!("must be from 1 to {MAX_IDEMPOTENCY_WINDOW_HOURS}"),
            ));
        }
        if !(1..=MAX_DASHBOARD_SESSION_IDLE_MINUTES).contains(&self.dashboard_session_idle_minutes)
        {
            return Err(invalid(
                "dashboard_session_idle_minutes",
                format!("must be from 1 to {MAX_DASHBOARD_SESSION_IDLE_MINUTES}"),
            ));
        }
        if !(1..=MAX_DASHBOARD_SESSION_HOURS).contains(&self.dashboard_session_hours) {
            return Err(invalid(
                "dashboard_session_hours",
                format!("must be from 1 to {MAX_DASHBOARD_SESSION_HOURS}"),
            ));
        }
        if self.audit_retention_days > MAX_RETENTION_DAYS {
            return Err(invalid(
                "audit_retention_days",
                format!("must be from 0 (keep forever) to {MAX_RETENTION_DAYS}"),
            ));
        }
        // A semaphore larger than this panics when it is built.
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        if self.max_connections == 0 || self.max_connections > most {
            return Err(invalid(
                "max_connections",
                format!("must be from 1 to {most}"),
            ));
        }
        if self
            .operator_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 8)
        {
            return Err(invalid("operator_token", "must be at least 8 characters"));
        }
        let mut provider_ids = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let field = |f: &str| format!("providers[{i}].{f}");
            if p.id.is_empty() || p.id == ECHO_PROVIDER {
                return Err(invalid(
                    field("id"),
                    format!("must be non-empty and not {ECHO_PROVIDER:?}"),
                ));
            }
            if !provider_ids.insert(p.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("duplicate provider id {:?}", p.id),
                ));
            }
            if p.kind != "openai" {
                return Err(invalid(
                    field("kind"),
                    format!("unknown kind {:?} (supported: \"openai\")", p.kind),
                ));
            }
            let url_ok = (p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
                && p.base_url.len() > "https://".len();
            if !url_ok {
                return Err(invalid(
                    field("base_url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if p.timeout_ms == 0 {
                return Err(invalid(field("timeout_ms"), "must be at least 1"));
            }
            if let Some(env) = &p.api_key_env
                && std::env::var(env).map(|v| v.is_empty()).unwrap_or(true)
            {
                return Err(invalid(
                    field("api_key_env"),
                    format!("environment variable {env} is not set"),
                ));
            }
        }
        let mut model_ids = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let field = |f: &str| format!("models[{i}].{f}");
            if m.id.is_empty() {
                return Err(invalid(field("id"), "must be non-empty"));
            }
            if !model_ids.insert(m.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("duplicate model id {:?}", m.id),
                ));
            }
            if m.provider == ECHO_PROVIDER {
                if m.upstream_model != ECHO_MODEL {
                    return Err(invalid(
                        field("upstream_model"),
                        "the builtin provider serves only \"echo\"",
                    ));
                }
            } else if !provider_ids.contains(m.provider.as_str()) {
                return Err(invalid(
                    field("provider"),
                    format!("unknown provider {:?}", m.provider),
                ));
            }
            if m.max_output_tokens == 0 {
                return Err(invalid(field("max_output_tokens"), "must be at least 1"));
            }
        }
        for (name, plan) in &self.plans {
            if plan.requests_per_minute == 0 || plan.tokens_per_minute == 0 {
                return Err(invalid(
                    format!("plans.{name}"),
                    "rate limits must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.listen),
            )
        })
    }

    /// The validated key prefixes, earlier project prefixes included.
    pub fn key_prefixes(&self) -> Result<KeyPrefixes, ConfigError> {
        KeyPrefixes::new(&self.key_prefix, &self.admin_key_prefix)
            .map_err(|e| invalid("key_prefix/admin_key_prefix", e.to_string()))?
            .accepting(&self.accepted_key_prefixes)
            .map_err(|e| invalid("accepted_key_prefixes", e.to_string()))
    }

    /// GitHub's public keys, parsed; `None` without a `[secret_scanning]` section. A key that does not parse is an
    /// error naming it, so a bad PEM stops the start rather than every report.
    pub fn secret_scanning_keys(&self) -> Result<Option<GithubKeys>, ConfigError> {
        let Some(section) = &self.secret_scanning else {
            return Ok(None);
        };
        if section.public_keys.is_empty() {
            return Err(invalid(
                "secret_scanning.public_keys",
                "must list at least one key",
            ));
        }
        let mut keys = GithubKeys::default();
        for (i, k) in section.public_keys.iter().enumerate() {
            keys.insert(&k.id, &k.pem)
                .map_err(|e| invalid(format!("secret_scanning.public_keys[{i}]"), e.to_string()))?;
        }
        Ok(Some(keys))
    }

    /// The plans in force: the configured ones, or the documented defaults.
    pub fn effective_plans(&self) -> Plans {
        if self.plans.is_empty() {
            default_plans()
        } else {
            self.plans.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::from_toml(text).and_then(|c| c.validate().map(|()| c)) {
            Ok(_) => String::from("ok"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(
            c.database_url.expose_secret(),
            "sqlite://tollgate-data/tollgate.db"
        );
        assert_eq!(c.effective_plans().len(), 3);
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(
            err("listn = \"x\"").contains("listn"),
            "{}",
            err("listn = \"x\"")
        );
        assert!(err("max_body_bytes = \"big\"").contains("max_body_bytes"));
        assert!(err("listen = \"nowhere\"").contains("listen"));
        assert!(err("key_prefix = \"x\"").contains("key_prefix"));
        let m = "[[models]]\nid = \"fast\"\nprovider = \"nope\"\nupstream_model = \"m\"\n";
        assert!(err(m).contains("models[0].provider"), "{}", err(m));
        let p = "[[providers]]\nid = \"a\"\nkind = \"grpc\"\nbase_url = \"http://x/v1\"\n";
        assert!(err(p).contains("providers[0].kind"), "{}", err(p));
        let k = "[[providers]]\nid = \"a\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\napi_key_env = \"TOLLGATE_TEST_SURELY_UNSET\"\n";
        assert!(err(k).contains("providers[0].api_key_env"), "{}", err(k));
    }

    #[test]
    fn connection_limits_have_the_documented_defaults_and_must_be_positive() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.shutdown_timeout_seconds, 30);
        assert_eq!(c.header_read_timeout_seconds, 10);
        assert_eq!(c.body_read_timeout_seconds, 30);
        assert_eq!(c.idle_timeout_seconds, 75);
        assert_eq!(c.max_connections, 10_000);
        for field in [
            "shutdown_timeout_seconds",
            "header_read_timeout_seconds",
            "body_read_timeout_seconds",
            "idle_timeout_seconds",
            "max_connections",
        ] {
            let text = format!("{field} = 0");
            assert!(err(&text).contains(field), "{}", err(&text));
            assert_eq!(err(&format!("{field} = 1")), "ok");
        }
        assert!(err("max_connections = -1").contains("max_connections"));
        let huge = format!("max_connections = {}", i64::MAX);
        assert!(err(&huge).contains("max_connections"), "{}", err(&huge));
    }

    #[test]
    fn accepted_key_prefixes_are_validated_like_key_prefix() {
        assert!(Config::default().accepted_key_prefixes.is_empty());
        assert_eq!(
            err("key_prefix = \"btoo_\"\naccepted_key_prefixes = [\"sk_live_\"]"),
            "ok"
        );
        for bad in ["\"sk\"", "\"sk_test\"", "\"sk_admin_\""] {
            let text = format!("accepted_key_prefixes = [{bad}]");
            assert!(
                err(&text).contains("accepted_key_prefixes"),
                "{}",
                err(&text)
            );
        }
    }

    #[test]
    fn secret_scanning_keys_are_parsed_at_start_up_and_a_bad_one_is_named() {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        assert!(Config::default().secret_scanning_keys().unwrap().is_none());
        let pem = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])
            .unwrap()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let section = |keys: &str| format!("[secret_scanning]\npublic_keys = [{keys}]");
        let good = format!("{{ id = \"gh-1\", pem = '''{pem}''' }}");
        let c = Config::from_toml(&section(&good)).unwrap();
        c.validate().unwrap();
        assert!(c.secret_scanning_keys().unwrap().is_some());
        let e = err(&section(""));
        assert!(e.contains("secret_scanning.public_keys"), "{e}");
        let e = err(&section(&format!(
            "{good}, {{ id = \"gh-2\", pem = \"nope\" }}"
        )));
        assert!(
            e.contains("secret_scanning.public_keys[1]") && e.contains("\"gh-2\""),
            "{e}"
        );
        let e = err(&section(&format!("{good}, {good}")));
        assert!(e.contains("duplicate id \"gh-1\""), "{e}");
        let e = err(&section("{ id = \"a\", pem = \"x\", extra = 1 }"));
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn dashboard_sessions_have_the_documented_defaults_and_bounds() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.dashboard_session_idle_minutes, 60);
        assert_eq!(c.dashboard_session_hours, 12);
        assert!(!c.dashboard_secure_cookie);
        for (field, most) in [
            ("dashboard_session_idle_minutes", 1_440),
            ("dashboard_session_hours", 720),
        ] {
            for bad in [0, most + 1] {
                let text = format!("{field} = {bad}");
                assert!(err(&text).contains(field), "{}", err(&text));
            }
            assert_eq!(err(&format!("{field} = 1")), "ok");
            assert_eq!(err(&format!("{field} = {most}")), "ok");
        }
        let c = Config::from_toml("dashboard_secure_cookie = true").unwrap();
        assert!(c.dashboard_secure_cookie);
    }

    #[test]
    fn durability_is_fsync_unless_set_to_process() {
        assert_eq!(Config::default().durability, Durability::Fsync);
        let c = Config::from_toml("durability = \"process\"").unwrap();
        assert_eq!(c.durability, Durability::Process);
        let e = err("durability = \"sometimes\"");
        assert!(e.contains("durability"), "{e}");
    }

    #[test]
    fn env_overrides_the_file() {
        let mut c = Config::from_toml("listen = \"127.0.0.1:1\"").unwrap();
        c.apply_env(|name| match name {
            "TOLLGATE_LISTEN" => Some("127.0.0.1:2".into()),
            "TOLLGATE_OPERATOR_TOKEN" => Some("secret-token".into()),
            "TOLLGATE_DATABASE_URL" => Some(String::new()),
            _ => None,
        });
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(
            c.operator_token.as_ref().map(ExposeSecret::expose_secret),
            Some("secret-token")
        );
        assert_eq!(
            c.database_url.expose_secret(),
            "sqlite://tollgate-data/tollgate.db"
        );
    }

    #[test]
    fn the_operator_token_never_prints() {
        let from_file = Config::from_toml("operator_token = \"file-secret-token\"").unwrap();
        assert_eq!(
            from_file
                .operator_token
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("file-secret-token")
        );
        let mut from_env = Config::default();
        from_env.apply_env(|name| {
            (name == "TOLLGATE_OPERATOR_TOKEN").then(|| "env-secret-token".to_owned())
        });
        for (config, secret) in [
            (from_file, "file-secret-token"),
            (from_env, "env-secret-token"),
        ] {
            for shown in [format!("{config:?}"), format!("{config:#?}")] {
                assert!(!shown.contains(secret), "{shown}");
                assert!(shown.contains("operator_token"), "{shown}");
            }
        }
        // Database and Redis URLs carry passwords too.
        let urls = Config::from_toml(
            "database_url = \"postgres://app:hunter2@db/x\"\nredis_url = \"redis://:redispass@cache:6379\"",
        )
        .unwrap();
        let shown = format!("{urls:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("redispass"),
            "{shown}"
        );
        assert_eq!(
            urls.database_url.expose_secret(),
            "postgres://app:hunter2@db/x"
        );
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_quoting_it() {
        let ok = Config::from_toml("redis_url = \"redis://:pw@cache:6379/0\"").unwrap();
        ok.validate().unwrap();
        let bad = Config::from_toml("redis_url = \"http://:redispass@cache:6379\"").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("redis_url") && !err.contains("redispass"),
            "{err}"
        );
    }
}
