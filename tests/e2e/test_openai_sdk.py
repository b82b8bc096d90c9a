"""OpenAI's official Python SDK, unchanged, against Tollgate: models, chat, streaming, and our errors as the SDK's
exception classes."""

import httpx
import openai
import pytest
from conftest import new_project_key


@pytest.fixture
def client(server, tenant):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=tenant["project_key"], max_retries=0)


def test_models_are_listed_and_retrieved(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["fast", "echo"]
    assert client.models.retrieve("fast").id == "fast"


def test_chat_through_the_upstream_answers_with_the_public_model(client):
    completion = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    assert completion.model == "fast"
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion._request_id and completion._request_id.startswith("req_")


def test_chat_with_echo(client):
    completion = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "say this back"}]
    )
    assert completion.choices[0].message.content == "say this back"


def test_streaming_yields_chunks_and_usage_when_asked(client):
    stream = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(c.model == "fast" for c in chunks)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text

    with_usage = list(
        client.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage.completion_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices) == text


def test_unknown_model_is_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    assert err.value.status_code == 404


def test_bad_key_is_authentication_error(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="sk_live_not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.message.endswith("Malformed API key") or "Malformed API key" in str(err.value)


def test_a_revoked_key_fails_on_its_next_request(server, tenant):
    key = new_project_key(server, tenant["admin_key"], tenant["project_id"], "to-revoke")
    c = openai.OpenAI(base_url=f"{server}/v1", api_key=key["value"], max_retries=0)
    assert c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    r = httpx.delete(
        f"{server}/v1/organization/projects/{tenant['project_id']}/api_keys/{key['id']}",
        headers={"Authorization": f"Bearer {tenant['admin_key']}"},
    )
    assert r.status_code == 200 and r.json()["deleted"] is True
    with pytest.raises(openai.AuthenticationError) as err:
        c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert "API key revoked" in str(err.value)


def test_an_unfunded_tenant_gets_a_402_the_sdk_can_read(server):
    from conftest import OPERATOR_TOKEN

    created = httpx.post(
        f"{server}/operator/v1/tenants",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        json={"name": "Broke", "plan": "free", "owner_email": "broke@example.com"},
    ).json()
    key = new_project_key(server, created["admin_key"]["value"], created["project"]["id"], "broke")
    c = openai.OpenAI(base_url=f"{server}/v1", api_key=key["value"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 402
    assert err.value.body["type"] == "insufficient_balance"
    assert err.value.body["details"]["balance_before_cents"] == 0
    # The free model still answers.
    assert c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])


def test_a_rate_limited_key_gets_a_429_the_sdk_raises_as_rate_limit_error(server):
    from conftest import OPERATOR_TOKEN

    created = httpx.post(
        f"{server}/operator/v1/tenants",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        json={"name": "Limited", "plan": "limited", "owner_email": "limited@example.com"},
    ).json()
    key = new_project_key(server, created["admin_key"]["value"], created["project"]["id"], "limited")
    c = openai.OpenAI(base_url=f"{server}/v1", api_key=key["value"], max_retries=0)
    # One request a minute: the first is admitted and says so in its headers.
    first = c.chat.completions.with_raw_response.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 429
    assert err.value.code == "rate_limit_exceeded"
    assert "the organization's requests per minute" in err.value.message
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_a_retry_with_the_same_idempotency_key_is_replayed(client):
    headers = {"Idempotency-Key": "sdk-retry-1"}
    first = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "once only"}], extra_headers=headers
    )
    assert "idempotent-replayed" not in first.headers
    again = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "once only"}], extra_headers=headers
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().id == first.parse().id
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    # The same key with another request is the SDK's UnprocessableEntityError.
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "something else"}], extra_headers=headers
        )
    assert err.value.code == "idempotency_key_reused"
    # A streamed replay parses as the same stream.
    stream_headers = {"Idempotency-Key": "sdk-stream-1"}
    texts = []
    for _ in range(2):
        stream = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "stream once"}], stream=True,
            extra_headers=stream_headers,
        )
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts[0] and texts[0] == texts[1]
