"""The /ui pages in real headless Chromium against ``sshca serve`` on 127.0.0.1.

Chromium is Debian's package, started through Playwright with
``executable_path``, so nothing downloads a browser. One browser and one
server serve the whole module. Each test gets a fresh browser context, so
cookies never leak from one test to the next.
"""

from __future__ import annotations

import csv
import io
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.live_server import LiveServer
from tests.web.conftest import INVENTORY, POLICY, USERS

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("web-browser")]

CHROMIUM = "/usr/bin/chromium"

# Without the background-networking flags Chromium reaches out to Google
# services at start; the tests send traffic to 127.0.0.1 only.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    users = {name: {"groups": list(groups), "auditor": auditor} for name, (groups, auditor) in USERS.items()}
    with LiveServer(tmp_path_factory.mktemp("web-live"), policy=POLICY, inventory=INVENTORY, users=users) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def sign_in(page, server, user: str) -> None:
    page.goto("/ui/sign-in")
    page.fill("input[name=token]", server.token(user))
    page.click("button:has-text('Sign in')")
    page.wait_for_selector(f"header .who strong:text-is('{user}')")


def create_request(server, user: str, *, hosts=("group:prod-db",), reason="restart the replica") -> int:
    response = server.post("/v1/requests", user=user, json={
        "hosts": list(hosts), "login": "deploy", "duration": "1h", "reason": reason,
    })
    assert response.status_code == 201, response.text
    return response.json()["id"]


def request_json(server, request_id: int) -> dict:
    return server.get(f"/v1/requests/{request_id}", user="carol").json()


def approve_and_issue(server, user: str) -> int:
    """Create, approve and fetch a certificate for ``user``; return its serial."""
    request_id = create_request(server, user, reason=f"certificate for {user}")
    assert server.post(f"/v1/requests/{request_id}/approve", user="bob", json={}).status_code == 200
    public_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()
    response = server.post(f"/v1/requests/{request_id}/certificate", user=user, json={"public_key": public_key})
    assert response.status_code == 201, response.text
    return response.json()["serial"]


def test_approver_approves_from_inbox(page, server):
    request_id = create_request(server, "alice", reason="apply the schema migration")
    sign_in(page, server, "bob")

    page.click("nav >> text=Approvals")
    row = page.locator("tbody tr", has=page.locator(f"a[href='/ui/requests/{request_id}']"))
    assert "apply the schema migration" in row.inner_text()
    assert "0 of 1" in row.inner_text()
    row.locator(f"a[href='/ui/requests/{request_id}']").click()

    assert page.locator("h1 .state").inner_text() == "pending"
    page.fill("textarea[name=comment]", "migration reviewed")
    page.click("button:has-text('Approve')")

    assert page.locator("h1 .state").inner_text() == "approved"
    history = page.locator("table", has=page.locator("th:text-is('Approver')"))
    assert "bob" in history.inner_text()
    assert "migration reviewed" in history.inner_text()
    assert page.locator("button:has-text('Approve')").count() == 0

    state = request_json(server, request_id)
    assert state["state"] == "approved"
    assert [approval["approver"] for approval in state["approvals"]] == ["bob"]


def test_requester_cannot_approve_own(page, server):
    request_id = create_request(server, "alice")
    sign_in(page, server, "alice")
    page.goto(f"/ui/requests/{request_id}")

    assert page.locator("h1 .state").inner_text() == "pending"
    assert page.locator("button:has-text('Approve')").count() == 0
    assert page.locator("button:has-text('Deny')").count() == 0

    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = page.request.post(f"/ui/requests/{request_id}/approve", form={"csrf_token": csrf, "comment": "me"})
    assert forged.status == 403
    assert "your own request" in forged.text() or "not an approver" in forged.text()
    assert request_json(server, request_id)["state"] == "pending"
    assert request_json(server, request_id)["approvals"] == []


def test_post_without_csrf_rejected(page, server):
    request_id = create_request(server, "alice")
    sign_in(page, server, "bob")
    page.goto(f"/ui/requests/{request_id}")
    assert page.locator("button:has-text('Approve')").count() == 1

    for form in ({"comment": "no token"}, {"comment": "bad token", "csrf_token": "forged"}):
        response = page.request.post(f"/ui/requests/{request_id}/approve", form=form)
        assert response.status == 400
        assert "Form rejected" in response.text()
    assert request_json(server, request_id)["state"] == "pending"


