"""The /ui pages through Flask's test client: sign-in, CSRF, headers, approvals, auditor views."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server import admin
from server.app import create_app
from server.db import Database
from server.models import AuditEvent
from tests.web.conftest import api_get, api_request, csrf_from, sign_in

PAGES = ["/ui/", "/ui/inbox", "/ui/my-requests", "/ui/requests/new", "/ui/certificates", "/ui/events"]


@pytest.fixture
def client(app):
    return app.test_client()


def signed_in(app, site, name):
    client = app.test_client()
    response = sign_in(client, site.tokens[name])
    assert response.status_code == 303
    return client


def request_state(app, site, request_id) -> dict:
    return api_get(app.test_client(), site.tokens["carol"], f"/v1/requests/{request_id}").get_json()


# -- sign-in, session and headers ---------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/ui/sign-in?next=")


def test_sign_in_bad_token_rejected(client):
    page = client.get("/ui/sign-in")
    response = client.post("/ui/sign-in", data={"csrf_token": csrf_from(page.text), "token": "sshca_nope"})
    assert response.status_code == 401
    assert "unknown, expired or revoked" in response.text
    assert client.get("/ui/inbox").status_code == 303


def test_sign_in_blocked_after_repeated_failures(app, site):
    # A documentation address of its own, so other tests' sign-ins are not blocked.
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.77"
    limiter = app.extensions["sshca"].auth_failures
    page = client.get("/ui/sign-in")
    form = {"csrf_token": csrf_from(page.text), "token": "sshca_nope"}

    statuses = [client.post("/ui/sign-in", data=form).status_code for _ in range(limiter.max_failures)]
    blocked = client.post("/ui/sign-in", data=dict(form, token=site.tokens["alice"]))

    assert set(statuses) == {401}
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text
    assert client.get("/ui/inbox").status_code == 303


def test_sign_in_without_csrf_rejected(client, site):
    client.get("/ui/sign-in")
    response = client.post("/ui/sign-in", data={"token": site.tokens["alice"]})
    assert response.status_code == 400
    assert client.get("/ui/my-requests").status_code == 303


def test_session_cookie_flags(client, site):
    response = sign_in(client, site.tokens["alice"])
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("sshca_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires=" in cookie
    assert "Secure" not in cookie


def test_session_cookie_secure_over_https(app, site):
    client = app.test_client()
    page = client.get("/ui/sign-in", base_url="https://localhost")
    response = client.post(
        "/ui/sign-in", base_url="https://localhost",
        data={"csrf_token": csrf_from(page.text), "token": site.tokens["alice"]},
    )
    assert response.status_code == 303
    assert "; Secure" in response.headers["Set-Cookie"]


def test_cookie_holds_no_token(client, site):
    response = sign_in(client, site.tokens["alice"])
    assert site.tokens["alice"] not in response.headers["Set-Cookie"]
    with client.session_transaction() as session:
        assert site.tokens["alice"] not in json.dumps(dict(session))


def test_sign_in_redirects_to_next(client, site):
    page = client.get("/ui/sign-in?next=/ui/my-requests")
    response = client.post("/ui/sign-in", data={
        "csrf_token": csrf_from(page.text), "token": site.tokens["alice"], "next": "/ui/my-requests",
    })
    assert response.headers["Location"] == "/ui/my-requests"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/v1/requests", "/\\evil.example"])
def test_sign_in_ignores_foreign_next(client, site, target):
    page = client.get("/ui/sign-in")
    response = client.post("/ui/sign-in", data={
        "csrf_token": csrf_from(page.text), "token": site.tokens["alice"], "next": target,
    })
    assert response.headers["Location"] == "/ui/"


def test_security_headers_on_pages(app, site):
    client = signed_in(app, site, "alice")
    for path in ["/ui/sign-in", "/ui/my-requests", "/ui/requests/new", "/ui/no-such-page"]:
        headers = client.get(path).headers
        assert headers["Content-Security-Policy"] == (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ), path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Cache-Control"] == "no-store", path


def test_pages_have_no_inline_script(app, site):
    client = signed_in(app, site, "carol")
    for path in ["/ui/sign-in", "/ui/inbox", "/ui/my-requests", "/ui/certificates", "/ui/events"]:
        html = client.get(path).text.lower()
        assert "<script" not in html, path
        assert " style=" not in html, path
        assert not re.search(r"<[^>]+\son[a-z]+=", html), path


def test_stylesheet_served(client):
    with client.get("/ui/static/style.css") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/css"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_sign_out_ends_session(app, site):
    client = signed_in(app, site, "alice")
    page = client.get("/ui/my-requests")
    assert page.status_code == 200

    response = client.post("/ui/sign-out", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/sign-in"
    for path in PAGES:
        assert client.get(path).status_code == 303, path


def test_sign_out_needs_csrf(app, site):
    client = signed_in(app, site, "alice")
    assert client.post("/ui/sign-out").status_code == 400
    assert client.get("/ui/my-requests").status_code == 200


def test_revoked_token_ends_session(app, site):
    token_id, token = admin.create_token(site.config, "erin")
    client = app.test_client()
    sign_in(client, token)
    assert client.get("/ui/my-requests").status_code == 200

    admin.revoke_tokens(site.config, token_id=token_id)
    assert client.get("/ui/my-requests").status_code == 303


def test_session_lifetime_enforced(app, site):
    client = signed_in(app, site, "alice")
    with client.session_transaction() as session:
        session["signed_in_at"] -= int(timedelta(hours=8, seconds=1).total_seconds())
    assert client.get("/ui/my-requests").status_code == 303


# -- CSRF on actions ------------------------------------------------------------------


def test_approve_without_csrf_rejected(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "bob")

    response = client.post(f"/ui/requests/{created['id']}/approve", data={"comment": "ok"})
    assert response.status_code == 400
    assert "Form rejected" in response.text
    assert request_state(app, site, created["id"])["state"] == "pending"
    assert request_state(app, site, created["id"])["approvals"] == []


def test_approve_with_other_session_csrf_rejected(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    other = signed_in(app, site, "dave")
    foreign_token = csrf_from(other.get("/ui/inbox").text)
    client = signed_in(app, site, "bob")
    client.get("/ui/inbox")

    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": foreign_token})
    assert response.status_code == 400
    assert request_state(app, site, created["id"])["state"] == "pending"


# -- approvals ------------------------------------------------------------------------


def test_inbox_lists_actionable_oldest_first(app, site):
    api_client = app.test_client()
    first = api_request(api_client, site.tokens["alice"], reason="first in line")
    second = api_request(api_client, site.tokens["erin"], reason="second in line")
    client = signed_in(app, site, "bob")

    html = client.get("/ui/inbox").text
    first_link = f'href="/ui/requests/{first["id"]}"'
    second_link = f'href="/ui/requests/{second["id"]}"'
    assert first_link in html
    assert second_link in html
    assert html.index(first_link) < html.index(second_link)
    assert "first in line" in html
    assert "sre-db" in html
    assert "0 of 1" in html


def test_inbox_hides_own_and_decided(app, site):
    api_client = app.test_client()
    own = api_request(api_client, site.tokens["alice"], reason="alice asks")
    voted = api_request(api_client, site.tokens["alice"], hosts=["web1.example.com"], reason="needs two")
    api_client.post(f"/v1/requests/{voted['id']}/approve", headers={"Authorization": f"Bearer {site.tokens['bob']}"}, json={})

    bob = signed_in(app, site, "bob")
    bob_inbox = bob.get("/ui/inbox").text
    assert f'href="/ui/requests/{own["id"]}"' in bob_inbox
    assert f'href="/ui/requests/{voted["id"]}"' not in bob_inbox

    alice = signed_in(app, site, "alice")
    assert f'href="/ui/requests/{own["id"]}"' not in alice.get("/ui/inbox").text

    mallory = signed_in(app, site, "mallory")
    assert "Nothing is waiting for you" in mallory.get("/ui/inbox").text


def test_approve_from_page(app, site):
    created = api_request(app.test_client(), site.tokens["alice"], reason="rotate keys")
    client = signed_in(app, site, "bob")
    page = client.get(f"/ui/requests/{created['id']}")
    assert ">Approve</button>" in page.text

    response = client.post(f"/ui/requests/{created['id']}/approve", data={
        "csrf_token": csrf_from(page.text), "comment": "looks fine",
    })
    assert response.status_code == 303

    after = client.get(response.headers["Location"]).text
    assert "state-approved" in after
    assert "looks fine" in after
    assert ">Approve</button>" not in after
    state = request_state(app, site, created["id"])
    assert state["state"] == "approved"
    assert [(a["approver"], a["decision"], a["comment"]) for a in state["approvals"]] == [("bob", "approve", "looks fine")]


def test_two_approvals_needed(app, site):
    created = api_request(app.test_client(), site.tokens["alice"], hosts=["web1.example.com"])
    for name, expected in (("bob", "pending"), ("dave", "approved")):
        client = signed_in(app, site, name)
        page = client.get(f"/ui/requests/{created['id']}")
        client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
        assert request_state(app, site, created["id"])["state"] == expected


def test_deny_from_page(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "bob")
    page = client.get(f"/ui/requests/{created['id']}")

    response = client.post(f"/ui/requests/{created['id']}/deny", data={
        "csrf_token": csrf_from(page.text), "comment": "not during the freeze",
    })
    assert response.status_code == 303
    assert "state-denied" in client.get(response.headers["Location"]).text
    assert request_state(app, site, created["id"])["state"] == "denied"


def test_own_request_has_no_approve_button(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "alice")
    page = client.get(f"/ui/requests/{created['id']}")
    assert page.status_code == 200
    assert ">Approve</button>" not in page.text
    assert ">Deny</button>" not in page.text

    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    assert request_state(app, site, created["id"])["state"] == "pending"


def test_self_approval_rejected_for_approver(tmp_path):
    # An approver who is also a requester sees no button on their own request,
    # and the service rejects the POST with its self-approval message.
    from tests.web.conftest import make_site

    site = make_site(tmp_path)
    admin.set_user_groups(site.config, "bob", ["dba-leads", "sre"])
    app = create_app(site.config)
    try:
        created = api_request(app.test_client(), site.tokens["bob"])
        client = signed_in(app, site, "bob")
        page = client.get(f"/ui/requests/{created['id']}")
        assert ">Approve</button>" not in page.text
        assert f'href="/ui/requests/{created["id"]}"' not in client.get("/ui/inbox").text

        response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
        assert response.status_code == 403
        assert "your own request" in response.text
        assert request_state(app, site, created["id"])["state"] == "pending"
    finally:
        app.extensions["sshca"].close()


def test_non_approver_forged_post_rejected(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "erin")
    page = client.get("/ui/my-requests")

    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    assert request_state(app, site, created["id"])["state"] == "pending"


def test_second_vote_rejected(app, site):
    created = api_request(app.test_client(), site.tokens["alice"], hosts=["web1.example.com"])
    client = signed_in(app, site, "bob")
    page = client.get(f"/ui/requests/{created['id']}")
    token = csrf_from(page.text)
    client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": token})

    assert ">Approve</button>" not in client.get(f"/ui/requests/{created['id']}").text
    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": token})
    assert response.status_code == 409
    assert "counts once" in response.text
    assert len(request_state(app, site, created["id"])["approvals"]) == 1


def test_decided_request_has_no_buttons(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    bob = signed_in(app, site, "bob")
    bob.post(f"/ui/requests/{created['id']}/deny", data={"csrf_token": csrf_from(bob.get("/ui/inbox").text)})

    dave = signed_in(app, site, "dave")
    page = dave.get(f"/ui/requests/{created['id']}")
    assert ">Approve</button>" not in page.text
    response = dave.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 409
    assert request_state(app, site, created["id"])["state"] == "denied"


def test_uninvolved_user_gets_403(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "mallory")
    assert client.get(f"/ui/requests/{created['id']}").status_code == 403


def test_unknown_request_404(app, site):
    client = signed_in(app, site, "bob")
    assert client.get("/ui/requests/999999").status_code == 404
    assert client.get(f"/ui/requests/{2**70}").status_code == 404


def test_reason_markup_shown_as_text(app, site):
    reason = '<script>alert("x")</script><b>bold</b> & "quotes"'
    created = api_request(app.test_client(), site.tokens["alice"], reason=reason)
    client = signed_in(app, site, "bob")
    for path in [f"/ui/requests/{created['id']}", "/ui/inbox"]:
        html = client.get(path).text
        assert "<script>alert" not in html, path
        assert "<b>bold</b>" not in html, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quotes&#34;" in html, path


# -- engineer pages -----------------------------------------------------------------------


def test_new_request_form_offers_policy_choices(app, site):
    client = signed_in(app, site, "alice")
    html = client.get("/ui/requests/new").text
    for target in ["group:prod-db", "db1.example.com", "db2.example.com", "web1.example.com"]:
        assert f'value="{target}"' in html, target
    for login in ["deploy", "postgres"]:
        assert f'<option value="{login}"' in html, login

    mallory = signed_in(app, site, "mallory")
    assert "No policy rule lets you request access" in mallory.get("/ui/requests/new").text


def test_new_request_created(app, site):
    client = signed_in(app, site, "alice")
    page = client.get("/ui/requests/new")
    response = client.post("/ui/requests/new", data={
        "csrf_token": csrf_from(page.text), "hosts": ["db1.example.com"], "login": "postgres",
        "duration": "90m", "reason": "vacuum a table",
    })
    assert response.status_code == 303
    request_id = int(response.headers["Location"].rsplit("/", 1)[1])
    state = request_state(app, site, request_id)
    assert state["requester"] == "alice"
    assert state["hosts"] == ["db1.example.com"]
    assert state["login"] == "postgres"
    assert state["duration_seconds"] == 5400
    assert state["reason"] == "vacuum a table"
    assert state["state"] == "pending"


@pytest.mark.parametrize("fields, message", [
    ({"duration": "5h"}, "longer than the 4h"),
    ({"duration": "soon"}, "invalid duration"),
    ({"reason": "  "}, "must not be empty"),
    ({"hosts": []}, "at least one host"),
    ({"login": "root"}, "does not exist on host"),
    ({"hosts": ["nope.example.com"]}, "unknown host"),
])
def test_new_request_invalid_input(app, site, fields, message):
    client = signed_in(app, site, "alice")
    page = client.get("/ui/requests/new")
    data = {"hosts": ["db1.example.com"], "login": "deploy", "duration": "1h", "reason": "check", **fields}
    data["csrf_token"] = csrf_from(page.text)
    before = len(api_get(client, site.tokens["alice"], "/v1/requests").get_json()["requests"])

    response = client.post("/ui/requests/new", data=data)
    assert response.status_code == 400
    assert message in response.text
    assert len(api_get(client, site.tokens["alice"], "/v1/requests").get_json()["requests"]) == before


def test_my_requests_and_cert_command(app, site):
    created = api_request(app.test_client(), site.tokens["erin"], reason="erin's own work")
    other = api_request(app.test_client(), site.tokens["alice"], reason="alice's work")
    client = signed_in(app, site, "erin")

    html = client.get("/ui/my-requests").text
    assert f'href="/ui/requests/{created["id"]}"' in html
    assert f'href="/ui/requests/{other["id"]}"' not in html
    assert "state-pending" in html
    assert f"sshca cert {created['id']}" not in client.get(f"/ui/requests/{created['id']}").text

    app.test_client().post(f"/v1/requests/{created['id']}/approve", headers={"Authorization": f"Bearer {site.tokens['bob']}"}, json={})
    page = client.get(f"/ui/requests/{created['id']}").text
    assert f"sshca cert {created['id']}" in page
    assert "Access window" in page


def test_cancel_own_request(app, site):
    created = api_request(app.test_client(), site.tokens["erin"])
    client = signed_in(app, site, "erin")
    page = client.get(f"/ui/requests/{created['id']}")
    assert "Cancel this request" in page.text

    response = client.post(f"/ui/requests/{created['id']}/cancel", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 303
    assert request_state(app, site, created["id"])["state"] == "cancelled"


def test_end_access_early(app, site):
    created = api_request(app.test_client(), site.tokens["erin"])
    app.test_client().post(f"/v1/requests/{created['id']}/approve", headers={"Authorization": f"Bearer {site.tokens['bob']}"}, json={})
    client = signed_in(app, site, "erin")
    page = client.get(f"/ui/requests/{created['id']}")
    assert "End access now" in page.text

    missing_reason = client.post(f"/ui/requests/{created['id']}/revoke", data={"csrf_token": csrf_from(page.text)})
    assert missing_reason.status_code == 400
    assert request_state(app, site, created["id"])["state"] == "approved"

    response = client.post(f"/ui/requests/{created['id']}/revoke", data={
        "csrf_token": csrf_from(page.text), "reason": "done early",
    })
    assert response.status_code == 303
    assert request_state(app, site, created["id"])["state"] == "revoked"
    assert "End access now" not in client.get(f"/ui/requests/{created['id']}").text


# -- auditor pages ------------------------------------------------------------------------


def issue_certificate(app, site, user="alice") -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    api_client = app.test_client()
    created = api_request(api_client, site.tokens[user])
    api_client.post(f"/v1/requests/{created['id']}/approve", headers={"Authorization": f"Bearer {site.tokens['bob']}"}, json={})
    public_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()
    response = api_client.post(
        f"/v1/requests/{created['id']}/certificate", headers={"Authorization": f"Bearer {site.tokens[user]}"},
        json={"public_key": public_key},
    )
    assert response.status_code == 201, response.text
    return response.get_json()


def test_auditor_pages_need_auditor(app, site):
    client = signed_in(app, site, "bob")
    for path in ["/ui/certificates", "/ui/events", "/ui/certificates.csv", "/ui/events.jsonl"]:
        assert client.get(path).status_code == 403, path
    assert "Audit events" not in client.get("/ui/inbox").text


def test_certificates_filter_by_user(app, site):
    alice_cert = issue_certificate(app, site, "alice")
    erin_cert = issue_certificate(app, site, "erin")
    client = signed_in(app, site, "carol")

    html = client.get("/ui/certificates?user=erin").text
    assert "Audit log verified" in html
    assert f'<td class="num">{erin_cert["serial"]}</td>' in html
    assert f'<td class="num">{alice_cert["serial"]}</td>' not in html


def test_certificate_downloads_match_api(app, site):
    issue_certificate(app, site, "alice")
    issue_certificate(app, site, "erin")
    client = signed_in(app, site, "carol")
    token = site.tokens["carol"]

    for output in ("csv", "jsonl"):
        with client.get(f"/ui/certificates.{output}?user=alice&active=true") as page:
            assert page.status_code == 200
            assert page.headers["Content-Disposition"] == f'attachment; filename="sshca-certificates.{output}"'
            downloaded = page.data
        with api_get(app.test_client(), token, f"/v1/certificates?user=alice&active=true&format={output}") as api:
            assert downloaded == api.data
        assert downloaded.count(b"\n") >= 2

    rows = list(csv.DictReader(io.StringIO(client.get("/ui/certificates.csv?user=alice").text)))
    assert rows
    assert {row["user"] for row in rows} == {"alice"}


def test_event_downloads_match_api(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "carol")
    for output in ("csv", "jsonl"):
        with client.get(f"/ui/events.{output}?request={created['id']}") as page:
            downloaded = page.data
        with api_get(app.test_client(), site.tokens["carol"], f"/v1/audit/events?request={created['id']}&format={output}") as api:
            assert downloaded == api.data
    lines = client.get(f"/ui/events.jsonl?request={created['id']}").text.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["request.created"]


def test_events_filters_and_links(app, site):
    created = api_request(app.test_client(), site.tokens["alice"], reason="linked events")
    client = signed_in(app, site, "carol")
    html = client.get(f"/ui/events?request={created['id']}&action=request.created").text
    assert f'href="/ui/requests/{created["id"]}"' in html
    assert "linked events" in html

    request_page = client.get(f"/ui/requests/{created['id']}").text
    assert f'href="/ui/events?request={created["id"]}"' in request_page


def test_events_paging(app, site):
    events = api_get(app.test_client(), site.tokens["carol"], "/v1/audit/events?limit=1000").get_json()["events"]
    for _ in range(max(0, 51 - len(events))):
        api_request(app.test_client(), site.tokens["erin"], reason="paging")
    client = signed_in(app, site, "carol")
    first = client.get("/ui/events").text
    assert "Next page" in first
    assert "First page" not in first

    start = first.index('href="/ui/events?after=') + len('href="')
    link = first[start:first.index('"', start)].replace("&amp;", "&")
    second = client.get(link)
    assert second.status_code == 200
    assert "First page" in second.text
    first_ids = re.findall(r'<td class="num">(\d+)</td>', first)
    second_ids = re.findall(r'<td class="num">(\d+)</td>', second.text)
    assert len(first_ids) == 50
    assert int(second_ids[0]) == int(first_ids[-1]) + 1


def test_invalid_filter_shows_message(app, site):
    client = signed_in(app, site, "carol")
    response = client.get("/ui/certificates?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.text
    response = client.get("/ui/events?request=abc")
    assert response.status_code == 400
    assert "request must be a whole number" in response.text


def test_tampered_chain_reported(tmp_path):
    from tests.web.conftest import make_site

    site = make_site(tmp_path)
    app = create_app(site.config)
    try:
        api_request(app.test_client(), site.tokens["alice"], reason="original")
        database = Database(site.config.database_url)
        with database.write() as session:
            event = session.execute(sa.select(AuditEvent).where(AuditEvent.action == "request.created")).scalar_one()
            event.details = event.details.replace("original", "edited")
            bad_id = event.id
            session.commit()
        database.dispose()

        client = signed_in(app, site, "carol")
        html = client.get("/ui/events").text
        assert "verification FAILED" in html
        assert f"at event {bad_id}" in html
    finally:
        app.extensions["sshca"].close()


# -- trusted proxy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_app(site):
    config = dataclasses.replace(site.config, trusted_proxies=("10.9.0.0/16",), proxy_user_header="X-Remote-User")
    application = create_app(config)
    yield application
    application.extensions["sshca"].close()


def test_proxy_header_from_trusted_address(proxy_app):
    client = proxy_app.test_client()
    response = client.get("/ui/my-requests", headers={"X-Remote-User": "alice"}, environ_base={"REMOTE_ADDR": "10.9.1.2"})
    assert response.status_code == 200
    assert "Signed in as <strong>alice</strong>" in response.text
    assert ">Sign out</button>" not in response.text


def test_proxy_header_from_other_address_ignored(proxy_app):
    client = proxy_app.test_client()
    for address in ("10.8.1.2", "127.0.0.1", "::1"):
        response = client.get("/ui/my-requests", headers={"X-Remote-User": "alice"}, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 303, address


def test_proxy_unknown_user_not_signed_in(proxy_app):
    client = proxy_app.test_client()
    response = client.get("/ui/my-requests", headers={"X-Remote-User": "nobody"}, environ_base={"REMOTE_ADDR": "10.9.1.2"})
    assert response.status_code == 303


def test_proxy_mode_off_by_default(app):
    client = app.test_client()
    response = client.get("/ui/my-requests", headers={"X-Remote-User": "alice"}, environ_base={"REMOTE_ADDR": "10.9.1.2"})
    assert response.status_code == 303


def test_proxy_actions_need_csrf(proxy_app, site):
    created = api_request(proxy_app.test_client(), site.tokens["alice"])
    client = proxy_app.test_client()
    proxy = {"headers": {"X-Remote-User": "bob"}, "environ_base": {"REMOTE_ADDR": "10.9.1.2"}}
    assert client.post(f"/ui/requests/{created['id']}/approve", **proxy).status_code == 400

    page = client.get(f"/ui/requests/{created['id']}", **proxy)
    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)}, **proxy)
    assert response.status_code == 303
    assert api_get(proxy_app.test_client(), site.tokens["carol"], f"/v1/requests/{created['id']}").get_json()["state"] == "approved"


def test_disabled_user_sees_reason(app, site):
    admin.add_user(site.config, "gina", groups=["sre"])
    token = admin.create_token(site.config, "gina")[1]
    client = app.test_client()
    sign_in(client, token)
    assert client.get("/ui/my-requests").status_code == 200

    admin.set_user_disabled(site.config, "gina", True)
    response = client.get("/ui/my-requests")
    assert response.status_code == 403
    assert "disabled" in response.text


def test_extend_approved_request(app, site):
    created = api_request(app.test_client(), site.tokens["erin"])
    app.test_client().post(f"/v1/requests/{created['id']}/approve", headers={"Authorization": f"Bearer {site.tokens['bob']}"}, json={})
    client = signed_in(app, site, "erin")
    page = client.get(f"/ui/requests/{created['id']}")
    assert "Request extension" in page.text

    response = client.post(f"/ui/requests/{created['id']}/extend", data={
        "csrf_token": csrf_from(page.text), "duration": "30m", "reason": "the migration runs long",
    })
    assert response.status_code == 303
    extension_id = int(response.headers["Location"].rsplit("/", 1)[1])
    extension = request_state(app, site, extension_id)
    assert extension["extends"] == created["id"]
    assert extension["state"] == "pending"
    assert extension["requested_start"] == request_state(app, site, created["id"])["ends_at"]
    assert f'href="/ui/requests/{created["id"]}"' in client.get(f"/ui/requests/{extension_id}").text

    pending_page = client.get(f"/ui/requests/{extension_id}").text
    assert "Request extension" not in pending_page
    refused = client.post(f"/ui/requests/{extension_id}/extend", data={
        "csrf_token": csrf_from(page.text), "duration": "30m", "reason": "again",
    })
    assert refused.status_code == 409


def test_auditor_sees_request_without_buttons(app, site):
    created = api_request(app.test_client(), site.tokens["alice"])
    client = signed_in(app, site, "carol")
    page = client.get(f"/ui/requests/{created['id']}")
    assert page.status_code == 200
    assert ">Approve</button>" not in page.text
    assert ">Deny</button>" not in page.text

    response = client.post(f"/ui/requests/{created['id']}/approve", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 403
    assert "not an approver" in response.text
    assert request_state(app, site, created["id"])["state"] == "pending"


def test_chain_status_reused_within_max_age(site):
    app = create_app(site.config)
    try:
        client = signed_in(app, site, "carol")
        first = client.get("/ui/events").text
        runtime = app.extensions["sshca"]
        checked = runtime.last_verification.checked_at

        second = client.get("/ui/certificates").text

        assert "Audit log verified at" in first
        assert runtime.last_verification.checked_at == checked
        assert checked.strftime("%H:%M:%S UTC") in second
    finally:
        app.extensions["sshca"].close()
