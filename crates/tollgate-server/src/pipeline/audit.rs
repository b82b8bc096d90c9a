//! Audit: every inference request that identified a project key leaves exactly one `request.completed` event,
//! answered or refused (`request.replayed` for an idempotent replay). The edge layer ([`crate::middleware::edge`]) opens an [`AuditSlot`] for each request and
//! finishes it with the response's status; authentication fills it once a key is identified (refused keys included), policy adds the model. A
//! request that reaches its hold hands the event to its bill ([`Claim`]): the settlement writes it with the charge,
//! in the same transaction; a bill given up before the response (an upstream failure) hands it back, and the slot
//! writes it with the error's status. A refused request's event goes to the recorder's next batch: the answer never
//! waits for that commit. A request that identified no key (missing, malformed, unknown) writes nothing.

use crate::app::AppState;
use axum::extract::Request;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tollgate_core::audit::{AuditEvent, Origin};
use tollgate_core::catalog::ModelSpec;
use tollgate_core::tenant::{KeyOwner, Principal, Timestamp};

/// One request's audit outcome, in its extensions: cheap to clone (a reference count).
#[derive(Debug, Clone)]
pub struct AuditSlot(Arc<Slot>);

#[derive(Debug)]
struct Slot {
    /// When the request arrived: latencies count from here.
    started: Instant,
    /// A `std` mutex: it is held for a few instructions, never across an await.
    stage: Mutex<Stage>,
}

#[derive(Debug)]
enum Stage {
    /// No key identified (yet).
    Open,
    /// A key was identified; the slot writes the event when the response is known.
    Identified(Box<Pending>),
    /// A bill took the event: its settlement writes it.
    Claimed,
    /// The response is out: nothing more is written from here.
    Closed,
}

/// What the event of an identified request is made of.
#[derive(Debug)]
struct Pending {
    principal: Arc<Principal>,
    origin: Origin,
    model: Option<Arc<ModelSpec>>,
    /// The request a replayed answer first came from: the event is `request.replayed`.
    replay_of: Option<String>,
}

impl AuditSlot {
    fn new() -> Self {
        Self(Arc::new(Slot {
            started: Instant::now(),
            stage: Mutex::new(Stage::Open),
        }))
    }

