//! The server's one entry point, shared by `main` and the tests: it takes its listener and a shutdown signal, and
//! owns the client connections: the accept loop and its `max_connections` cap, each connection's header and idle
//! timeouts (`activity`), and the drain on shutdown. It never looks inside a request: that is the router's job.
//!
//! HTTP/1.1 (keep-alive) and HTTP/2 with prior knowledge (h2c) are served by hyper-util's `auto` connection.

mod activity;

use crate::app::AppState;
use crate::router::router;
use activity::{Activity, Timeouts, Watched};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long the accept loop pauses after an accept error that is not one client's (EMFILE, ENFILE, ENOMEM), as
/// axum and hyper 0.14 do: accepting again at once would spin while nothing has been freed.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The "max_connections reached" warning is logged at most this often, not once per waiting connection.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);
/// After the shutdown timeout, how long the cut connections' tasks get to be dropped.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Serves until `shutdown` completes; then stops accepting (the listener is closed, so new connections are refused),
/// lets requests and streams in flight finish while idle connections close, cuts whatever is still open after
/// `shutdown_timeout_seconds`, and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = &state.config;
    let timeouts = Timeouts {
        header: Duration::from_secs(config.header_read_timeout_seconds),
        idle: Duration::from_secs(config.idle_timeout_seconds),
    };
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout_seconds);
    let max_connections = config.max_connections;
    // Listening now: this server's address is its own, so what a dead earlier run on it held is free.
    if let Ok(address) = listener.local_addr() {
        state.claims.listening(&state, address).await;
    }
    let app = router(state);

    // Every connection task, and every HTTP/2 stream task hyper spawns, runs on `tasks` and stops when `cut` fires.
    let tasks = TaskTracker::new();
    let cut = CancellationToken::new();
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder(Executor {
        tasks: tasks.clone(),
        cut: cut.clone(),
    }));
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut cap_warned_at: Option<Instant> = None;
    tokio::pin!(shutdown);

    loop {
        // The permit comes before `accept`: beyond the cap, new connections wait in the kernel's backlog.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                if cap_warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    tracing::warn!(
                        max_connections,
                        "max_connections reached: new connections wait until one closes"
                    );
                    cap_warned_at = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_closed) => break,
                    },
                }
            }
            Err(TryAcquireError::Closed) => break,
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // One client's trouble (it reset before we accepted): nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; pausing before accepting again");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let connection = connection(
            Arc::clone(&builder),
            graceful.watcher(),
            stream,
            peer,
            app.clone(),
            timeouts,
            permit,
        );
        tasks.spawn(cut.clone().run_until_cancelled_owned(connection));
    }

    // New connections are refused from here on.
    drop(listener);
    tasks.close();
    let open = max_connections - permits.available_permits();
    tracing::info!(
        connections = open,
        shutdown_timeout_seconds = shutdown_timeout.as_secs(),
        "shutting down: no longer accepting, draining connections"
    );
    let drain = async {
        // Tells every connection to finish: in-flight requests and streams complete, idle ones close.
        graceful.shutdown().await;
        tasks.wait().await;
    };
    if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
        let open = max_connections - permits.available_permits();
        tracing::warn!(
            connections = open,
            shutdown_timeout_seconds = shutdown_timeout.as_secs(),
            "shutdown timeout reached: cutting the connections still open"
        );
        cut.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, tasks.wait()).await;
    }
    Ok(())
}

/// hyper-util's `auto` connection: HTTP/1.1, or HTTP/2 when the client starts with its preface.
fn connection_builder(executor: Executor) -> auto::Builder<Executor> {
    let mut builder = auto::Builder::new(executor);
    // `Activity` times request heads instead: hyper's timer would also close idle keep-alive connections after the
    // header timeout, and does not cover protocol detection (see `activity`).
    builder.http1().header_read_timeout(None);
    builder
}

/// Serves one connection until it ends, its clock runs out, or the server cuts it; `_permit` frees its slot under
/// `max_connections` when this returns.
async fn connection(
    builder: Arc<auto::Builder<Executor>>,
    watcher: Watcher,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    _permit: OwnedSemaphorePermit,
) {
    // Small JSON answers must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new(timeouts));
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        // What `into_make_service_with_connect_info` did: handlers and middleware read the peer from here.
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = requests.request_started(request.version());
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| in_flight.track(body)))
        }
    });
    let served = watcher.watch(builder.serve_connection(io, service));
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection closes the socket.
        expiry = activity.expired() => {
            tracing::debug!(%peer, reason = expiry.reason(), "connection closed");
        }
    }
}

/// Runs hyper's HTTP/2 stream tasks on the server's tracker, so the drain waits for them and a cut stops them.
#[derive(Debug, Clone)]
struct Executor {
    tasks: TaskTracker,
    cut: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.tasks
            .spawn(self.cut.clone().run_until_cancelled_owned(future));
    }
}

/// Errors of one connection that went away before it was accepted, as axum's `serve` tells them apart.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
