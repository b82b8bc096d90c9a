//! The one layer every request passes before its route, running the request plumbing in order, outermost first:
//! request id (so every response carries one, errors included), access log (it sees every response), the audit
//! slot (outside everything that may refuse a request), the source address, the declared-size check, and a POST's
//! `Idempotency-Key` slot (opened before the route, finished once it has answered).
//!
//! One `from_fn` layer rather than one per step: each layer costs every request a boxed future and a clone of the
//! service inside it (about 3k instructions, BENCHMARKS.md), and these steps need no service of their own.

use crate::app::AppState;
use crate::middleware::{access_log, body_limit, client_ip, idempotency, request_id};
use crate::pipeline::audit::AuditSlot;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Middleware: the request plumbing around every route.
pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let id = request_id::assign(&mut request);
    let line = access_log::Line::begin(&mut request);
    let slot = AuditSlot::open(&mut request);
    let _unfinished = slot.until_finished(&state);
    let response = match client_ip::resolve(&state, &mut request)
        .and_then(|()| body_limit::check(&state, &request))
    {
        Ok(()) => match idempotency::open(&mut request, &id) {
            Ok(key) => {
                let response = next.run(request).await;
                idempotency::finish(&state, key, response).await
            }
            Err(refusal) => refusal.into_response(),
        },
        Err(refusal) => refusal.into_response(),
    };
    slot.finish(&state, response.status().as_u16()).await;
    let mut response = line.finish(&state.prefixes, response);
    request_id::stamp(&mut response, id);
    response
}
