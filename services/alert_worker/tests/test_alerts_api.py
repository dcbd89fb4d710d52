"""The HTTP API on a real PostgreSQL: filters, their validation, acknowledgement rules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from plantmon_alerts.api import create_app
from plantmon_alerts.engine import Cleared, Raised
from plantmon_alerts.store import AlertStore
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOKEN = "ack-token-for-tests"


def alert(rule: str, tag: str, severity: int, minutes: int) -> Raised:
    return Raised(uuid.uuid4(), rule, tag, severity, f"{rule} on {tag}", 1.0, T0 + timedelta(minutes=minutes))


@pytest.fixture
async def seeded(store: AlertStore) -> dict[str, Raised]:
    alerts = {
        "hot_upper": alert("temperature_high", "Plant/Temperature/Upper", 4, 0),
        "hot_lower": alert("temperature_high", "Plant/Temperature/Lower", 4, 10),
        "overspeed": alert("main_shaft_overspeed", "Plant/RPM/MainShaft", 5, 20),
        "voltage": alert("supply_voltage_low", "Plant/Voltage/MainSupply", 3, 30),
    }
    old = alerts["hot_upper"]
    await store.write(
        [*alerts.values(), Cleared(old.alert_id, old.rule, old.tag_path, 4, 50.0, T0 + timedelta(minutes=5))]
    )
    await store.acknowledge(alerts["overspeed"].alert_id, "operator", None)
    return alerts


@pytest.fixture
async def client(store: AlertStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, CollectorRegistry(), lambda: (True, {}), SecretStr(TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alerts") as http:
        yield http


async def ids(client: httpx.AsyncClient, **params: Any) -> set[uuid.UUID]:
    response = await client.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["alerts"])
    return {uuid.UUID(a["id"]) for a in body["alerts"]}


async def test_alert_list_filters(client: httpx.AsyncClient, seeded: dict[str, Raised]) -> None:
    a = {name: r.alert_id for name, r in seeded.items()}
    assert await ids(client) == set(a.values())
    assert await ids(client, state="active") == {a["hot_lower"], a["voltage"]}
    assert await ids(client, state=["active", "acknowledged"]) == {a["hot_lower"], a["voltage"], a["overspeed"]}
    assert await ids(client, state="open") == {a["hot_lower"], a["voltage"], a["overspeed"]}
    assert await ids(client, state="cleared") == {a["hot_upper"]}
    assert await ids(client, min_severity=4) == {a["hot_upper"], a["hot_lower"], a["overspeed"]}
    assert await ids(client, tag="Plant/Temperature/*") == {a["hot_upper"], a["hot_lower"]}
    assert await ids(client, tag="Plant/*/Main*") == {a["overspeed"], a["voltage"]}
    assert await ids(client, rule="supply_voltage_low") == {a["voltage"]}
    # Open at some time in [since, until): the upper alert cleared at minute 5.
    since = (T0 + timedelta(minutes=6)).isoformat()
    until = (T0 + timedelta(minutes=25)).isoformat()
    assert await ids(client, since=since, until=until) == {a["hot_lower"], a["overspeed"]}
    assert await ids(client, limit=1) == {a["voltage"]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_severity": 9}, "min_severity"),
        ({"state": "sleeping"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T12:00:00"}, "since"),  # no time zone
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"tag": "Plant/[TV]*"}, "tag"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_invalid_filters_are_422_with_reasons(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/api/v1/alerts", params=params)
    assert response.status_code == 422
    reasons = response.json()["detail"]
    assert any(field in r["loc"] and r["msg"] for r in reasons), reasons


async def state_of(store: AlertStore, alert: Raised) -> tuple[str, str | None, str | None]:
    row = await store.get(alert.alert_id)
    assert row is not None
    return row["state"], row["acknowledged_by"], row["ack_comment"]


async def test_acknowledge_needs_the_bearer_token(
    client: httpx.AsyncClient, store: AlertStore, seeded: dict[str, Raised]
) -> None:
    url = f"/api/v1/alerts/{seeded['hot_lower'].alert_id}/ack"
    body = {"by": "operator", "comment": "on my way"}
    assert (await client.post(url, json=body)).status_code == 401
    wrong = await client.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert await state_of(store, seeded["hot_lower"]) == ("active", None, None)  # refused: nothing changed
    ok = await client.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert (ok.json()["state"], ok.json()["acknowledged_by"], ok.json()["ack_comment"]) == (
        "acknowledged",
        "operator",
        "on my way",
    )


async def test_acknowledge_answers_404_409_and_422(
    client: httpx.AsyncClient, store: AlertStore, seeded: dict[str, Raised]
) -> None:
    before = {name: await state_of(store, alert) for name, alert in seeded.items()}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"by": "operator"}
    assert (await client.post(f"/api/v1/alerts/{uuid.uuid4()}/ack", json=body, headers=auth)).status_code == 404
    cleared = await client.post(f"/api/v1/alerts/{seeded['hot_upper'].alert_id}/ack", json=body, headers=auth)
    assert cleared.status_code == 409 and "cleared" in cleared.json()["detail"]
    twice = await client.post(f"/api/v1/alerts/{seeded['overspeed'].alert_id}/ack", json=body, headers=auth)
    assert twice.status_code == 409 and "acknowledged" in twice.json()["detail"]
    nobody = await client.post(f"/api/v1/alerts/{seeded['voltage'].alert_id}/ack", json={"by": ""}, headers=auth)
    assert nobody.status_code == 422
    # Every refusal left every alert as it was: cleared stays unacknowledged, the first acknowledgement stands.
    assert {name: await state_of(store, alert) for name, alert in seeded.items()} == before
    assert before["hot_upper"] == ("cleared", None, None) and before["overspeed"][:2] == ("acknowledged", "operator")


async def test_acknowledging_is_off_without_a_configured_token(store: AlertStore, seeded: dict[str, Raised]) -> None:
    app = create_app(store, CollectorRegistry(), lambda: (True, {}), None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alerts") as http:
        response = await http.post(
            f"/api/v1/alerts/{seeded['voltage'].alert_id}/ack", json={"by": "x"}, headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 403
    assert await state_of(store, seeded["voltage"]) == ("active", None, None)


async def test_the_openapi_schema_declares_every_answer_with_its_model(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert not [p for p in paths if p.startswith("/ui")]  # the operator page is HTML for people

    def answers(path: str, method: str) -> dict[str, str]:
        responses = paths[path][method]["responses"]
        return {code: next(iter(r["content"].values()))["schema"].get("$ref", "") for code, r in responses.items()}

    listing = answers("/api/v1/alerts", "get")
    assert listing == {
        "200": "#/components/schemas/AlertList",
        "422": "#/components/schemas/ValidationErrorDetail",
        "503": "#/components/schemas/ErrorDetail",
    }
    ack = answers("/api/v1/alerts/{alert_id}/ack", "post")
    assert ack["200"] == "#/components/schemas/Alert"
    assert {code: ack[code] for code in ("401", "403", "404", "409", "503")} == dict.fromkeys(
        ("401", "403", "404", "409", "503"), "#/components/schemas/ErrorDetail"
    )
    assert ack["422"] == "#/components/schemas/ValidationErrorDetail"
    assert paths["/api/v1/alerts/{alert_id}/ack"]["post"]["security"] == [{"HTTPBearer": []}]
    body = paths["/api/v1/alerts/{alert_id}/ack"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AckRequest"}
    alert_fields = schema["components"]["schemas"]["Alert"]["properties"]
    assert {"id", "rule", "tag_path", "severity", "state", "acknowledged_by", "ack_comment", "cleared_at"} <= set(
        alert_fields
    )
    filters = {p["name"] for p in paths["/api/v1/alerts"]["get"]["parameters"]}
    assert filters == {"state", "min_severity", "rule", "tag", "since", "until", "limit"}
    # What the schema promises is what the API answers.
    wrong = await client.post(f"/api/v1/alerts/{uuid.uuid4()}/ack", json={"by": "x"})
    assert wrong.status_code == 401 and set(wrong.json()) == {"detail"}
