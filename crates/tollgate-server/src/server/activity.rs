//! One connection's clock: whether it is reading a request head, answering requests, or idle, and since when, so
//! that `server` closes a connection whose head is not complete within `header_read_timeout_seconds`, or that has
//! had no request in flight for `idle_timeout_seconds`. It never touches a request or a response's bytes.
//!
//! hyper's own `header_read_timeout` cannot do this. Since hyper 1.6 (hyperium/hyper#3828) its timer also starts
//! when a keep-alive connection begins waiting for its next request, so it closes an idle connection after the
//! header timeout, not the idle one; and hyper-util's protocol detection (`auto`) runs before that timer starts,
//! so a connection that sends nothing at all is not bounded by it.

use axum::body::Body;
use bytes::Bytes;
use http::Version;
use hyper::body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The two timeouts a connection's clock enforces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// From the connection's opening, or from the first byte of a later request, to its complete head.
    pub(super) header: Duration,
    /// With no request in flight and no byte of the next one.
    pub(super) idle: Duration,
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// A request head was not complete in time.
    Header,
    /// No request came in time.
    Idle,
}

impl Expiry {
    /// For the log line.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Header => {
                "header_read_timeout_seconds passed before the request head was complete"
            }
            Self::Idle => "idle_timeout_seconds passed with no request in flight",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head whose first byte came at this instant (the first head: since the connection
    /// opened, as a connection is opened to send one).
    Head(Instant),
    /// Answering this many requests (more than one only on HTTP/2).
    Busy(usize),
    /// No request in flight and no byte of a next one since this instant.
    Idle(Instant),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// HTTP/2: bytes read while idle are pings and settings, not a request head, so they start no head timer.
    multiplexed: bool,
}

/// A connection's phase, shared by its socket (reads), its service (requests and their response bodies) and the
/// connection task that waits for [`Activity::expired`].
#[derive(Debug)]
pub(super) struct Activity {
    timeouts: Timeouts,
    /// std's `Mutex`: held for a few instructions and never across an await; on HTTP/2 the stream tasks take it too.
    state: Mutex<State>,
    /// Wakes the waiter when a deadline may have moved earlier: a head began, or the last request ended.
    changed: Notify,
}

impl Activity {
    /// A connection that has just opened: its first head is due within the header timeout.
    pub(super) fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now()),
                multiplexed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few plain values, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes came in: on an idle HTTP/1 connection, a request head has begun.
    fn bytes_read(&self) {
        let mut state = self.state();
        if let Phase::Idle(_) = state.phase
            && !state.multiplexed
        {
            state.phase = Phase::Head(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A complete request head has been parsed: no timeout of ours runs until its response has been sent (the body
    /// has its own, per read, in the router).
    pub(super) fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        let mut state = self.state();
        state.phase = match state.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
        if version == Version::HTTP_2 {
            state.multiplexed = true;
        }
        InFlight(Arc::clone(self))
    }

    fn request_ended(&self) {
        let mut state = self.state();
        match state.phase {
            Phase::Busy(n) if n > 1 => state.phase = Phase::Busy(n - 1),
            _ => {
                state.phase = Phase::Idle(Instant::now());
                drop(state);
                self.changed.notify_one();
            }
        }
    }

    /// When the current phase's timeout runs out; none while a request is in flight, or for a timeout too long to
    /// add to the clock.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match self.state().phase {
            Phase::Head(since) => since
                .checked_add(self.timeouts.header)
                .map(|at| (at, Expiry::Header)),
            Phase::Idle(since) => since
                .checked_add(self.timeouts.idle)
                .map(|at| (at, Expiry::Idle)),
            Phase::Busy(_) => None,
        }
    }

    /// Completes when a timeout has run out; the caller then closes the connection.
    pub(super) async fn expired(&self) -> Expiry {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            // Created before reading the deadline: `notify_one` keeps a permit, so no change is missed.
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    // A phase that moved the deadline later (a head became a request) sends no wake-up: the
                    // sleep ends at the old deadline and the loop looks again.
                    sleep.as_mut().reset(at);
                    tokio::select! {
                        () = &mut sleep => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// A request being answered; dropping it (when hyper has taken its whole response body, or gave up on it) ends it.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    /// Keeps the request in flight for as long as `body` is being sent: streams included.
    pub(super) fn track(self, body: Body) -> TrackedBody {
        TrackedBody {
            body,
            _in_flight: self,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that holds its request in flight until it is dropped.
#[derive(Debug)]
pub(super) struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    // Forwarded so that hyper still writes `Content-Length` for a body of known size.
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling its [`Activity`] about every read that brought bytes.
#[derive(Debug)]
pub(super) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `io`.
    pub(super) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    // hyper writes a head and a body in one syscall when the socket supports it.
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(header: u64, idle: u64) -> Arc<Activity> {
        Arc::new(Activity::new(Timeouts {
            header: Duration::from_secs(header),
            idle: Duration::from_secs(idle),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let a = activity(10, 75);
        let start = Instant::now();
        assert_eq!(a.expired().await, Expiry::Header);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_idle_timeout_and_a_new_head_the_header_timeout() {
        let a = activity(10, 75);
        drop(a.request_started(Version::HTTP_11));
        let idle_since = Instant::now();
        // Idle for longer than the header timeout: still open.
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.bytes_read();
        let head_since = Instant::now();
        assert_eq!(a.expired().await, Expiry::Header);
        assert_eq!(head_since.elapsed(), Duration::from_secs(10));
        assert_eq!(idle_since.elapsed(), Duration::from_secs(40));

        let b = activity(10, 75);
        drop(b.request_started(Version::HTTP_11));
        let idle_since = Instant::now();
        assert_eq!(b.expired().await, Expiry::Idle);
        assert_eq!(idle_since.elapsed(), Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_while_a_request_is_in_flight() {
        let a = activity(1, 2);
        let in_flight = a.request_started(Version::HTTP_11);
        let waited = tokio::time::timeout(Duration::from_secs(3600), a.expired()).await;
        assert!(waited.is_err(), "expired with a request in flight");
        drop(in_flight);
        let idle_since = Instant::now();
        assert_eq!(a.expired().await, Expiry::Idle);
        assert_eq!(idle_since.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_pings_while_idle_start_no_head_timer() {
        let a = activity(1, 5);
        let first = a.request_started(Version::HTTP_2);
        let second = a.request_started(Version::HTTP_2);
        drop(first);
        assert!(matches!(a.state().phase, Phase::Busy(1)));
        drop(second);
        let idle_since = Instant::now();
        a.bytes_read();
        assert_eq!(a.expired().await, Expiry::Idle);
        assert_eq!(idle_since.elapsed(), Duration::from_secs(5));
    }
}