def test_reason_markup_shown_as_text(page, server):
    reason = '<script>document.title="owned"</script><img src=x><b>bold</b>'
    request_id = create_request(server, "alice", reason=reason)
    sign_in(page, server, "bob")

    for path in (f"/ui/requests/{request_id}", "/ui/inbox"):
        page.goto(path)
        assert page.get_by_text(reason, exact=True).count() == 1, path
        assert page.locator("main b, main img, main script").count() == 0, path
        assert page.title() != "owned", path


def test_auditor_filters_and_downloads_csv(page, server):
    alice_serial = approve_and_issue(server, "alice")
    erin_serial = approve_and_issue(server, "erin")
    sign_in(page, server, "carol")

    page.click("nav >> text=Certificates")
    assert "Audit log verified" in page.locator("p.chain").inner_text()
    page.fill("form.filters input[name=user]", "alice")
    page.click("form.filters button:has-text('Filter')")
    page.wait_for_url("**/ui/certificates?*user=alice*")

    serials = page.locator("tbody tr td.num").all_inner_texts()
    assert str(alice_serial) in serials
    assert str(erin_serial) not in serials

    with page.expect_download() as download_info:
        page.click(".downloads a:text-is('CSV')")
    download = download_info.value
    assert download.suggested_filename == "sshca-certificates.csv"
    with open(download.path(), newline="") as file:
        downloaded = list(csv.reader(file))

    api = server.get("/v1/certificates?user=alice&format=csv", user="carol")
    assert api.status_code == 200
    assert downloaded == list(csv.reader(io.StringIO(api.text)))
    assert {row[2] for row in downloaded[1:]} == {"alice"}
    assert str(alice_serial) in [row[0] for row in downloaded[1:]]


def test_sign_out_redirects_to_sign_in(page, server):
    sign_in(page, server, "carol")
    page.goto("/ui/events")
    assert page.locator("h1").inner_text() == "Audit events"

    page.click("header button:has-text('Sign out')")
    page.wait_for_url("**/ui/sign-in")
    assert "You are signed out." in page.locator("main").inner_text()

    for path in ("/ui/inbox", "/ui/my-requests", "/ui/requests/new", "/ui/certificates", "/ui/events"):
        page.goto(path)
        assert page.url.startswith(server.url + "/ui/sign-in?next="), path
        assert page.locator("input[name=token]").count() == 1, path


def test_engineer_requests_and_ends_access(page, server):
    sign_in(page, server, "erin")
    page.click("nav >> text=New request")
    page.check("input[name=hosts][value='db2.example.com']")
    page.select_option("select[name=login]", "postgres")
    page.fill("input[name=duration]", "45m")
    page.fill("textarea[name=reason]", "rebuild an index on db2")
    page.click("button:has-text('Send request')")

    page.wait_for_url("**/ui/requests/*")
    request_id = int(page.url.rsplit("/", 1)[1])
    assert page.locator("h1 .state").inner_text() == "pending"
    assert page.locator("pre.command").count() == 0
    created = request_json(server, request_id)
    assert (created["hosts"], created["login"], created["duration_seconds"]) == (["db2.example.com"], "postgres", 2700)

    assert server.post(f"/v1/requests/{request_id}/approve", user="bob", json={}).status_code == 200
    page.click("nav >> text=My requests")
    row = page.locator("tbody tr", has=page.locator(f"a[href='/ui/requests/{request_id}']"))
    assert "approved" in row.locator(".state").inner_text()
    assert "left" in row.inner_text()

    row.locator(f"a[href='/ui/requests/{request_id}']").click()
    assert page.locator("pre.command").inner_text() == f"sshca cert {request_id}"
    page.fill("form[action$='/revoke'] input[name=reason]", "index rebuilt")
    page.click("button:has-text('End access now')")

    assert page.locator("h1 .state").inner_text() == "revoked"
    assert request_json(server, request_id)["state"] == "revoked"


def test_live_pages_send_security_headers(page, server):
    response = page.goto("/ui/sign-in")
    headers = response.headers
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'self'")
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"

    # The stylesheet loads under the policy: the sign-in box is laid out by it.
    assert page.locator(".signin").evaluate("element => getComputedStyle(element).maxWidth") == "416px"
