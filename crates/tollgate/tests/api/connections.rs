//! Connections, over raw sockets: the header, body and idle timeouts, the `max_connections` cap, HTTP/2 with prior
//! knowledge, and the drain on shutdown. Timeouts are 1–3 s; every timing bound has a margin of seconds, because
//! the machines that run this are shared and noisy.

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tollgate_testkit::{TestApp, TestTenant};

/// How long past its due time a close may come on a busy machine.
const MARGIN: Duration = Duration::from_secs(4);
/// Timers never fire early, but the server's clock starts a little after ours: this much earlier still counts.
const EARLY: Duration = Duration::from_millis(50);

fn addr(app: &TestApp) -> &str {
    app.url.strip_prefix("http://").unwrap()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(addr(app)).await.unwrap()
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP/1.1 response with a `Content-Length` body: status, head, body.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = position(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed in the middle of a response: {head}");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            return RawResponse { status, head, body };
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `GET /healthz` on a kept-alive connection and checks the answer.
async fn healthz(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(stream).await;
    assert_eq!(response.status, 200, "{}", response.head);
}

/// Waits for the server to close `stream` (end of stream, or a reset), at most `limit`; returns when it did.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Instant {
    let mut chunk = [0u8; 1024];
    let closed = timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {limit:?}"
    );
    Instant::now()
}

/// Whether `stream` stays open, with nothing sent to it, for `period`.
async fn stays_silent(stream: &mut TcpStream, period: Duration) -> bool {
    let mut chunk = [0u8; 1];
    timeout(period, stream.read(&mut chunk)).await.is_err()
}

fn chat_head(t: &TestTenant, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        t.project_key
    )
}

#[tokio::test]
async fn a_half_sent_head_is_closed_after_header_read_timeout_while_others_are_served() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout_seconds = 1;
            c.idle_timeout_seconds = 30;
        })
        .start()
        .await;
    let started = Instant::now();
    let mut slow = connect(&app).await;
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let others = async {
        for _ in 0..3 {
            let r = app.request(Method::GET, "/healthz").send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        Instant::now()
    };
    let (served_at, closed_at) = tokio::join!(
        others,
        closed_within(&mut slow, Duration::from_secs(1) + MARGIN)
    );
    let after = closed_at - started;
    assert!(
        after >= Duration::from_secs(1) - EARLY,
        "closed after {after:?}, before header_read_timeout"
    );
    assert!(
        served_at < closed_at,
        "others were served only after the slow client left"
    );
}

#[tokio::test]
async fn on_a_kept_alive_connection_the_head_timer_starts_with_the_next_heads_first_byte() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout_seconds = 1;
            c.idle_timeout_seconds = 8;
        })
        .start()
        .await;
    let mut s = connect(&app).await;
    healthz(&mut s).await;
    // Idle for twice the header timeout: open (hyper's own header timer would have closed it by now).
    assert!(
        stays_silent(&mut s, Duration::from_secs(2)).await,
        "an idle connection was closed by the header timeout"
    );
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let head_began = Instant::now();
    let closed_at = closed_within(&mut s, Duration::from_secs(3)).await;
    // The idle deadline is about 6 s away from `head_began`; this close was the header timeout's.
    assert!(closed_at - head_began >= Duration::from_secs(1) - EARLY);
}

#[tokio::test]
async fn a_stalled_body_gets_408_in_our_shape_and_the_connection_closes() {
    let app = TestApp::builder()
        .configure(|c| c.body_read_timeout_seconds = 1)
        .start()
        .await;
    let t = app.tenant("pro").await;
    let mut s = connect(&app).await;
    s.write_all(chat_head(&t, 100).as_bytes()).await.unwrap();
    s.write_all(br#"{"model":""#).await.unwrap();
    let stalled = Instant::now();
    let response = timeout(Duration::from_secs(1) + MARGIN, read_response(&mut s))
        .await
        .expect("no answer to a stalled body");
    let after = stalled.elapsed();
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        after >= Duration::from_secs(1) - EARLY,
        "408 after {after:?}"
    );
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        response.head
    );
    let body: Value = serde_json::from_str(&response.body).unwrap();
    let error = body["error"].as_object().unwrap();
    let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["code", "message", "param", "type"], "{body}");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["param"].is_null() && error["code"].is_null());
    assert!(error["message"].as_str().unwrap().contains("stalled"));
    // The rest of the body is never coming: the server hangs up.
    closed_within(&mut s, MARGIN).await;
}

#[tokio::test]
async fn a_body_that_keeps_coming_may_take_longer_than_body_read_timeout_in_total() {
    let app = TestApp::builder()
        .configure(|c| c.body_read_timeout_seconds = 2)
        .start()
        .await;
    let t = app.tenant("pro").await;
    let body = serde_json::to_vec(&TestApp::chat_body("echo", "slowly")).unwrap();
    let mut s = connect(&app).await;
    s.write_all(chat_head(&t, body.len()).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    // Four parts, 0.8 s apart: 2.4 s in all, never 2 s between two reads.
    for part in body.chunks(body.len().div_ceil(4)) {
        sleep(Duration::from_millis(800)).await;
        s.write_all(part).await.unwrap();
    }
    let response = read_response(&mut s).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(started.elapsed() > Duration::from_secs(2));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_idle_timeout() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout_seconds = 1;
            c.idle_timeout_seconds = 3;
        })
        .start()
        .await;
    let mut s = connect(&app).await;
    healthz(&mut s).await;
    let idle_since = Instant::now();
    let closed_at = closed_within(&mut s, Duration::from_secs(3) + MARGIN).await;
    let after = closed_at - idle_since;
    assert!(
        after >= Duration::from_secs(3) - EARLY,
        "closed after {after:?} idle, before idle_timeout"
    );
}