    fn stage(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.0.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request identified `principal`'s key; `origin` is read only the first time.
    pub fn identify(&self, principal: &Arc<Principal>, origin: impl FnOnce() -> Origin) {
        let mut stage = self.stage();
        if matches!(*stage, Stage::Open) {
            *stage = Stage::Identified(Box::new(Pending {
                principal: Arc::clone(principal),
                origin: origin(),
                model: None,
                replay_of: None,
            }));
        }
    }

    /// The public model the request asks for.
    pub fn record_model(&self, spec: &Arc<ModelSpec>) {
        if let Stage::Identified(pending) = &mut *self.stage() {
            pending.model = Some(Arc::clone(spec));
        }
    }

    /// The request is answered with the stored response of `request_id`'s (its `Idempotency-Key`'s first
    /// execution): its event is `request.replayed`.
    pub fn replayed(&self, request_id: &str) {
        if let Stage::Identified(pending) = &mut *self.stage() {
            pending.replay_of = Some(request_id.to_owned());
        }
    }

    /// Hands the event to the request's bill.
    pub fn claim(&self) -> Claim {
        let mut stage = self.stage();
        let pending = match std::mem::replace(&mut *stage, Stage::Claimed) {
            Stage::Identified(pending) => Some(pending),
            other => {
                *stage = other;
                None
            }
        };
        Claim {
            slot: pending.is_some().then(|| self.clone()),
            pending,
        }
    }

    fn latency_ms(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The response is out with `status`: the event to write, if the slot still holds one.
    fn close(&self, status: u16, now: Timestamp) -> Option<AuditEvent> {
        let stage = std::mem::replace(&mut *self.stage(), Stage::Closed);
        match stage {
            Stage::Identified(pending) => Some(pending.event(status, self.latency_ms(), now)),
            Stage::Open | Stage::Claimed | Stage::Closed => None,
        }
    }
}

impl Pending {
    /// The event of a request that was not settled: its status, no tokens, nothing charged.
    fn event(self, status: u16, latency_ms: u64, now: Timestamp) -> AuditEvent {
        let key = &self.principal.key;
        // Built with an empty origin, then given this one: it moves instead of being copied.
        let mut event = AuditEvent::request_completed(
            &key.tenant_id,
            &key.id,
            &key.last4,
            now,
            &Origin::default(),
            status,
            latency_ms,
        );
        event.origin = self.origin;
        if let KeyOwner::Project(project) = &key.owner {
            event.project_id = Some(project.clone());
        }
        event.model = self.model.map(|m| m.id.clone());
        if let Some(first) = self.replay_of {
            event = crate::idempotency::replay_of(event, &first);
        }
        event
    }
}

/// A bill's hold on its request's event. Settling takes it ([`Claim::settled`]); a bill dropped unsettled gives it
/// back to the slot, which writes it with the response's status; [`Claim::release`] does so explicitly, or returns
/// the event when the response has already gone (a stream that ends with nothing to settle).
#[derive(Debug, Default)]
pub struct Claim {
    slot: Option<AuditSlot>,
    pending: Option<Box<Pending>>,
}

impl Claim {
    /// The settlement writes the event: its origin and the latency until now.
    pub fn settled(&mut self) -> (Origin, u64) {
        let latency = self.slot.as_ref().map_or(0, AuditSlot::latency_ms);
        let origin = self.pending.take().map(|p| p.origin).unwrap_or_default();
        (origin, latency)
    }

    /// Gives the event back, to be written with `status`: `Some` when the response is already out (the caller
    /// writes it), `None` when the slot will.
    pub fn release(mut self, status: u16, now: Timestamp) -> Option<AuditEvent> {
        let (slot, pending) = (self.slot.take()?, self.pending.take()?);
        let mut stage = slot.stage();
        if matches!(*stage, Stage::Claimed) {
            *stage = Stage::Identified(pending);
            return None;
        }
        drop(stage);
        Some(pending.event(status, slot.latency_ms(), now))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let (Some(slot), Some(pending)) = (self.slot.take(), self.pending.take()) {
            let mut stage = slot.stage();
            if matches!(*stage, Stage::Claimed) {
                *stage = Stage::Identified(pending);
            }
        }
    }
}

impl AuditSlot {
    /// Opens the slot of `request`, in its extensions, for the stages that follow.
    pub fn open(request: &mut Request) -> Self {
        let slot = Self::new();
        request.extensions_mut().insert(slot.clone());
        slot
    }

    /// The response is out with `status`: queues the event the slot still holds (an identified request that no
    /// settlement recorded) for the recorder's next batch. Waits only while the recorder's queue is full, never for
    /// the commit.
    pub async fn finish(&self, state: &AppState, status: u16) {
        if let Some(event) = self.close(status, state.clock.now()) {
            state.recorder.record(event).await;
        }
    }

    /// A guard that, dropped before [`AuditSlot::finish`] ran, writes the event the slot still holds with status
    /// [`CLIENT_CLOSED`]: the server drops a request's future when its client goes away (a body cut off, a
    /// connection closed while the request waits), and a refused request must not escape the log that way.
    pub fn until_finished<'a>(&'a self, state: &'a AppState) -> Unfinished<'a> {
        Unfinished { slot: self, state }
    }
}

/// The status an event records for a request whose client went away before any response: 499, as nginx and most
/// proxies log it.
pub const CLIENT_CLOSED: u16 = 499;

/// See [`AuditSlot::until_finished`].
pub struct Unfinished<'a> {
    slot: &'a AuditSlot,
    state: &'a AppState,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        // After `finish` the slot is closed and this writes nothing.
        if let Some(event) = self.slot.close(CLIENT_CLOSED, self.state.clock.now()) {
            self.state.recorder.record_now(event);
        }
    }
}
