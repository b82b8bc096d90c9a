//! The bare hop: the least an HTTP/1.1 reverse proxy does (accept, forward each request to one upstream over a pooled
//! keep-alive connection, stream the response back) on the same runtime shape as Tollgate (tokio multi-thread,
//! default workers). `bench/run.sh` measures it beside Tollgate, so Tollgate's cost reads against the cost of a
//! hop itself. It never looks at a body, and has no timeouts, limits or logs: more would blur that reference.

use anyhow::{Context, bail};
use clap::Parser;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::task::TaskTracker;

/// What the hop answers with: the upstream's body streamed through, or nothing (a 502 when the upstream failed).
type Body = Either<Incoming, Empty<Bytes>>;

/// How long a stop waits for connections to finish before cutting them; the bench stops the hop only once its
/// load is over, so this is for the idle keep-alive connections, which would otherwise hold the exit forever.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1): a proxy must not pass them on.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The bare hop: forwards every request to one upstream.
#[derive(Debug, Parser)]
struct Args {
    /// Address to accept connections on, e.g. 127.0.0.1:19200.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream, `http://HOST:PORT` (plain HTTP; the request's path is sent unchanged).
    #[arg(long)]
    upstream: Uri,
}

/// Where every request goes; cloned into each request's URI.
#[derive(Debug)]
struct Upstream {
    scheme: Scheme,
    authority: Authority,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = upstream(&args.upstream)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;

    let mut connector = HttpConnector::new();
    // Small JSON requests must not wait for Nagle's algorithm (Tollgate's upstream client sets the same).
    connector.set_nodelay(true);
    // The pool keeps idle connections per host without a cap, so at saturation every request reuses one.
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let shared = Arc::new((client, upstream));

    let tasks = TaskTracker::new();
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    loop {
        let (stream, _peer) = tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // One client's trouble, or a resource limit: a benchmark wants to see it, not to survive it.
                Err(e) => return Err(e).context("accepting a connection"),
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { forward(&shared.0, &shared.1, request).await }
            });
            // A connection that ends with an error (the client reset it) only ends.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    drop(listener);
    tasks.close();
    let _ = tokio::time::timeout(STOP_GRACE, tasks.wait()).await;
    Ok(())
}

/// Sends `request` to the upstream and hands back its response as it streams in; a 502 if the upstream failed.
async fn forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: &Upstream,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(
        request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let Ok(uri) = Uri::from_parts(parts) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    strip_hop_by_hop(request.headers_mut());
    match client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

/// An empty response with `code`.
fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = code;
    response
}

/// Removes the hop-by-hop headers and any that `Connection` names; hyper frames the body for the next hop itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Checks `uri` is `http://HOST:PORT` with no path to prefix.
fn upstream(uri: &Uri) -> anyhow::Result<Upstream> {
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        bail!("--upstream must be http://HOST:PORT, got {uri}");
    };
    if *scheme != Scheme::HTTP {
        bail!("--upstream must be plain http://, got {uri}");
    }
    if !matches!(uri.path(), "" | "/") {
        bail!("--upstream takes no path (requests keep theirs), got {uri}");
    }
    Ok(Upstream {
        scheme: scheme.clone(),
        authority: authority.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length"]);
    }

    #[test]
    fn upstream_is_plain_http_without_a_path() {
        let ok = upstream(&Uri::from_static("http://127.0.0.1:19100")).unwrap();
        assert_eq!(ok.authority.as_str(), "127.0.0.1:19100");
        assert!(upstream(&Uri::from_static("http://127.0.0.1:19100/")).is_ok());
        assert!(upstream(&Uri::from_static("https://127.0.0.1:19100")).is_err());
        assert!(upstream(&Uri::from_static("http://127.0.0.1:19100/v1")).is_err());
        assert!(upstream(&Uri::from_static("/v1/models")).is_err());
    }
}