#[tokio::test]
async fn requests_and_streams_in_flight_longer_than_idle_timeout_are_not_cut() {
    let app = TestApp::builder()
        .configure(|c| {
            c.header_read_timeout_seconds = 1;
            c.idle_timeout_seconds = 1;
        })
        .start()
        .await;
    let t = app.tenant("pro").await;
    let slow = async {
        let body = TestApp::chat_body("fast", "mock:latency=2500");
        let r = app
            .post("/v1/chat/completions", &t.project_key, &body)
            .await;
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        assert!(answer["choices"][0]["message"]["content"].is_string());
    };
    let streamed = async {
        let mut body = TestApp::chat_body("fast", "mock:chunks=4 mock:chunk_delay=700");
        body["stream"] = json!(true);
        // Its own client: a connection of its own, that no other request shares.
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(&t.project_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    };
    let started = Instant::now();
    tokio::join!(slow, streamed);
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_until_one_closes() {
    let app = TestApp::builder()
        .configure(|c| c.max_connections = 2)
        .start()
        .await;
    let mut first = connect(&app).await;
    healthz(&mut first).await;
    let mut second = connect(&app).await;
    healthz(&mut second).await;
    // The kernel completes the third handshake, but the server does not take the connection.
    let mut third = connect(&app).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        stays_silent(&mut third, Duration::from_millis(1500)).await,
        "a third connection was served with max_connections = 2"
    );
    drop(first);
    let response = timeout(MARGIN, read_response(&mut third))
        .await
        .expect("the waiting connection was not served after one closed");
    assert_eq!(response.status, 200);
    healthz(&mut second).await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let app = TestApp::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // Handlers still see the client's address (`ConnectInfo`): authentication needs it.
    let t = app.tenant("pro").await;
    let r = client
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&t.project_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Waits until the mock upstream has received a chat request: from then on one is in flight through the server.
async fn upstream_has_a_request(app: &TestApp) {
    let url = format!("{}/mock/requests/last", app.mock_url);
    let waited = timeout(MARGIN, async {
        while app.http.get(&url).send().await.unwrap().status() != 200 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the request never reached the upstream");
}

/// Connects until the server refuses; returns when it did.
async fn refused_within(app: &TestApp, limit: Duration) -> Instant {
    let refused = timeout(limit, async {
        loop {
            match TcpStream::connect(addr(app)).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                _ => sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "still accepting {limit:?} after shutdown");
    Instant::now()
}

#[tokio::test]
async fn shutdown_refuses_new_connections_closes_idle_ones_and_lets_requests_in_flight_finish() {
    let app = TestApp::start().await;
    let t = app.tenant("pro").await;
    let mut idle = connect(&app).await;
    healthz(&mut idle).await;
    let slow = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .json(&TestApp::chat_body("fast", "mock:latency=2000"))
        .send();
    let in_flight = async {
        let r = slow.await.unwrap();
        let status = r.status();
        let answer: Value = r.json().await.unwrap();
        (status, answer, Instant::now())
    };
    let shutting_down = async {
        upstream_has_a_request(&app).await;
        let server = app.shutdown();
        let refused_at = refused_within(&app, MARGIN).await;
        let idle_closed_at = closed_within(&mut idle, MARGIN).await;
        let served = timeout(Duration::from_secs(2) + MARGIN, server)
            .await
            .expect("serve did not return after its connections finished");
        (refused_at, idle_closed_at, served)
    };
    let ((status, answer, answered_at), (refused_at, idle_closed_at, served)) =
        tokio::join!(in_flight, shutting_down);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["content"].is_string());
    served.unwrap().unwrap();
    // Accepting stopped, and the idle connection closed, at once: not after the drain.
    assert!(refused_at < answered_at);
    assert!(idle_closed_at < answered_at);
}

#[tokio::test]
async fn shutdown_cuts_what_is_still_open_after_shutdown_timeout() {
    let app = TestApp::builder()
        .configure(|c| c.shutdown_timeout_seconds = 1)
        .start()
        .await;
    let t = app.tenant("pro").await;
    // 4 s upstream latency (the provider's timeout is 5 s): still in flight when the shutdown timeout ends.
    let slow = app
        .with_key(Method::POST, "/v1/chat/completions", &t.project_key)
        .json(&TestApp::chat_body("fast", "mock:latency=4000"))
        .send();
    let shutting_down = async {
        upstream_has_a_request(&app).await;
        let signalled = Instant::now();
        let server = app.shutdown();
        let served = timeout(Duration::from_secs(1) + MARGIN, server)
            .await
            .expect("serve did not return after shutdown_timeout_seconds");
        (signalled, Instant::now(), served)
    };
    let (cut, (signalled, returned_at, served)) = tokio::join!(slow, shutting_down);
    served.unwrap().unwrap();
    let after = returned_at - signalled;
    assert!(
        after >= Duration::from_secs(1) - EARLY,
        "serve returned after {after:?}, before shutdown_timeout_seconds"
    );
    assert!(
        cut.is_err(),
        "the request was answered, not cut: {:?}",
        cut.map(|r| r.status())
    );
}
