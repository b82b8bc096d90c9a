"""Starts the real `tollgate` binary (TOLLGATE_BIN) and its mock upstream as processes, on free loopback ports,
with a temporary SQLite database (or TOLLGATE_E2E_DATABASE_URL's, e.g. a fresh PostgreSQL database); creates a
tenant and a project key through the HTTP APIs."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

OPERATOR_TOKEN = "e2e-operator-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become healthy at {url}")


@pytest.fixture(scope="session")
def binary() -> str:
    path = os.environ.get("TOLLGATE_BIN")
    if not path or not Path(path).is_file():
        raise RuntimeError("set TOLLGATE_BIN to the built tollgate binary (scripts/test does)")
    return path


@pytest.fixture(scope="session")
def server(binary):
    """Yields the server's base URL; the mock upstream serves the `fast` model behind it."""
    work = tempfile.TemporaryDirectory()
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen(
        [binary, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = Path(work.name) / "tollgate.toml"
    config.write_text(
        f"""
listen = "127.0.0.1:{port}"
database_url = "{os.environ.get("TOLLGATE_E2E_DATABASE_URL") or f"sqlite://{work.name}/data/tollgate.db"}"

[[providers]]
id = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"

[[models]]
id = "fast"
provider = "mock"
upstream_model = "mock-model"
input_cents_per_million_tokens = 15
output_cents_per_million_tokens = 60

[[models]]
id = "echo"
provider = "builtin"
upstream_model = "echo"

# Plans with room for this suite's quick succession of requests, and one whose limit a test reaches on purpose.
[plans.free]
requests_per_minute = 600
tokens_per_minute = 1000000
[plans.pro]
requests_per_minute = 3000
tokens_per_minute = 10000000
[plans.limited]
requests_per_minute = 1
tokens_per_minute = 1000000
"""
    )
    env = dict(os.environ, TOLLGATE_OPERATOR_TOKEN=OPERATOR_TOKEN)
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{mock_port}/v1/models", mock, "mock upstream")
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, "tollgate")
        yield f"http://127.0.0.1:{port}"
    finally:
        for p in (proc, mock):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        work.cleanup()


@pytest.fixture(scope="session")
def tenant(server):
    """A tenant with its admin key and project, and a project key."""
    created = httpx.post(
        f"{server}/operator/v1/tenants",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        json={"name": "E2E", "plan": "pro", "owner_email": "e2e@example.com"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    granted = httpx.post(
        f"{server}/operator/v1/tenants/{body['tenant']['id']}/credits",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        json={"amount_cents": 10_000, "reason": "e2e"},
    )
    assert granted.status_code == 200, granted.text
    admin_key = body["admin_key"]["value"]
    project_id = body["project"]["id"]
    key = new_project_key(server, admin_key, project_id, "e2e")
    return {"admin_key": admin_key, "project_id": project_id, "project_key": key["value"], "key_id": key["id"]}


def new_project_key(server: str, admin_key: str, project_id: str, name: str) -> dict:
    r = httpx.post(
        f"{server}/v1/organization/projects/{project_id}/api_keys",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"name": name},
    )
    assert r.status_code == 201, r.text
    return r.json()
