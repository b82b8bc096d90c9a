"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (no browser download). Signs in,
creates a key and reads its value from the dialog, uses it, revokes it and sees the next API call fail; rolls a key
and uses both; a member sees no controls and a forged POST is refused; a POST without the CSRF token is refused;
sign-in is throttled. With TOLLGATE_SCREENSHOTS=DIR, every page is saved there as PNG (scripts/screenshots does this
for docs/screenshots/)."""

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import OPERATOR_TOKEN, new_project_key

playwright = pytest.importorskip("playwright.sync_api")

PASSWORD = "correct horse battery staple"


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        # CI requires the browser (TOLLGATE_TEST_BROWSER=1); elsewhere a missing one skips these tests, and says so.
        if os.environ.get("TOLLGATE_TEST_BROWSER") == "1":
            raise RuntimeError("TOLLGATE_TEST_BROWSER=1 but no chromium: apt-get install chromium (or set CHROMIUM)")
        pytest.skip("no chromium: apt-get install chromium (or set CHROMIUM) to run the dashboard's browser tests")
    return path


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        # The sandbox needs user namespaces, which CI's root container may not give.
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


def shot(page, name: str) -> None:
    out = os.environ.get("TOLLGATE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def operator(server: str, method: str, path: str, body: dict) -> dict:
    r = httpx.request(method, f"{server}{path}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture
def org(server):
    """A funded tenant whose owner has a password, a read-only member with one, and some traffic to show."""
    email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    created = operator(
        server,
        "POST",
        "/operator/v1/tenants",
        {"name": "Acme Robotics", "plan": "pro", "owner_email": email, "owner_password": PASSWORD},
    )
    tenant_id = created["tenant"]["id"]
    operator(server, "POST", f"/operator/v1/tenants/{tenant_id}/credits", {"amount_cents": 2_500, "reason": "welcome"})
    admin = created["admin_key"]["value"]
    member_email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(
        f"{server}/v1/organization/members",
        headers={"Authorization": f"Bearer {admin}"},
        json={"email": member_email, "role": "member", "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    project_id = created["project"]["id"]
    key = new_project_key(server, admin, project_id, "production backend")
    for text in ("hello", "how are you", "tell me a story"):
        r = httpx.post(
            f"{server}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key['value']}"},
            json={"model": "fast", "messages": [{"role": "user", "content": text}]},
        )
        assert r.status_code == 200, r.text
    return {"email": email, "member_email": member_email, "admin": admin, "project_id": project_id, "key": key}


def sign_in(browser, server: str, email: str, password: str = PASSWORD):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/dashboard")
    assert "/dashboard/login" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page


def models_status(server: str, key: str) -> int:
    return httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code


def key_row(page, name: str):
    return page.locator("tr[data-key-id]", has_text=name)


def test_create_a_key_use_it_and_revoke_it_in_the_ui(browser, server, org):
    page = sign_in(browser, server, org["email"])
    page.get_by_role("link", name="API keys").click()
    assert page.title().startswith("API keys")
    shot(page, "api-keys")
    page.locator("#create-name").fill("from the browser")
    page.locator("#create-description").fill("made in a test")
    page.get_by_role("button", name="Create key").click()
    dialog = page.locator("#new-key-dialog")
    dialog.wait_for(state="visible")
    shot(page, "api-key-created")
    value = page.locator("#new-key-value").inner_text().strip()
    assert value.startswith("sk_live_")
    assert "will not be shown again" in dialog.inner_text()
    assert models_status(server, value) == 200
    dialog.get_by_role("button", name="Done").click()
    row = key_row(page, "from the browser")
    assert row.count() == 1
    assert value not in page.content(), "the value is shown once, in the dialog only"
    assert value[-4:] in row.inner_text()
    key_id = row.get_attribute("data-key-id")
    row.get_by_role("button", name="Revoke").click()
    page.locator(f"#revoke-{key_id}").get_by_role("button", name="Revoke key").click()
    page.wait_for_load_state()
    assert "revoked" in key_row(page, "from the browser").inner_text().lower()
    assert models_status(server, value) == 401


def test_roll_a_key_and_both_work_during_the_grace_period(browser, server, org):
    page = sign_in(browser, server, org["email"])
    page.get_by_role("link", name="API keys").click()
    old = org["key"]["value"]
    row = key_row(page, "production backend")
    key_id = row.get_attribute("data-key-id")
    row.get_by_role("button", name="Roll").click()
    page.locator(f"#roll-{key_id}-grace").fill("3600")
    page.locator(f"#roll-{key_id}").get_by_role("button", name="Roll key").click()
    page.locator("#new-key-dialog").wait_for(state="visible")
    new = page.locator("#new-key-value").inner_text().strip()
    assert new != old and new.startswith("sk_live_")
    assert models_status(server, old) == 200
    assert models_status(server, new) == 200


def test_a_member_sees_no_controls_and_a_forged_post_is_refused(browser, server, org):
    owner = sign_in(browser, server, org["email"])
    owner.get_by_role("link", name="API keys").click()
    create_action = owner.locator("form", has=owner.get_by_role("button", name="Create key")).get_attribute("action")
    assert create_action
    member = sign_in(browser, server, org["member_email"])
    member.get_by_role("link", name="API keys").click()
    assert member.get_by_role("button", name="Create key").count() == 0
    assert key_row(member, "production backend").count() == 1
    assert key_row(member, "production backend").get_by_role("button", name="Revoke").count() == 0
    # The member's own session and CSRF token, posting the owner's form by hand.
    csrf = member.locator("input[name=csrf]").first.get_attribute("value")
    r = member.request.post(f"{server}{create_action}", form={"csrf": csrf, "name": "forged", "description": ""})
    assert r.status == 403
    keys = httpx.get(
        f"{server}/v1/organization/projects/{org['project_id']}/api_keys",
        headers={"Authorization": f"Bearer {org['admin']}"},
    ).json()
    assert all(k["name"] != "forged" for k in keys["data"])
    shot(member, "api-keys-member")


def test_a_post_without_the_csrf_token_is_refused(browser, server, org):
    page = sign_in(browser, server, org["email"])
    page.get_by_role("link", name="API keys").click()
    action = page.locator("form", has=page.get_by_role("button", name="Create key")).get_attribute("action")
    for form in ({"name": "no token"}, {"name": "bad token", "csrf": "0" * 64}):
        r = page.request.post(f"{server}{action}", form=form)
        assert r.status == 403, form
    keys = httpx.get(
        f"{server}/v1/organization/projects/{org['project_id']}/api_keys",
        headers={"Authorization": f"Bearer {org['admin']}"},
    ).json()
    assert all(k["name"] not in ("no token", "bad token") for k in keys["data"])


def test_every_page_renders_for_the_owner(browser, server, org):
    page = sign_in(browser, server, org["email"])
    for link, name in [
        ("Projects", "projects"),
        ("Members", "members"),
        ("Usage", "usage"),
        ("Audit log", "audit-log"),
        ("Credits", "credits"),
    ]:
        page.get_by_role("link", name=link).click()
        page.wait_for_load_state()
        assert page.title().startswith(link), page.title()
        assert page.get_by_role("link", name=link).get_attribute("aria-current") == "page"
        shot(page, name)
    page.get_by_role("link", name="Usage").click()
    assert page.locator("svg").count() >= 1, "the usage chart is drawn"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert "/dashboard/login" in page.url
    page.goto(f"{server}/dashboard")
    assert "/dashboard/login" in page.url, "signed out for good"


def test_sign_in_is_throttled_and_a_wrong_password_says_so(browser, server, org):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/dashboard/login")
    shot(page, "sign-in")
    messages = []
    for _ in range(12):
        page.get_by_label("Email").fill(org["email"])
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        messages.append(page.locator("main").inner_text())
    assert "Email or password is wrong" in messages[0]
    assert any("Too many failed sign-ins. Wait" in m for m in messages), messages[-1]
    # While throttled, even the right password is refused.
    page.get_by_label("Email").fill(org["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert "/dashboard/login" in page.url
    assert "Too many failed sign-ins" in page.locator("main").inner_text()
