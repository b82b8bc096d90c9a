//! `Idempotency-Key` on POST requests (API.md, Stripe's rules): the request's [`Slot`], the claim that decides
//! whether it executes, replays or is refused, and the node's [`Claims`] (renewing what it holds, pruning what
//! expired).
//!
//! The edge layer ([`crate::middleware::idempotency`]) opens a slot for a POST that sends the header (400 for a bad
//! key). The request's body is fingerprinted when its route reads it, which is after authentication (so nobody's
//! body is read before their key is known). The key is then claimed in the request's scope: for management
//! requests by the body extractor (the admin-key and operator extractors say the scope), for inference by the
//! pipeline's idempotency stage, after the rate limit. A claim either lets the request execute, holding the key ([`Held`]), or stops it: 409 while the first
//! is running, 422 for another request under the same key, or the stored response replayed
//! ([`ApiError::Replayed`]). A held key is completed with the response (by the settlement, in the charge's
//! transaction, for inference; by the edge once the response is known, for management) or released, so a retry
//! executes afresh: 5xx and malformed requests are not stored ([`is_stored`]). A held key dropped unended is released in the background.

use crate::app::{App, AppState};
use crate::error::ApiError;
use axum::http::StatusCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollgate_core::audit::AuditEvent;
use tollgate_core::idempotency::{
    CLAIM_LEASE_SECONDS, Claim, ClaimMark, ClaimOutcome, ClaimRef, Completion, Fingerprint,
    StoredResponse,
};

/// How often a node renews the claims it holds: well within [`CLAIM_LEASE_SECONDS`].
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a node prunes records past their window.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Records deleted per statement while pruning: a backlog goes in short transactions.
const PRUNE_BATCH: u32 = 1_000;

/// One node's part in idempotency: its identity on its claims, how many it holds, and the task that renews them
/// and prunes expired records. Started by `App::build`, stopped by `App::close`.
#[derive(Debug)]
pub struct Claims {
    node_id: String,
    /// The host and listening address, once the server listens (until then, the node id stands in).
    instance: OnceLock<String>,
    window_seconds: i64,
    live: AtomicUsize,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Claims {
    /// A node's claims, replayable for `window_hours`.
    pub fn new(node_id: String, window_hours: u64) -> Self {
        Self {
            node_id,
            instance: OnceLock::new(),
            window_seconds: i64::try_from(window_hours)
                .unwrap_or(i64::MAX)
                .saturating_mul(3_600),
            live: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Starts renewing and pruning for `app`, which it holds weakly.
    pub fn start(&self, app: Weak<App>) {
        self.tasks
            .spawn(self.stop.clone().run_until_cancelled_owned(keep(app)));
        self.tasks.close();
    }

    /// Stops the task (the server is stopping; its requests have finished).
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }

    /// The server listens on `address`: its claims carry this host and address from now on, and what a dead
    /// predecessor on the same host and address held is released at once (no live process can have it: the port
    /// is this one's).
    pub async fn listening(&self, state: &AppState, address: std::net::SocketAddr) {
        let instance = format!("{}/{address}", host_name());
        match state
            .store
            .release_instance_idempotency(&instance, &self.node_id)
            .await
        {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                released,
                "released the idempotency keys a previous run of this server held"
            ),
            Err(error) => tracing::warn!(
                %error,
                "could not release a previous run's idempotency keys; they free themselves within {CLAIM_LEASE_SECONDS} s"
            ),
        }
        let _ = self.instance.set(instance);
    }

    fn instance(&self) -> &str {
        self.instance.get().map_or(&self.node_id, String::as_str)
    }
}

/// The machine's name, for telling servers on different hosts apart: Linux's, else `$HOSTNAME`, else nothing.
/// (Read from procfs rather than through a crate: the standard library has no call for it, and this is all we need.)
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Renews this node's claims while it holds any, and prunes expired records now and then.
async fn keep(app: Weak<App>) {
    let mut since_prune = PRUNE_EVERY;
    loop {
        {
            let Some(app) = app.upgrade() else {
                return;
            };
            let claims = &app.claims;
            if claims.live.load(Ordering::Relaxed) > 0 {
                let until = app.clock.now().saturating_add(CLAIM_LEASE_SECONDS);
                if let Err(error) = app.store.renew_idempotency(&claims.node_id, until).await {
                    tracing::warn!(%error, "renewing this node's idempotency keys failed");
                }
            }
            if since_prune >= PRUNE_EVERY {
                since_prune = Duration::ZERO;
                prune(&app).await;
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
        since_prune += RENEW_EVERY;
    }
}

async fn prune(app: &App) {
    let now = app.clock.now();
    loop {
        match app.store.prune_idempotency(now, PRUNE_BATCH).await {
            Ok(n) if n >= u64::from(PRUNE_BATCH) => continue,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, "pruning expired idempotency keys failed");
                return;
            }
        }
    }
}

/// One request's idempotency, in its extensions (only a POST with the header has one): its key, path and request
/// id, and once known the request's fingerprint (set when its body is read) and, for a management route, the scope
/// to claim it in once the body is read (set by the authentication extractor).
#[derive(Debug, Clone)]
pub struct Slot(Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    key: String,
    /// The request's path with its query: the fingerprint covers it.
    path: String,
    /// The request's id, recorded with its claim (a replay's event names it).
    request_id: String,
    fingerprint: OnceLock<Fingerprint>,
    claim_at_body: OnceLock<BodyClaim>,
    /// The claim a management request holds, shared with the origin of the events its change writes, so the store
    /// locks the claim with the change.
    mark: ClaimMark,
    /// A `std` mutex, held for a few instructions, never across an await.
    held: Mutex<Option<Held>>,
}

/// A management route's claim, made once its body is read: the scope, and the `request.replayed` event a replay
/// writes (none for the operator, whose requests belong to no tenant's log).
#[derive(Debug)]
struct BodyClaim {
    scope: String,
    replay_event: Option<Box<AuditEvent>>,
}

impl Slot {
    /// A slot for `key`, sent with the POST to `path` (with its query) whose id is `request_id`.
    pub fn new(key: String, path: &str, request_id: &str) -> Self {
        Self(Arc::new(SlotInner {
            key,
            path: path.to_owned(),
            request_id: request_id.to_owned(),
            fingerprint: OnceLock::new(),
            claim_at_body: OnceLock::new(),
            mark: ClaimMark::default(),
            held: Mutex::new(None),
        }))
    }

