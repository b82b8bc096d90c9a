//! Any OpenAI-compatible upstream, over one pooled HTTP client per provider.

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use std::pin::Pin;
use std::time::Duration;
use tollgate_core::ports::{ChunkStream, Provider, ProviderError};
use tollgate_openai::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};

/// Why a provider could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiProviderError {
    /// `base_url` is not an http(s) URL.
    #[error("base_url must be an http:// or https:// URL")]
    BaseUrl,
    /// The credential cannot be sent as a header (e.g. it contains a newline).
    #[error("the API key is not a valid header value")]
    ApiKey,
    /// The HTTP client could not be built (TLS roots…).
    #[error("HTTP client: {0}")]
    Client(String),
}

/// An OpenAI-compatible upstream: `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    /// Parsed once: parsing (with IDNA) per request showed in profiles.
    chat_url: reqwest::Url,
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
        let authorization = api_key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| OpenAiProviderError::ApiKey)?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| OpenAiProviderError::Client(e.to_string()))?;
        Ok(Self {
            client,
            chat_url: reqwest::Url::parse(&format!(
                "{}/chat/completions",
                base_url.trim_end_matches('/')
            ))
            .map_err(|_| OpenAiProviderError::BaseUrl)?,
            authorization,
            timeout,
        })
    }

    async fn send(
        &self,
        request: &ChatCompletionRequest,
        whole_body_timeout: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut builder = self.client.post(self.chat_url.clone()).json(request);
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if whole_body_timeout {
            builder = builder.timeout(self.timeout);
        }
        let response = tokio::time::timeout(self.timeout, builder.send())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            // The upstream's body may carry its internals; only the status reaches our logs.
            return Err(ProviderError::Failed(format!("upstream answered {status}")));
        }
        Ok(response)
    }
}

/// Timeouts are 504s; everything else (refused, reset, bad body) is a 502.
fn classify(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout
    } else {
        // Without the URL: it names the upstream's address.
        ProviderError::Failed(error.without_url().to_string())
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatCompletion, ProviderError> {
        let response = self.send(&request, true).await?;
        let bytes = response.bytes().await.map_err(classify)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Failed(format!("upstream sent an invalid completion: {e}")))
    }

    async fn chat_stream(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChunkStream, ProviderError> {
        let response = self.send(&request, false).await?;
        let events = response.bytes_stream().eventsource();
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
        assert_eq!(
            p.chat_url.as_str(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_failure_without_its_address() {
        let p = OpenAiProvider::new(
            "http://127.0.0.1:9/v1",
            Some("sk-upstream-secret"),
            Duration::from_secs(2),
        )
        .unwrap();
        let req: ChatCompletionRequest =
            serde_json::from_value(serde_json::json!({"model":"m","messages":[]})).unwrap();
        let err = p.chat(req).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProviderError::Failed(_)), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("sk-upstream-secret"),
            "{text}"
        );
    }
}
