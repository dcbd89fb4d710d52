"""The operator page in a real headless browser (Debian's chromium, driven by Playwright), and over HTTP.

The app is served by uvicorn on a free port over a real PostgreSQL; the browser signs in with the
API token as password, lists the active alerts, opens one through the link Grafana uses
(``/ui/alerts/{id}``) and acknowledges it; a wrong password is refused. The HTTP tests send what
no browser sends: hostile text, forged, tampered and expired cookies, malformed forms; each checks
that the alert is unchanged afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner
from plantmon_alerts.api import create_app
from plantmon_alerts.engine import Cleared, Raised
from plantmon_alerts.store import AlertStore
from plantmon_alerts.ui import MAX_FORM_BYTES
from plantmon_alerts.ui.session import session_serializer
from plantmon_common.service import serve_http
from plantmon_dev.procs import free_port
from playwright.async_api import BrowserContext, async_playwright, expect
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

TOKEN = "page-token-for-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T0 = datetime.now(UTC) - timedelta(hours=1)


def alert(rule: str, tag: str, severity: int, minutes: int, message: str) -> Raised:
    return Raised(uuid.uuid4(), rule, tag, severity, message, 101.5, T0 + timedelta(minutes=minutes))


@pytest.fixture
async def seeded(store: AlertStore) -> dict[str, Raised]:
    alerts = {
        "hot": alert("temperature_high", "Plant/Temperature/Upper", 4, 0, "Upper bearing is 101.5 °C"),
        "overspeed": alert("main_shaft_overspeed", "Plant/RPM/MainShaft", 5, 5, "Main shaft <b>overspeed</b>"),
        "gone": alert("supply_voltage_low", "Plant/Voltage/MainSupply", 3, 10, "Supply voltage low"),
    }
    gone = alerts["gone"]
    await store.write([*alerts.values(), Cleared(gone.alert_id, gone.rule, gone.tag_path, 3, 24.0, T0)])
    return alerts


@pytest.fixture
async def served(store: AlertStore) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    acknowledged: list[dict[str, Any]] = []
    app = create_app(store, CollectorRegistry(), lambda: (True, {}), SecretStr(TOKEN), on_ack=acknowledged.append)
    port = free_port()
    async with serve_http(app, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}", acknowledged


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()


async def test_an_operator_signs_in_sees_the_active_alerts_and_acknowledges_one(
    browser: BrowserContext, served: tuple[str, list[dict[str, Any]]], seeded: dict[str, Raised], store: AlertStore
) -> None:
    base, acknowledged = served
    page = await browser.new_page()

    # The list: open alerts only, most severe first, message escaped, each linking to its page.
    await page.goto(f"{base}/ui/alerts")
    rows = page.locator("#alerts tbody tr")
    await expect(rows).to_have_count(2)
    assert await rows.nth(0).get_attribute("data-alert-id") == str(seeded["overspeed"].alert_id)
    await expect(rows.nth(0)).to_contain_text("Main shaft <b>overspeed</b>")  # shown as text, not markup
    await expect(rows.nth(1)).to_contain_text("Plant/Temperature/Upper")
    await expect(page.locator("#alerts")).not_to_contain_text("Supply voltage low")  # cleared

    # The link Grafana's alert table uses; not signed in yet, so no form, a sign-in link instead.
    hot = seeded["hot"].alert_id
    await rows.nth(1).locator("a").click()
    await expect(page).to_have_url(f"{base}/ui/alerts/{hot}")
    await expect(page.locator("#state")).to_have_text("active")
    await expect(page.locator("form#ack")).to_have_count(0)
    await page.click("#sign-in")

    # A wrong password is refused.
    await page.fill("input[name=operator]", "Dana")
    await page.fill("input[name=password]", "not-the-token")
    async with page.expect_response(lambda r: r.url.endswith("/ui/login")) as refused:
        await page.click("button[type=submit]")
    assert (await refused.value).status == 401
    await expect(page.locator("#login-error")).to_have_text("Wrong operator name or password.")
    assert not [c for c in await browser.cookies() if c["name"] == "plantmon_session"]

    # The right one: back on the alert, signed in, with the acknowledge form.
    await page.fill("input[name=operator]", "Dana")
    await page.fill("input[name=password]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/ui/alerts/{hot}")
    await expect(page.locator("#operator")).to_have_text("Dana")
    [cookie] = [c for c in await browser.cookies() if c["name"] == "plantmon_session"]
    assert cookie["httpOnly"] and cookie["path"] == "/ui"

    await page.fill("input[name=comment]", "checked the bearing, oil topped up")
    await page.click("form#ack button[type=submit]")
    await expect(page.locator("#notice")).to_have_text("Acknowledged.")
    await expect(page.locator("#state")).to_have_text("acknowledged")
    await expect(page.locator("#acknowledged-by")).to_have_text("Dana")
    await expect(page.locator("form#ack")).to_have_count(0)

    row = await store.get(hot)
    assert row is not None
    assert (row["state"], row["acknowledged_by"], row["ack_comment"]) == (
        "acknowledged",
        "Dana",
        "checked the bearing, oil topped up",
    )
    assert [r["id"] for r in acknowledged] == [hot]  # the event hook saw it

    await page.goto(f"{base}/ui/alerts")
    await expect(page.locator(f"tr[data-alert-id='{hot}'] td.state")).to_have_text("acknowledged")

    # Signing out ends the session.
    await page.click("text=Sign out")
    await expect(page.locator("a", has_text="Sign in")).to_have_count(1)
    assert not [c for c in await browser.cookies() if c["name"] == "plantmon_session"]


async def test_acknowledging_needs_a_session_and_its_csrf_token(
    served: tuple[str, list[dict[str, Any]]], seeded: dict[str, Raised], store: AlertStore
) -> None:
    base, acknowledged = served
    url = f"/ui/alerts/{seeded['hot'].alert_id}/ack"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        anonymous = await http.post(url, data={"comment": "x"})
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login")

        await http.get("/ui/login")
        # A sign-in without the form's own token (a cross-site form post) is refused.
        forged_login = await http.post("/ui/login", data={"operator": "x", "password": TOKEN, "csrf": "forged"})
        assert forged_login.status_code == 403 and "plantmon_session" not in http.cookies
        nonce = http.cookies["plantmon_login"]  # the form shown again comes with a new token
        signed_in = await http.post("/ui/login", data={"operator": "Eve", "password": TOKEN, "csrf": nonce})
        assert signed_in.status_code == 303 and "plantmon_session" in http.cookies

        forged = await http.post(url, data={"comment": "x", "csrf": "guessed"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        missing = await http.post(url, data={"comment": "x"})
        assert missing.status_code == 403

        # A tampered cookie is no session.
        good = http.cookies["plantmon_session"]
        http.cookies.set("plantmon_session", good[:-2] + ("AA" if not good.endswith("AA") else "BB"), path="/ui")
        tampered = await http.post(url, data={"comment": "x", "csrf": "whatever"})
        assert tampered.status_code == 303 and tampered.headers["location"].startswith("/ui/login")
    row = await store.get(seeded["hot"].alert_id)
    assert row is not None and row["state"] == "active" and acknowledged == []


async def test_next_after_sign_in_never_leaves_the_operator_page(
    served: tuple[str, list[dict[str, Any]]], seeded: dict[str, Raised]
) -> None:
    base, _ = served
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        nonce = (await http.get("/ui/login")).cookies["plantmon_login"]
        answer = await http.post(
            "/ui/login", data={"operator": "Dana", "password": TOKEN, "csrf": nonce, "next": "https://evil.example/"}
        )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/alerts"


async def test_without_a_token_the_page_lists_but_nobody_signs_in(store: AlertStore, seeded: dict[str, Raised]) -> None:
    app = create_app(store, CollectorRegistry(), lambda: (True, {}), None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alerts") as http:
        listed = await http.get("/ui/alerts")
        assert listed.status_code == 200 and str(seeded["hot"].alert_id) in listed.text
        assert (await http.get("/ui/login")).status_code == 403
        assert (await http.post("/ui/login", data={"operator": "x", "password": "y"})).status_code == 403
        detail = await http.get(f"/ui/alerts/{seeded['hot'].alert_id}")
        assert "Acknowledging is off" in detail.text
        assert (await http.get(f"/ui/alerts/{uuid.uuid4()}")).status_code == 404
        assert (await http.get("/ui/alerts/not-a-uuid")).status_code == 404


async def sign_in(http: httpx.AsyncClient, operator: str = "Eve") -> str:
    """Signs ``http`` in through the form; returns the session's CSRF token, as its page shows it."""
    nonce = (await http.get("/ui/login")).cookies["plantmon_login"]
    answer = await http.post("/ui/login", data={"operator": operator, "password": TOKEN, "csrf": nonce})
    assert answer.status_code == 303 and "plantmon_session" in http.cookies
    alerts = (await http.get("/ui/alerts")).text
    start = alerts.index('name="csrf" value="') + len('name="csrf" value="')
    return alerts[start : alerts.index('"', start)]


