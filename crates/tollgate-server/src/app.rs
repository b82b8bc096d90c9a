//! `AppState`: everything a request needs, built once at start-up and shared behind one `Arc`.

use crate::change_log::ChangeFollower;
use crate::config::Config;
use crate::credits::{Recorder, Wallets};
use crate::idempotency::Claims;
use crate::key_cache::KeyCache;
use crate::rate_limit::LimiterError;
use crate::retention::Retention;
use crate::service::secret_scanning::GithubKeys;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use tollgate_core::catalog::{Catalog, ECHO_PROVIDER, ModelSpec};
use tollgate_core::key::KeyPrefixes;
use tollgate_core::plan::Plans;
use tollgate_core::ports::{Clock, Provider, RateLimiter, Store};
use tollgate_providers::{EchoProvider, OpenAiProvider};

/// The shared application.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The system of record.
    pub store: Arc<dyn Store>,
    /// Public models.
    pub catalog: Catalog,
    /// Providers by id (the echo model's is `builtin`).
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// Project and admin key prefixes.
    pub prefixes: KeyPrefixes,
    /// Plans in force.
    pub plans: Plans,
    /// GitHub's public keys for leaked-key reports; `None`: the receiver is off (404).
    pub secret_scanning: Option<GithubKeys>,
    /// Authenticated keys, so the hot path needs no storage round trip.
    pub keys: KeyCache,
    /// Keeps `keys` in step with changes made on other nodes and by the CLI.
    pub changes: ChangeFollower,
    /// Prunes the audit log past its retention, and ended dashboard sessions.
    pub retention: Retention,
    /// This node's `Idempotency-Key` claims: their identity, renewal and the pruning of expired records.
    pub claims: Claims,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-minute limits on requests, tokens and failed authentications: on Redis when `redis_url` is set (shared by
    /// every node), else in this process ([`crate::rate_limit::build`] picks it).
    pub limiter: Arc<dyn RateLimiter>,
    /// Holds, against this node's leases on tenants' balances.
    pub wallets: Arc<Wallets>,
    /// Writes settlements in group commits.
    pub recorder: Recorder,
    /// Work a request starts that must finish even if its client leaves (upstream calls, stream pumps): shutdown
    /// waits for it before flushing the recorder.
    pub tasks: TaskTracker,
}

/// A cheap handle on the [`App`], cloned into every request.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// Why the application could not be assembled from a (validated) configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A config value that validation could not check alone.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The rate limiter could not be built (`redis_url`).
    #[error(transparent)]
    RateLimiter(#[from] LimiterError),
    /// A provider could not be built.
    #[error("providers[{index}]: {message}")]
    Provider {
        /// Position in the config.
        index: usize,
        /// Why.
        message: String,
    },
}

impl App {
    /// Builds the providers, catalog and caches for `config`, and starts the recorder, the credit keeper and the
    /// change-log follower (so it needs a Tokio runtime).
    pub fn build(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, BuildError> {
        config.validate()?;
        let prefixes = config.key_prefixes()?;
        let secret_scanning = config.secret_scanning_keys()?;
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert(ECHO_PROVIDER.to_owned(), Arc::new(EchoProvider::new()));
        for (index, p) in config.providers.iter().enumerate() {
            let api_key = p
                .api_key_env
                .as_deref()
                .and_then(|name| std::env::var(name).ok());
            let provider = OpenAiProvider::new(
                &p.base_url,
                api_key.as_deref(),
                Duration::from_millis(p.timeout_ms),
            )
            .map_err(|e| BuildError::Provider {
                index,
                message: e.to_string(),
            })?;
            providers.insert(p.id.clone(), Arc::new(provider));
        }
        let now = clock.now();
        let models = if config.models.is_empty() {
            vec![ModelSpec::echo(now)]
        } else {
            config
                .models
                .iter()
                .map(|m| ModelSpec {
                    id: m.id.clone(),
                    provider: m.provider.clone(),
                    upstream_model: m.upstream_model.clone(),
                    input_cents_per_million_tokens: m.input_cents_per_million_tokens,
                    output_cents_per_million_tokens: m.output_cents_per_million_tokens,
                    max_output_tokens: m.max_output_tokens,
                    max_image_tokens: m.max_image_tokens,
                    created: now,
                })
                .collect()
        };
        let plans = config.effective_plans();
        // One id per running process: its leases and its settlements' lease charges carry it.
        let node_id = tollgate_core::id::new_id(tollgate_core::id::NODE);
        let wallets = Wallets::start(node_id.clone(), Arc::clone(&store), Arc::clone(&clock));
        let limiter = crate::rate_limit::build(&config, Arc::clone(&clock))?;
        let claims = Claims::new(node_id.clone(), config.idempotency_window_hours);
        let app = Arc::new(Self {
            config,
            catalog: Catalog::new(models),
            providers,
            prefixes,
            plans,
            secret_scanning,
            keys: KeyCache::following(),
            changes: ChangeFollower::new(),
            retention: Retention::new(),
            claims,
            clock,
            limiter,
            recorder: Recorder::start(Arc::clone(&store), node_id),
            wallets,
            store,
            tasks: TaskTracker::new(),
        });
        app.changes.start(Arc::downgrade(&app));
        app.retention
            .start(Arc::downgrade(&app), app.config.audit_retention_days);
        app.claims.start(Arc::downgrade(&app));
        Ok(AppState(app))
    }

    /// Finishes what requests started, after the server has stopped serving: stops following the change log (no
    /// request will authenticate any more), waits for request tasks (upstream calls, stream pumps), then has the
    /// recorder write every settlement still queued, then returns this node's credit leases, all within `timeout`.
    pub async fn close(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.changes.close().await;
        self.retention.close().await;
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "shutdown timeout: request tasks still running are cut short"
            );
        }
        self.claims.close().await;
        self.recorder
            .close(deadline.saturating_duration_since(Instant::now()))
            .await;
        // Every charge is in: what is still leased goes back, for other nodes to reserve.
        if tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.wallets.close(),
        )
        .await
        .is_err()
        {
            tracing::warn!("shutdown timeout: credit leases left to expire");
        }
    }
}
