"""The operator page in a real headless browser (Debian's chromium, driven by Playwright).

The app is served by uvicorn on a free port over a real PostgreSQL; the browser signs in with the
API token as password, lists the active alerts, opens one through the link Grafana uses
(``/ui/alerts/{id}``) and acknowledges it; a wrong password is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from plantmon_alerts.api import create_app
from plantmon_alerts.engine import Cleared, Raised
from plantmon_alerts.store import AlertStore
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