async def assert_unchanged(store: AlertStore, alert_id: uuid.UUID, acknowledged: list[dict[str, Any]]) -> None:
    row = await store.get(alert_id)
    assert row is not None
    assert (row["state"], row["acknowledged_by"], row["ack_comment"]) == ("active", None, None)
    assert acknowledged == []


async def test_hostile_text_is_shown_escaped_never_as_markup(
    served: tuple[str, list[dict[str, Any]]], store: AlertStore
) -> None:
    base, _ = served
    script = "<script>alert(1)</script>"
    hostile = Raised(
        uuid.uuid4(),
        'rule"><script>alert(2)</script>',
        "Plant/<img src=x onerror=alert(3)>",
        5,
        f"Bearing {script} & 'quotes'",
        1.0,
        T0,
    )
    await store.write([hostile])
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        listed = (await http.get("/ui/alerts")).text
        csrf = await sign_in(http, operator='<b onmouseover="alert(4)">Mallory</b>')
        detail = await http.get(f"/ui/alerts/{hostile.alert_id}")
        acked = await http.post(f"/ui/alerts/{hostile.alert_id}/ack", data={"csrf": csrf, "comment": f"done {script}"})
        assert acked.status_code == 303
        after = (await http.get(f"/ui/alerts/{hostile.alert_id}")).text
    for page in (listed, detail.text, after):
        assert "<script>" not in page and "<img" not in page and "<b onmouseover" not in page
    assert "Bearing &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;quotes&#39;" in listed
    assert "Plant/&lt;img src=x onerror=alert(3)&gt;" in listed
    assert "<title>Alert: rule&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt; on Plant/&lt;img" in detail.text
    assert '<b id="operator">&lt;b onmouseover=&#34;alert(4)&#34;&gt;Mallory&lt;/b&gt;</b>' in detail.text
    assert "done &lt;script&gt;alert(1)&lt;/script&gt;" in after  # the stored comment, shown as text
    row = await store.get(hostile.alert_id)
    assert row is not None and row["acknowledged_by"] == '<b onmouseover="alert(4)">Mallory</b>'  # stored as typed


