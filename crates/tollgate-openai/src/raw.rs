//! Chat JSON edited as bytes on its way through: a body is forwarded as it was written, with only the members
//! Tollgate owns (`model`, `stream_options`) replaced, so nothing else is parsed into values and serialised again.
//!
//! The typed parse ([`crate::ChatCompletionRequest`]) still validates every request and refuses a duplicate of any
//! field it reads, so what the upstream receives cannot differ from what was held for.

use crate::chat::{Choice, StreamOptions, Usage};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A JSON object's members in order, each value left unparsed.
#[derive(Debug)]
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// The object again, each member written by `edit` (`Some` replaces the value) or copied, then `extra`.
    fn write(
        &self,
        capacity: usize,
        edit: impl Fn(&str, &RawValue) -> Option<Vec<u8>>,
        extra: &[(&str, &[u8])],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(capacity + 64);
        out.push(b'{');
        let member = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
            if out.len() > 1 {
                out.push(b',');
            }
            // A `str` always serialises.
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            out.extend_from_slice(value);
        };
        for (key, value) in &self.0 {
            match edit(key, value) {
                Some(new) => member(&mut out, key, &new),
                None => member(&mut out, key, value.get().as_bytes()),
            }
        }
        for (key, value) in extra {
            member(&mut out, key, value);
        }
        out.push(b'}');
        out
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key.0, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A member name, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A JSON string.
fn string(s: &str) -> Vec<u8> {
    // A `str` always serialises.
    serde_json::to_vec(s).unwrap_or_default()
}

/// The request body to send upstream: `body` as the client wrote it, with `model` set to `model` and, when
/// `include_usage`, `stream_options.include_usage` set to `true` (the stream's last chunk then carries usage).
/// `body` must be a JSON object (the typed parse has already checked it).
pub fn forward_request(
    body: &[u8],
    model: &str,
    include_usage: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    let members = Members::parse(body)?;
    let options = match (include_usage, members.get("stream_options")) {
        (true, Some(raw)) => {
            let mut options =
                serde_json::from_str::<Option<StreamOptions>>(raw.get())?.unwrap_or_default();
            options.include_usage = Some(true);
            Some(serde_json::to_vec(&options)?)
        }
        _ => None,
    };
    let extra: &[(&str, &[u8])] = if include_usage && options.is_none() {
        &[("stream_options", br#"{"include_usage":true}"#)]
    } else {
        &[]
    };
    let model = string(model);
    Ok(members.write(
        body.len(),
        |key, _| match key {
            "model" => Some(model.clone()),
            "stream_options" => options.clone(),
            _ => None,
        },
        extra,
    ))
}

/// An upstream's non-streamed completion, read only as far as billing needs.
#[derive(Debug)]
pub struct UpstreamCompletion<'a> {
    members: Members<'a>,
    usage: Option<Usage>,
}

impl<'a> UpstreamCompletion<'a> {
    /// Reads `body`: a JSON object, with a well-formed `usage` if it has one.
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        let members = Members::parse(body)?;
        let usage = match members.get("usage") {
            Some(raw) => serde_json::from_str::<Option<Usage>>(raw.get())?,
            None => None,
        };
        Ok(Self { members, usage })
    }

    /// The token counts the upstream reported.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Bytes of text in every choice's message: a bound of the output's tokens when no usage was reported.
    pub fn output_text_bytes(&self) -> Result<u64, serde_json::Error> {
        let Some(raw) = self.members.get("choices") else {
            return Ok(0);
        };
        let choices: Vec<Choice> = serde_json::from_str(raw.get())?;
        Ok(choices
            .iter()
            .filter_map(|c| c.message.content.as_ref())
            .map(|c| c.text().len() as u64)
            .sum())
    }

    /// The completion as the client sees it: every member as the upstream wrote it, but `model`, which is `model`.
    pub fn with_model(&self, model: &str) -> Vec<u8> {
        let model = string(model);
        let has_model = self.members.get("model").is_some();
        let extra: &[(&str, &[u8])] = if has_model { &[] } else { &[("model", &model)] };
        self.members.write(
            self.members.0.iter().map(|(_, v)| v.get().len() + 16).sum(),
            |key, _| (key == "model").then(|| model.clone()),
            extra,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_forwarded_request_is_the_clients_bytes_but_its_model() {
        let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi \u00e9"}],"temperature":0.50,"x":{"deep":[1,2]}}"#;
        let out = forward_request(body, "up/model-1", false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"up/model-1","messages":[{"role":"user","content":"hi \u00e9"}],"temperature":0.50,"x":{"deep":[1,2]}}"#,
            "everything but the model is copied byte for byte (escapes and number formats included)"
        );
    }

    #[test]
    fn streams_always_ask_for_usage_and_keep_other_options() {
        let out = forward_request(br#"{"model":"a","stream":true}"#, "b", true).unwrap();
        assert_eq!(
            value(&out),
            json!({"model":"b","stream":true,"stream_options":{"include_usage":true}})
        );
        let out = forward_request(
            br#"{"model":"a","stream_options":{"include_usage":false,"other":1}}"#,
            "b",
            true,
        )
        .unwrap();
        assert_eq!(
            value(&out),
            json!({"model":"b","stream_options":{"include_usage":true,"other":1}})
        );
        let out = forward_request(br#"{"model":"a","stream_options":null}"#, "b", true).unwrap();
        assert_eq!(
            value(&out),
            json!({"model":"b","stream_options":{"include_usage":true}})
        );
        assert!(forward_request(br#"{"model":"a","stream_options":3}"#, "b", true).is_err());
    }

    #[test]
    fn escaped_member_names_are_written_back_escaped() {
        let out = forward_request(br#"{"mo\"del":1,"model":"a"}"#, "b", false).unwrap();
        assert_eq!(value(&out), json!({"mo\"del":1,"model":"b"}));
    }

    #[test]
    fn a_completion_reads_usage_and_shows_the_public_model() {
        let body = br#"{"id":"c1","object":"chat.completion","created":1,"model":"upstream","choices":[{"index":0,"message":{"role":"assistant","content":"four"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"system_fingerprint":"fp"}"#;
        let completion = UpstreamCompletion::parse(body).unwrap();
        let usage = completion.usage().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 4));
        let shown = value(&completion.with_model("fast"));
        assert_eq!(shown["model"], "fast");
        assert_eq!(shown["system_fingerprint"], "fp");
        assert_eq!(shown["choices"][0]["message"]["content"], "four");
        assert_eq!(completion.output_text_bytes().unwrap(), 4);
    }

    #[test]
    fn a_completion_without_usage_or_model_still_bills_and_names_the_model() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"abc"}},{"index":1,"message":{"role":"assistant","content":"de"}}]}"#;
        let completion = UpstreamCompletion::parse(body).unwrap();
        assert!(completion.usage().is_none());
        assert_eq!(completion.output_text_bytes().unwrap(), 5);
        assert_eq!(value(&completion.with_model("fast"))["model"], "fast");
    }

    #[test]
    fn malformed_completions_and_usage_are_errors() {
        assert!(UpstreamCompletion::parse(b"[1]").is_err());
        assert!(UpstreamCompletion::parse(b"{\"usage\":{\"prompt_tokens\":-1}}").is_err());
        assert!(UpstreamCompletion::parse(b"{\"choices\":[]").is_err());
        let odd = UpstreamCompletion::parse(br#"{"choices":"no"}"#).unwrap();
        assert!(odd.output_text_bytes().is_err());
    }
}
