"""The sensor API over real HTTP: contract, freshness, faults through /admin, errors with reasons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from plantmon_common.tags import TagMeta, TagReading, split_path
from plantmon_dev.waiting import eventually

from services.sensors.tests.sensors_support import ADMIN_TOKEN, RunningService

FEATURE_TIME = "plantmon_sensors_feature_extraction_seconds"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEED_PATHS = (
    ["Plant/Temperature/Upper", "Plant/Temperature/Lower", "Plant/RPM/MainShaft", "Plant/Voltage/MainSupply"]
    + [f"Plant/Audio/MFCC/Coefficient_{i}" for i in range(13)]
    + [f"Plant/Audio/Spectrum/Band_{i}" for i in range(32)]
)


async def readings(client: httpx.AsyncClient) -> dict[str, TagReading]:
    response = await client.get("/api/v1/readings")
    assert response.status_code == 200
    return {r["path"]: TagReading.model_validate(r) for r in response.json()["readings"]}


async def test_tags_list_every_seed_tag_with_metadata(service: RunningService) -> None:
    response = await service.client.get("/api/v1/tags")
    assert response.status_code == 200
    tags = [TagMeta.model_validate(t) for t in response.json()]
    by_path = {t.path: t for t in tags}
    assert set(SEED_PATHS) <= set(by_path)
    assert "Plant/Audio/Level" in by_path
    assert by_path["Plant/Temperature/Upper"].unit == "°C"
    assert (by_path["Plant/Temperature/Upper"].eu_low, by_path["Plant/Temperature/Upper"].eu_high) == (-200, 1350)
    assert by_path["Plant/RPM/MainShaft"].unit == "1/min"
    assert by_path["Plant/Voltage/MainSupply"].unit == "V"
    assert by_path["Plant/Audio/Spectrum/Band_31"].unit == "dB"
    assert by_path["Plant/Audio/MFCC/Coefficient_12"].unit == ""
    assert split_path("Plant/RPM/MainShaft") == ("rpm", "main_shaft")
    assert all(t.sensor_id and t.eu_low < t.eu_high for t in tags)


async def test_all_readings_are_good_and_plausible(service: RunningService) -> None:
    rows = await readings(service.client)
    assert set(SEED_PATHS) <= set(rows)
    assert all(r.quality == "good" and r.value is not None for r in rows.values()), [
        (r.path, r.reason) for r in rows.values() if r.quality != "good"
    ]
    assert 55 < rows["Plant/Temperature/Upper"].value < 80  # type: ignore[operator]
    assert rows["Plant/Temperature/Lower"].value < rows["Plant/Temperature/Upper"].value  # type: ignore[operator]
    assert 1300 < rows["Plant/RPM/MainShaft"].value < 1700  # type: ignore[operator]
    assert 21 < rows["Plant/Voltage/MainSupply"].value < 25  # type: ignore[operator]
    assert all(r.observed_at.utcoffset() == timedelta(0) for r in rows.values())


async def test_seed_endpoints_answer_one_reading_or_a_list(service: RunningService) -> None:
    for route, path in [
        ("/temperature/upper", "Plant/Temperature/Upper"),
        ("/temperature/lower", "Plant/Temperature/Lower"),
        ("/rpm", "Plant/RPM/MainShaft"),
        ("/voltage", "Plant/Voltage/MainSupply"),
    ]:
        response = await service.client.get(route)
        assert response.status_code == 200
        assert TagReading.model_validate(response.json()).path == path
    mfcc = (await service.client.get("/audio/mfcc")).json()["readings"]
    assert [r["path"] for r in mfcc] == [f"Plant/Audio/MFCC/Coefficient_{i}" for i in range(13)]
    spectrum = (await service.client.get("/audio/spectrum")).json()["readings"]
    assert [r["path"] for r in spectrum] == [f"Plant/Audio/Spectrum/Band_{i}" for i in range(32)]
    assert all(-120 <= r["value"] <= 20 for r in spectrum)


async def test_observed_at_is_new_at_every_observation(service: RunningService) -> None:
    first = (await service.client.get("/temperature/upper")).json()["observed_at"]

    async def changed() -> bool:
        return bool((await service.client.get("/temperature/upper")).json()["observed_at"] > first)

    await eventually(changed, timeout=10, what="a new observed_at")


async def test_openapi_documents_every_route_with_response_models(service: RunningService) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    for path in [
        "/api/v1/tags",
        "/api/v1/readings",
        "/temperature/upper",
        "/rpm",
        "/voltage",
        "/audio/mfcc",
        "/audio/spectrum",
        "/health",
        "/admin/faults",
        "/admin/faults/{fault}",
    ]:
        assert path in spec["paths"], path
    assert "TagReading" in spec["components"]["schemas"]
    ok = spec["paths"]["/temperature/upper"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/TagReading")


async def test_bad_paths_and_parameters_get_4xx_with_a_reason(service: RunningService) -> None:
    c = service.client
    unknown_tag = await c.get("/api/v1/readings/Plant/Temperature/Middle")
    assert unknown_tag.status_code == 404 and "unknown tag" in unknown_tag.json()["detail"]
    unknown_sensor = await c.get("/api/v1/readings", params={"sensor": "thermometer"})
    assert unknown_sensor.status_code == 404 and "unknown sensor" in unknown_sensor.json()["detail"]
    assert (await c.get("/temperature/middle")).status_code == 404
    bad_fault = await c.put("/admin/faults/meltdown", json={"active": True}, headers=AUTH)
    assert bad_fault.status_code == 422 and "overheating" in str(bad_fault.json()["detail"])
    bad_body = await c.put("/admin/faults/overheating", json={"active": "maybe"}, headers=AUTH)
    assert bad_body.status_code == 422 and bad_body.json()["detail"]
    no_sensor = await c.put("/admin/faults/sensor_stopped", json={"active": True}, headers=AUTH)
    assert no_sensor.status_code == 422 and "needs a sensor" in no_sensor.json()["detail"]
    wrong_sensor = await c.put("/admin/faults/sensor_stopped", json={"active": True, "sensor": "x"}, headers=AUTH)
    assert wrong_sensor.status_code == 422 and "unknown sensor" in wrong_sensor.json()["detail"]
    assert await active_faults(service) == []  # no refused request switched anything on
    filtered = await c.get("/api/v1/readings", params={"sensor": "rpm"})
    assert [r["path"] for r in filtered.json()["readings"]] == ["Plant/RPM/MainShaft"]
    assert (await c.get("/api/v1/readings/Plant/RPM/MainShaft")).json()["path"] == "Plant/RPM/MainShaft"


async def active_faults(service: RunningService) -> list[str]:
    faults = (await service.client.get("/admin/faults", headers=AUTH)).json()["faults"]
    return [f["fault"] for f in faults if f["active"]]


async def test_admin_needs_the_bearer_token(service: RunningService) -> None:
    c = service.client
    assert (await c.get("/admin/faults")).status_code == 401
    wrong = await c.get("/admin/faults", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert (await c.put("/admin/faults/overheating", json={"active": True})).status_code == 401
    assert await active_faults(service) == []  # the refused switch changed nothing
    ok = await c.get("/admin/faults", headers=AUTH)
    assert ok.status_code == 200
    assert {f["fault"] for f in ok.json()["faults"]} == {
        "overheating",
        "thermocouple_open",
        "overspeed",
        "voltage_sag",
        "bearing_wear",
        "sensor_stopped",
    }


async def test_admin_is_disabled_without_a_token(start_service: Callable[..., Any]) -> None:
    async with start_service() as svc:
        response = await svc.client.get("/admin/faults", headers=AUTH)
        assert response.status_code == 403 and "admin disabled" in response.json()["detail"]


async def test_open_thermocouple_makes_only_the_upper_tag_bad(service: RunningService) -> None:
    c = service.client
    response = await c.put("/admin/faults/thermocouple_open", json={"active": True}, headers=AUTH)
    assert response.status_code == 200
    assert next(f for f in response.json()["faults"] if f["fault"] == "thermocouple_open")["active"]

    async def upper_bad() -> dict[str, TagReading] | None:
        rows = await readings(c)
        return rows if rows["Plant/Temperature/Upper"].quality == "bad" else None

    rows = await eventually(upper_bad, timeout=10, what="only the upper temperature bad")
    upper = rows["Plant/Temperature/Upper"]
    assert upper.value is None and upper.reason == "open circuit"
    assert all(r.quality == "good" for p, r in rows.items() if p != "Plant/Temperature/Upper")
    health = (await c.get("/health")).json()
    assert health["status"] == "degraded"
    by_sensor = {s["sensor_id"]: s for s in health["sensors"]}
    assert by_sensor["temperature_upper"]["status"] == "degraded"
    assert by_sensor["temperature_upper"]["reason"] == "open circuit"
    assert by_sensor["temperature_lower"]["status"] == "ok"

    # A failed observation is still an observation: its timestamp moves on.
    first = upper.observed_at
    await eventually(lambda: _upper_observed_after(c, first), timeout=10, what="a new upper observation")

    await c.put("/admin/faults/thermocouple_open", json={"active": False}, headers=AUTH)
    await eventually(
        lambda: _quality_is(c, "/temperature/upper", "good"), timeout=10, what="the upper temperature good again"
    )


async def _upper_observed_after(c: httpx.AsyncClient, stamp: Any) -> bool:
    row = TagReading.model_validate((await c.get("/temperature/upper")).json())
    return row.observed_at > stamp and row.quality == "bad"


async def _quality_is(c: httpx.AsyncClient, route: str, quality: str) -> bool:
    return bool((await c.get(route)).json()["quality"] == quality)


async def test_stopped_audio_sensor_degrades_only_audio_tags(service: RunningService) -> None:
    c = service.client
    response = await c.put("/admin/faults/sensor_stopped", json={"active": True, "sensor": "audio"}, headers=AUTH)
    assert response.status_code == 200
    stopped = next(f for f in response.json()["faults"] if f["fault"] == "sensor_stopped")
    assert stopped["active"] and stopped["sensors"] == ["audio"]

    async def audio_bad() -> dict[str, TagReading] | None:
        rows = await readings(c)
        return rows if rows["Plant/Audio/Level"].quality == "bad" else None

    rows = await eventually(audio_bad, timeout=10, what="only the audio tags bad")
    for path, row in rows.items():
        if path.startswith("Plant/Audio/"):
            assert row.quality == "bad" and row.reason == "no response" and row.value is None
        else:
            assert row.quality == "good"
    metrics = (await c.get("/metrics")).text
    assert 'plantmon_sensors_read_errors_total{sensor="audio"}' in metrics
    assert 'plantmon_sensors_sensor_up{sensor="audio"} 0.0' in metrics


async def test_overheating_through_admin_crosses_100_degrees(service: RunningService) -> None:
    c = service.client
    before = (await c.get("/temperature/upper")).json()["value"]
    assert before < 90
    assert (await c.put("/admin/faults/overheating", json={"active": True}, headers=AUTH)).status_code == 200

    async def hot() -> bool:
        value = (await c.get("/temperature/upper")).json()["value"]
        return value is not None and value > 100

    # The model runs in wall time; a bounded wait of 25 s covers "within about 10-20 s".
    await eventually(hot, timeout=25, what="the upper temperature above 100 °C")
    assert (await c.get("/temperature/lower")).json()["quality"] == "good"
    assert (await c.put("/admin/faults/overheating", json={"active": False}, headers=AUTH)).status_code == 200


async def test_faults_scheduled_in_config_switch_on_and_off(start_service: Callable[..., Any]) -> None:
    async with start_service(admin_token=ADMIN_TOKEN, fault_schedule="sensor_stopped:voltage@0.3+0.6") as svc:
        await eventually(
            lambda: _quality_is(svc.client, "/voltage", "bad"), timeout=10, what="the scheduled voltage fault on"
        )
        assert (await svc.client.get("/voltage")).json()["reason"] == "no response"
        await eventually(
            lambda: _quality_is(svc.client, "/voltage", "good"), timeout=10, what="the scheduled voltage fault off"
        )


async def test_faults_configured_at_start_are_active(start_service: Callable[..., Any]) -> None:
    async with start_service(admin_token=ADMIN_TOKEN, faults=["sensor_stopped:rpm", "voltage_sag"]) as svc:
        rpm = (await svc.client.get("/rpm")).json()
        assert rpm["quality"] == "bad" and rpm["reason"] == "no response" and rpm["value"] is None
        assert (await svc.client.get("/voltage")).json()["value"] < 20
        faults = (await svc.client.get("/admin/faults", headers=AUTH)).json()["faults"]
        assert {f["fault"] for f in faults if f["active"]} == {"sensor_stopped", "voltage_sag"}


async def test_health_and_metrics(service: RunningService) -> None:
    health = await service.client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["mode"] == "sim"
    assert {s["sensor_id"] for s in body["sensors"]} == {
        "temperature_upper",
        "temperature_lower",
        "rpm",
        "voltage",
        "audio",
    }
    metrics = await service.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for sensor in ("temperature_upper", "rpm", "voltage", "audio"):
        assert f'plantmon_sensors_reads_total{{sensor="{sensor}"}}' in text
        assert f'plantmon_sensors_last_good_read_age_seconds{{sensor="{sensor}"}}' in text
    assert "plantmon_sensors_feature_extraction_seconds_count" in text
    count = next(
        line for line in text.splitlines() if line.startswith("plantmon_sensors_feature_extraction_seconds_count")
    )
    assert float(count.split()[-1]) >= 1  # the simulator's audio went through the librosa feature path
    assert 'plantmon_sensors_read_errors_total{sensor="rpm"}' in text


async def test_health_is_503_when_sampling_is_dead(service: RunningService) -> None:
    sampler = service.app.state.service.sampler
    await sampler.stop()
    response = await service.client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "dead"


async def test_stale_readings_turn_uncertain_when_sampling_stops(start_service: Callable[..., Any]) -> None:
    async with start_service(rpm_interval_s=0.05) as svc:
        await svc.app.state.service.sampler.stop()
        await eventually(
            lambda: _quality_is(svc.client, "/rpm", "uncertain"), timeout=10, what="the stale rpm uncertain"
        )
        assert (await svc.client.get("/rpm")).json()["reason"] == "stale"
        # The all-tags endpoint serves bytes serialised when each row was stored; staleness is
        # still judged per request, so the same rows turn stale there too.
        rows = await readings(svc.client)
        rpm = rows["Plant/RPM/MainShaft"]
        assert (rpm.quality, rpm.reason) == ("uncertain", "stale") and rpm.value is not None
        by_sensor = (await svc.client.get("/api/v1/readings", params={"sensor": "rpm"})).json()["readings"]
        assert [(r["path"], r["reason"]) for r in by_sensor] == [("Plant/RPM/MainShaft", "stale")]
