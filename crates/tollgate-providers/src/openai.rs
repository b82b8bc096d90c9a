//! Any OpenAI-compatible upstream, over one pooled HTTP client per provider (hyper-util's, with rustls for
//! `https://`): the request's bytes go out as the pipeline prepared them and the completion's bytes come back.
//!
//! Written on hyper directly rather than reqwest: reqwest's per-request work (a redirect policy, URL handling, a
//! body wrapper) was a third of what Tollgate spent on a forwarded request, and a proxy needs none of it.

use async_trait::async_trait;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::Stream;
use futures::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::pin::Pin;
use std::time::Duration;
use tollgate_core::ports::{ChatCall, ChunkStream, Provider, ProviderError};
use tollgate_openai::ChatCompletionChunk;

/// The largest non-streamed completion read from an upstream: far above any real one, and a bound on what a
/// misbehaving upstream can make us buffer.
const MAX_COMPLETION_BYTES: usize = 32 << 20;

/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Why a provider could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiProviderError {
    /// `base_url` is not an http(s) URL.
    #[error("base_url must be an http:// or https:// URL")]
    BaseUrl,
    /// The credential cannot be sent as a header (e.g. it contains a newline).
    #[error("the API key is not a valid header value")]
    ApiKey,
}

/// An OpenAI-compatible upstream: `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Parsed once, at start-up.
    chat_uri: Uri,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl OpenAiProvider {
    /// A provider for `base_url` (e.g. `http://127.0.0.1:9100/v1`), sending `api_key` as a bearer token if given.
    /// `timeout` bounds the wait for the response head, for a whole non-streamed body, and between stream chunks.
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, OpenAiProviderError> {
        let parsed = url::Url::parse(base_url).map_err(|_| OpenAiProviderError::BaseUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(OpenAiProviderError::BaseUrl);
        }
        let chat_uri: Uri = format!("{}/chat/completions", parsed.as_str().trim_end_matches('/'))
            .parse()
            .map_err(|_| OpenAiProviderError::BaseUrl)?;
        let authorization = api_key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| OpenAiProviderError::ApiKey)?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Ok(Self {
            client,
            chat_uri,
            authorization,
            timeout,
        })
    }

    /// Sends the request and waits for a successful response head.
    async fn send(&self, body: Bytes) -> Result<http::Response<Incoming>, ProviderError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.chat_uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let request = request.body(Full::new(body)).map_err(|e| {
            ProviderError::Failed(format!("cannot build the upstream request: {e}"))
        })?;
        let response = self.client.request(request).await.map_err(|e| {
            // hyper-util's errors name neither the address nor the credential; their causes say what failed.
            ProviderError::Failed(error_chain(&e))
        })?;
        let status = response.status();
        if !status.is_success() {
            // The upstream's body may carry its internals; only the status reaches our logs.
            return Err(ProviderError::Failed(format!("upstream answered {status}")));
        }
        Ok(response)
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, call: ChatCall) -> Result<Bytes, ProviderError> {
        let whole = async {
            let response = self.send(call.body).await?;
            Limited::new(response.into_body(), MAX_COMPLETION_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| {
                    ProviderError::Failed(format!("reading the upstream's completion: {e}"))
                })
        };
        tokio::time::timeout(self.timeout, whole)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }

    async fn chat_stream(&self, call: ChatCall) -> Result<ChunkStream, ProviderError> {
        let response = tokio::time::timeout(self.timeout, self.send(call.body))
            .await
            .map_err(|_| ProviderError::Timeout)??;
        let events = response.into_body().into_data_stream().eventsource();
        Ok(Box::pin(chunks(events, self.timeout)))
    }
}

/// Turns server-sent events into chunks, one at a time, as they arrive; ends at `[DONE]` or at the first error.
fn chunks<S, E>(
    events: S,
    idle: Duration,
) -> impl Stream<Item = Result<ChatCompletionChunk, ProviderError>>
where
    S: Stream<Item = Result<eventsource_stream::Event, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let events: Pin<Box<S>> = Box::pin(events);
    futures::stream::unfold(Some(events), move |state| async move {
        let mut events = state?;
        loop {
            let event = match tokio::time::timeout(idle, events.next()).await {
                Err(_) => return Some((Err(ProviderError::Timeout), None)),
                Ok(None) => {
                    // The upstream closed without `[DONE]`: the completion may be cut short.
                    return Some((
                        Err(ProviderError::Failed(
                            "upstream stream ended before [DONE]".to_owned(),
                        )),
                        None,
                    ));
                }
                Ok(Some(Err(e))) => {
                    return Some((
                        Err(ProviderError::Failed(format!("upstream stream broke: {e}"))),
                        None,
                    ));
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                return None;
            }
            let item = serde_json::from_str::<ChatCompletionChunk>(data)
                .map_err(|e| ProviderError::Failed(format!("upstream sent an invalid chunk: {e}")));
            let keep_going = item.is_ok();
            return Some((item, keep_going.then_some(events)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_base_urls() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            OpenAiProvider::new("ftp://x/v1", None, t),
            Err(OpenAiProviderError::BaseUrl)
        ));
        assert!(matches!(
            OpenAiProvider::new("not a url", None, t),
            Err(OpenAiProviderError::BaseUrl)
        ));
        assert!(matches!(
            OpenAiProvider::new("http://127.0.0.1:1/v1", Some("a\nb"), t),
            Err(OpenAiProviderError::ApiKey)
        ));
        let p = OpenAiProvider::new("http://127.0.0.1:9/v1/", None, t).unwrap();
        assert_eq!(p.chat_uri, "http://127.0.0.1:9/v1/chat/completions");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_failure_without_its_address() {
        let p = OpenAiProvider::new(
            "http://127.0.0.1:9/v1",
            Some("sk-upstream-secret"),
            Duration::from_secs(2),
        )
        .unwrap();
        let body = serde_json::json!({"model":"m","messages":[]});
        let call = ChatCall {
            request: serde_json::from_value(body.clone()).unwrap(),
            body: serde_json::to_vec(&body).unwrap().into(),
        };
        let err = p.chat(call).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProviderError::Failed(_)), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("sk-upstream-secret"),
            "{text}"
        );
    }
}