class IssuedYesterday(TimestampSigner):
    """Signs with a timestamp one day old: a session cookie the browser kept past its lifetime."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 24 * 3600


async def test_a_tampered_forged_or_expired_session_cookie_is_no_session(
    served: tuple[str, list[dict[str, Any]]], seeded: dict[str, Raised], store: AlertStore
) -> None:
    base, acknowledged = served
    hot = seeded["hot"].alert_id
    csrf = "known-to-the-attacker"
    payload = {"op": "Mallory", "csrf": csrf}
    cookies = {
        "expired": session_serializer(SecretStr(TOKEN), signer=IssuedYesterday).dumps(payload),
        "another key": session_serializer(SecretStr("some-other-token")).dumps(payload),
        "payload changed": session_serializer(SecretStr(TOKEN)).dumps(payload).replace(".", "x.", 1),
        "not a session": session_serializer(SecretStr(TOKEN)).dumps(["Mallory", csrf]),
        "garbage": "not.a.cookie",
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for reason, cookie in cookies.items():
            http.cookies.set("plantmon_session", cookie, path="/ui")
            answer = await http.post(f"/ui/alerts/{hot}/ack", data={"csrf": csrf, "comment": reason})
            assert answer.status_code == 303, reason
            assert answer.headers["location"] == f"/ui/login?next=/ui/alerts/{hot}", reason
            assert 'id="operator"' not in (await http.get(f"/ui/alerts/{hot}")).text, reason
        await assert_unchanged(store, hot, acknowledged)

        # The same cookie signed now is a session: what refused the others was their flaw.
        http.cookies.set("plantmon_session", session_serializer(SecretStr(TOKEN)).dumps(payload), path="/ui")
        answer = await http.post(f"/ui/alerts/{hot}/ack", data={"csrf": csrf, "comment": "fresh"})
    assert answer.status_code == 303 and answer.headers["location"] == f"/ui/alerts/{hot}?done=acked"
    assert [r["acknowledged_by"] for r in acknowledged] == ["Mallory"]


async def test_a_malformed_or_oversized_form_is_refused_with_its_reason_and_changes_nothing(
    served: tuple[str, list[dict[str, Any]]], seeded: dict[str, Raised], store: AlertStore
) -> None:
    base, acknowledged = served
    hot = seeded["hot"].alert_id
    url = f"/ui/alerts/{hot}/ack"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        csrf = await sign_in(http)
        oversized = await http.post(url, data={"csrf": csrf, "comment": "x" * MAX_FORM_BYTES})
        assert (oversized.status_code, oversized.text) == (413, "Content Too Large")

        multipart = {"content-type": "multipart/form-data; boundary=b"}
        broken = await http.post(url, content=b"--b\r\nno header colon\r\n\r\nv\r\n--b--\r\n", headers=multipart)
        assert (broken.status_code, broken.json()) == (400, {"detail": "Invalid multipart data."})
        unnamed = b"--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--\r\n"
        nameless = await http.post(url, content=unnamed, headers=multipart)
        assert nameless.status_code == 400 and '"name" must be provided' in nameless.json()["detail"]
        no_boundary = await http.post(url, content=b"csrf=x", headers={"content-type": "multipart/form-data"})
        assert (no_boundary.status_code, no_boundary.json()) == (400, {"detail": "Missing boundary in multipart."})

        as_file = await http.post(url, data={"comment": "x"}, files={"csrf": ("csrf.txt", csrf.encode())})
        assert as_file.status_code == 422
        assert [(e["loc"], e["type"]) for e in as_file.json()["detail"]] == [(["body", "csrf"], "string_type")]

        # A sign-in form too large is refused before the password is looked at.
        nonce = (await http.get("/ui/login")).cookies["plantmon_login"]
        del http.cookies["plantmon_session"]
        big = await http.post("/ui/login", data={"operator": "x" * MAX_FORM_BYTES, "password": TOKEN, "csrf": nonce})
        assert big.status_code == 413 and "plantmon_session" not in http.cookies
    await assert_unchanged(store, hot, acknowledged)


async def test_the_cookies_keep_their_flags_lifetime_and_secure_behind_https(store: AlertStore) -> None:
    def attributes(set_cookie: str) -> dict[str, str]:
        return {part.strip().split("=")[0].lower(): part.strip() for part in set_cookie.split(";")[1:]}

    app = create_app(store, CollectorRegistry(), lambda: (True, {}), SecretStr(TOKEN), session_max_age_s=600)
    port = free_port()
    async with serve_http(app, "127.0.0.1", port):
        for proto, secure in (("http", False), ("https", True)):
            # The cookies go in by hand: a client keeps a Secure cookie from reaching plain http://.
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"x-forwarded-proto": proto}
            ) as http:
                login = await http.get("/ui/login")
                [login_cookie] = login.headers.get_list("set-cookie")
                assert login_cookie.startswith("plantmon_login=")
                flags = attributes(login_cookie)
                assert (flags["path"], flags["max-age"], flags["samesite"]) == (
                    "Path=/ui",
                    "Max-Age=900",
                    "SameSite=strict",
                )
                assert "httponly" in flags and ("secure" in flags) is secure

                nonce = login.cookies["plantmon_login"]
                http.cookies.clear()
                answer = await http.post(
                    "/ui/login",
                    data={"operator": "Dana", "password": TOKEN, "csrf": nonce},
                    headers={"cookie": f"plantmon_login={nonce}"},
                )
                assert answer.status_code == 303
                [session_cookie] = [
                    c for c in answer.headers.get_list("set-cookie") if c.startswith("plantmon_session=")
                ]
                flags = attributes(session_cookie)
                assert (flags["path"], flags["max-age"], flags["samesite"]) == (
                    "Path=/ui",
                    "Max-Age=600",
                    "SameSite=lax",
                )
                assert "httponly" in flags and ("secure" in flags) is secure
