//! One access-log line per request (target `tollgate::access`, level info), and for a 5xx one error line with the
//! server-side detail that `ApiError` left in the response's extensions; both carry the request id.
//!
//! A line says what was asked and by whom: request id, method, path (never the query string), source address,
//! tenant, key id, model, status, latency. It never holds a secret, a query string or a header value other than the
//! request id (which `request_id` admits only as 1–128 visible ASCII characters): keys appear as their ids, and a
//! path segment that looks like a key is cut to the key's visible prefix.

use crate::error::ErrorDetail;
use crate::middleware::client_ip::SourceIp;
use crate::middleware::request_id::RequestId;
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::response::Response;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tollgate_core::key::{KeyPrefixes, VISIBLE_PREFIX_LEN};
use tollgate_core::tenant::Principal;
use tracing::Level;

/// The target of access lines, so they can be filtered on their own (`TOLLGATE_LOG=info,tollgate::access=off`).
pub const TARGET: &str = "tollgate::access";

/// What later stages learn about a request for its access line: where it came from (the client-address layer), who
/// sent it (authentication) and which model it asked for (the inference handler). In the request's extensions
/// while access lines are logged; each fact is recorded once, without a lock.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord(Arc<Facts>);

#[derive(Debug, Default)]
struct Facts {
    source: OnceLock<SourceIp>,
    principal: OnceLock<Arc<Principal>>,
    model: OnceLock<Box<str>>,
}

impl AccessRecord {
    /// Records the request's source address.
    pub fn record_source(&self, source: SourceIp) {
        let _ = self.0.source.set(source);
    }

    /// Records the key the request authenticated with, or was refused for (revoked, outside its allow-list…).
    pub fn record_principal(&self, principal: &Arc<Principal>) {
        let _ = self.0.principal.set(Arc::clone(principal));
    }

    /// Records the public model id the request asked for.
    pub fn record_model(&self, model: &str) {
        let _ = self.0.model.set(model.into());
    }
}

/// A request's access line in the making: opened when the request arrives (after its id is assigned), written by
/// [`Line::finish`] once its response is known.
#[derive(Debug)]
pub struct Line {
    started: Instant,
    record: Option<AccessRecord>,
    request_id: Option<RequestId>,
    method: Method,
    uri: Uri,
}

impl Line {
    /// Opens the line of `request`, putting its [`AccessRecord`] in the request's extensions when the line will
    /// be written.
    pub fn begin(request: &mut Request) -> Self {
        // Only pay for the record when its line will be written (benchmarks run at `warn`).
        let record = tracing::enabled!(target: TARGET, Level::INFO).then(AccessRecord::default);
        if let Some(record) = &record {
            request.extensions_mut().insert(record.clone());
        }
        Self {
            started: Instant::now(),
            record,
            request_id: request.extensions().get::<RequestId>().cloned(),
            // Cheap clones (reference counts): the request itself moves on.
            method: request.method().clone(),
            uri: request.uri().clone(),
        }
    }

    /// Logs the access line for `response` and, for a 5xx, its error.
    pub fn finish(self, prefixes: &KeyPrefixes, mut response: Response) -> Response {
        let status = response.status().as_u16();
        let request_id = self.request_id.as_ref().and_then(|id| id.0.to_str().ok());
        let is_server_error = response.status().is_server_error();
        if self.record.is_none() && !is_server_error {
            // Nothing to log: the common case on a server running at `warn` pays for no path scan.
            return response;
        }
        let (method, path) = (&self.method, loggable_path(self.uri.path(), prefixes));
        if let Some(record) = self.record {
            let facts = &record.0;
            let principal = facts.principal.get();
            tracing::info!(
                target: TARGET,
                request_id,
                method = %method,
                path = %path,
                source_ip = facts.source.get().map(tracing::field::display),
                tenant = principal.map(|p| p.key.tenant_id.as_str()),
                key_id = principal.map(|p| p.key.id.as_str()),
                model = facts.model.get().map(|m| &**m),
                status,
                latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }
        if is_server_error {
            // Taken out: the detail is for this line only.
            let detail = response.extensions_mut().remove::<ErrorDetail>();
            tracing::error!(
                request_id,
                method = %method,
                path = %path,
                status,
                error = detail.as_ref().map(|d| tracing::field::display(&d.0)),
                "request failed"
            );
        }
        response
    }
}

/// `path` with every segment that starts with one of our key prefixes cut to a key's visible prefix: a client that
/// puts a key in a URL (as a model id, say) must not get it logged.
fn loggable_path<'a>(path: &'a str, prefixes: &KeyPrefixes) -> Cow<'a, str> {
    let looks_like_key = |segment: &str| {
        prefixes
            .all()
            .any(|(_, prefix)| segment.starts_with(prefix))
    };
    if !path.split('/').any(looks_like_key) {
        return Cow::Borrowed(path);
    }
    let cut: Vec<Cow<'_, str>> = path
        .split('/')
        .map(|segment| match segment.get(..VISIBLE_PREFIX_LEN) {
            Some(visible) if looks_like_key(segment) => Cow::Owned(format!("{visible}…")),
            _ if looks_like_key(segment) => Cow::Borrowed("…"),
            _ => Cow::Borrowed(segment),
        })
        .collect();
    Cow::Owned(cut.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::key::KeyKind;

    #[test]
    fn key_shaped_path_segments_are_cut_to_their_visible_prefix() {
        let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
        let key = prefixes.generate(KeyKind::Project);
        let secret = key.expose_secret();
        let path = format!("/v1/models/{secret}");
        let shown = loggable_path(&path, &prefixes);
        assert_eq!(shown, format!("/v1/models/{}…", key.visible_prefix()));
        assert!(!shown.contains(&secret[VISIBLE_PREFIX_LEN..]));
        let admin = prefixes.generate(KeyKind::Admin);
        let path = format!("/x/{}/y", admin.expose_secret());
        assert_eq!(
            loggable_path(&path, &prefixes),
            format!("/x/{}…/y", admin.visible_prefix())
        );
        assert_eq!(loggable_path("/x/sk_live_ab", &prefixes), "/x/…");
        assert!(matches!(
            loggable_path("/v1/organization/projects/proj_1", &prefixes),
            Cow::Borrowed("/v1/organization/projects/proj_1")
        ));
    }
}