    /// A management request authenticated in `scope`: the key is claimed once the body is read (see
    /// [`Slot::body_read`]), and a replay writes `replay_event`.
    pub fn claim_at_body(&self, scope: &str, replay_event: Option<AuditEvent>) {
        let _ = self.0.claim_at_body.set(BodyClaim {
            scope: scope.to_owned(),
            replay_event: replay_event.map(Box::new),
        });
    }

    /// The request's body was read: its fingerprint. For a management request, the claim: `Ok` when it executes
    /// holding the key (the edge completes or releases it once the answer is known), else the answer instead (409,
    /// 422, or the replay, audited).
    pub async fn body_read(&self, state: &AppState, body: &[u8]) -> Result<(), ApiError> {
        let _ = self
            .0
            .fingerprint
            .set(Fingerprint::of("POST", &self.0.path, body));
        let Some(at_body) = self.0.claim_at_body.get() else {
            return Ok(());
        };
        match self.claim(state, &at_body.scope).await {
            Ok(held) => {
                *self.0.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
                Ok(())
            }
            Err(ApiError::Replayed(replay)) => {
                if let Some(event) = &at_body.replay_event {
                    state
                        .recorder
                        .record(replayed(AuditEvent::clone(event), &replay))
                        .await;
                }
                Err(ApiError::Replayed(replay))
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// Claims the key in `scope`, once the body has been read: `Ok` with the key held (and in the slot's
    /// [`ClaimMark`]) when the request is to execute; otherwise the answer instead of executing it (409, 422, or the
    /// replay).
    pub async fn claim(&self, state: &AppState, scope: &str) -> Result<Held, ApiError> {
        let claims = &state.claims;
        let now = state.clock.now();
        let claim = Claim {
            scope: scope.to_owned(),
            key: self.0.key.clone(),
            // A route that never reads its body is a request without one.
            fingerprint: *self
                .0
                .fingerprint
                .get_or_init(|| Fingerprint::of("POST", &self.0.path, b"")),
            claim_id: tollgate_core::id::new_id(tollgate_core::id::IDEMPOTENCY_CLAIM),
            node_id: claims.node_id.clone(),
            instance: claims.instance().to_owned(),
            request_id: self.0.request_id.clone(),
            now,
            locked_until: now.saturating_add(CLAIM_LEASE_SECONDS),
            expires_at: now.saturating_add(claims.window_seconds),
        };
        match state.store.claim_idempotency(&claim).await? {
            ClaimOutcome::Claimed => {
                claims.live.fetch_add(1, Ordering::Relaxed);
                self.0.mark.set(ClaimRef {
                    scope: claim.scope.clone(),
                    key: claim.key.clone(),
                    claim_id: claim.claim_id.clone(),
                });
                Ok(Held {
                    state: state.clone(),
                    scope: claim.scope,
                    key: claim.key,
                    claim_id: claim.claim_id,
                    ended: false,
                })
            }
            ClaimOutcome::InFlight => Err(ApiError::IdempotencyKeyInUse),
            ClaimOutcome::Mismatch => Err(ApiError::IdempotencyKeyReused),
            ClaimOutcome::Completed {
                response,
                request_id,
            } => Err(ApiError::Replayed(Box::new(Replay {
                response,
                request_id,
            }))),
        }
    }

    /// The claim this request will hold (empty until it does), for the origin of the audit events its change
    /// writes.
    pub fn mark(&self) -> ClaimMark {
        self.0.mark.clone()
    }

    /// The key a management request holds, for the edge to complete or release once the answer is known.
    pub fn take(&self) -> Option<Held> {
        self.0
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A stored response being replayed, and the request it was first the answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// What is sent again.
    pub response: StoredResponse,
    /// The id of the request that executed.
    pub request_id: String,
}

/// Whether an answer with `status` is stored for replay: every final answer (API.md), but a 5xx (the retry should
/// run again: the failure was ours or the upstream's) and a request refused as malformed (400, 408, 413, 415:
/// validation, before anything executed, as Stripe).
pub fn is_stored(status: StatusCode) -> bool {
    !status.is_server_error()
        && !matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
        )
}

/// A refusal as stored for replay: its status and error body.
pub fn stored_refusal(refusal: &ApiError) -> StoredResponse {
    StoredResponse {
        status: refusal.status().as_u16(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: serde_json::to_vec(&refusal.body()).unwrap_or_default(),
    }
}

/// `event` (a `request.replayed` event) completed with what the replay answered: its status, and the request that
/// first executed.
pub fn replayed(mut event: AuditEvent, replay: &Replay) -> AuditEvent {
    event.status = Some(replay.response.status);
    replay_of(event, &replay.request_id)
}

/// `event` as a `request.replayed` event: its kind, and `details.replay_of` naming the request that executed.
pub fn replay_of(mut event: AuditEvent, first_request_id: &str) -> AuditEvent {
    event.kind = tollgate_core::audit::EventType::RequestReplayed;
    event.details(&serde_json::json!({ "replay_of": first_request_id }))
}

/// A key this request holds while it executes. End it with [`Held::complete`], [`Held::release`], or (for a
/// settlement) [`Held::completion`] and [`Held::ended`]; dropped unended, it is released in the background.
pub struct Held {
    state: AppState,
    scope: String,
    key: String,
    claim_id: String,
    ended: bool,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("scope", &self.scope)
            .field("claim_id", &self.claim_id)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// What a settlement stores for this key, in its transaction; once it has committed, call [`Held::ended`].
    pub fn completion(&self, response: StoredResponse) -> Completion {
        Completion {
            scope: self.scope.clone(),
            key: self.key.clone(),
            claim_id: self.claim_id.clone(),
            response,
        }
    }

    /// The settlement that carried [`Held::completion`] has committed: nothing more to do.
    pub fn ended(mut self) {
        self.ended = true;
    }

    /// Stores `response` for retries.
    pub async fn complete(mut self, response: StoredResponse) {
        self.ended = true;
        let completion = self.completion(response);
        match self.state.store.complete_idempotency(&completion).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "an idempotency key was taken over while its request ran (its lease lapsed); its response is not stored"
            ),
            Err(error) => {
                tracing::warn!(%error, "storing a response for its idempotency key failed; releasing the key");
                release(&self.state, &self.scope, &self.key, &self.claim_id).await;
            }
        }
    }

    /// Frees the key: the request ended without a response to replay (refused, or failed), and a retry executes.
    pub async fn release(mut self) {
        self.ended = true;
        release(&self.state, &self.scope, &self.key, &self.claim_id).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.state.claims.live.fetch_sub(1, Ordering::Relaxed);
        if self.ended {
            return;
        }
        // A failure path, which cannot wait here: the release runs on the app's tracker.
        let state = self.state.clone();
        let (scope, key, claim_id) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.claim_id),
        );
        self.state.tasks.spawn(async move {
            release(&state, &scope, &key, &claim_id).await;
        });
    }
}

async fn release(state: &AppState, scope: &str, key: &str, claim_id: &str) {
    if let Err(error) = state.store.release_idempotency(scope, key, claim_id).await {
        tracing::warn!(%error, "releasing an idempotency key failed; it frees itself within {CLAIM_LEASE_SECONDS} s");
    }
}
