"""Data-change deadbands at the source (OPC UA Part 4, 7.22.2), through a real client subscription.

The server compares each value with the last one it *reported* (asyncua's own check compares with
the previous sample, so a slow drift was never reported), reports every status change, and takes
Percent deadbands as a share of the variable's EURange. Each scenario ends with a marker value far
outside the deadband: once it arrives, everything before it has been delivered (or was not sent).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from plantmon_common.opcua import asyncua_private, connect
from plantmon_dev.waiting import eventually

from services.opc_server.tests.support import FakeSensorApi, client_settings, plant_server, server_settings

UPPER = "Plant/Temperature/Upper"  # EURange -200 .. 1350 °C in the fake sensor API


class Changes:
    """What the subscription delivered: (value, status code) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, int]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen.append((val, data.monitored_item.Value.StatusCode.value))

    def values(self) -> list[Any]:
        return [value for value, _ in self.seen]


async def node_of(client: Client, path: str) -> Any:
    ns = await client.get_namespace_index("urn:plantmon:plant")
    return client.get_node(ua.NodeId(path, ns))


async def serve(sensor_api: FakeSensorApi, client: Client, value: float, **fields: Any) -> None:
    """Let the sensor API serve ``value`` (and ``fields``) and wait until the server holds it."""
    sensor_api.set(UPPER, value=value, **fields)
    node = await node_of(client, UPPER)

    async def held() -> bool:
        dv = await node.read_data_value(raise_on_bad_status=False)
        return bool(dv.Value.Value == value and (fields.get("quality", "good") == "good") == dv.StatusCode.is_good())

    await eventually(held, timeout=20, what=f"the server holding {value} {fields}")


@contextlib.asynccontextmanager
async def watching(
    sensor_api: FakeSensorApi, tmp_path: Path, deadband: float, deadband_type: ua.DeadbandType
) -> AsyncIterator[tuple[Client, Any, Changes, int]]:
    """A server on the fake sensor API and a client whose subscription watches Upper with a deadband,
    its first value received: (client, subscription, changes, monitored item id)."""
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        changes = Changes()
        subscription = await client.create_subscription(50, changes)
        handle = await subscription.deadband_monitor(await node_of(client, UPPER), deadband, deadband_type)
        await eventually(lambda: changes.seen, what="the initial value")
        yield client, subscription, changes, handle


async def reported_until(changes: Changes, marker: float) -> list[Any]:
    await eventually(lambda: marker in changes.values(), timeout=20, what=f"the marker {marker} reported")
    return changes.values()


async def test_an_absolute_deadband_reports_a_slow_drift_against_the_last_reported_value(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    async with watching(sensor_api, tmp_path, 1.0, ua.DeadbandType.Absolute) as (client, _, changes, _):
        for value in (65.4, 65.8, 66.2, 66.6, 66.9):  # 0.4 a step: each step inside the deadband
            await serve(sensor_api, client, value)
        await serve(sensor_api, client, 200.0)
        # 66.2 is 1.2 from the reported 65.0; 66.6 and 66.9 are within 1.0 of 66.2.
        assert await reported_until(changes, 200.0) == [65.0, 66.2, 200.0]


async def test_a_status_change_is_reported_even_inside_the_deadband(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    async with watching(sensor_api, tmp_path, 5.0, ua.DeadbandType.Absolute) as (client, _, changes, _):
        await serve(sensor_api, client, 65.0, quality="uncertain", reason="drifting")
        await serve(sensor_api, client, 65.0, quality="good", reason=None)
        await serve(sensor_api, client, 200.0)
        await reported_until(changes, 200.0)
    statuses = [ua.StatusCode(code) for _, code in changes.seen]
    assert [s.is_good() for s in statuses] == [True, False, True, True]
    assert changes.values()[:3] == [65.0, 65.0, 65.0]


async def test_a_percent_deadband_is_a_share_of_the_eu_range(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    async with watching(sensor_api, tmp_path, 1.0, ua.DeadbandType.Percent) as (client, _, changes, _):
        for value in (75.0, 80.0, 81.0, 90.0):  # 1 % of 1,550 °C is 15.5 °C
            await serve(sensor_api, client, value)
        await serve(sensor_api, client, 400.0)
        # 81.0 is 16 from the reported 65.0; 90.0 is 9 from 81.0.
        assert await reported_until(changes, 400.0) == [65.0, 81.0, 400.0]


@pytest.mark.parametrize(
    ("target", "deadband_type", "deadband", "attribute", "refusal"),
    [
        (UPPER, ua.DeadbandType.Percent, 150.0, ua.AttributeIds.Value, "BadDeadbandFilterInvalid"),
        (UPPER, ua.DeadbandType.Absolute, -1.0, ua.AttributeIds.Value, "BadDeadbandFilterInvalid"),
        (UPPER, ua.DeadbandType.Absolute, float("nan"), ua.AttributeIds.Value, "BadDeadbandFilterInvalid"),
        (UPPER, 7, 1.0, ua.AttributeIds.Value, "BadDeadbandFilterInvalid"),
        (UPPER, ua.DeadbandType.Absolute, 1.0, ua.AttributeIds.DisplayName, "BadFilterNotAllowed"),
        ("ServerCurrentTime", ua.DeadbandType.Percent, 1.0, ua.AttributeIds.Value, "BadDeadbandFilterInvalid"),
    ],
)
async def test_an_invalid_deadband_is_refused_with_its_status_code_and_creates_nothing(
    sensor_api: FakeSensorApi,
    tmp_path: Path,
    target: str,
    deadband_type: int,
    deadband: float,
    attribute: ua.AttributeIds,
    refusal: str,
) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings) as plant, connect(client_settings(settings, tmp_path)) as client:
        node = (
            client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime))
            if target == "ServerCurrentTime"  # a variable without an EURange
            else await node_of(client, target)
        )
        subscription = await client.create_subscription(50, Changes())
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await subscription.deadband_monitor(node, deadband, deadband_type, attr=attribute)
        assert ua.StatusCode(refused.value.code).name == refusal
        (server_side,) = plant.server.iserver.subscription_service.subscriptions.values()
        assert asyncua_private.monitored_items(server_side.monitored_item_srv) == []  # nothing was created


async def test_a_modified_filter_is_checked_too_and_a_refusal_keeps_the_old_one(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    async with watching(sensor_api, tmp_path, 1.0, ua.DeadbandType.Absolute) as watched:
        client, subscription, changes, handle = watched
        bad = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=2, DeadbandValue=101.0)
        request = ua.MonitoredItemModifyRequest()
        request.MonitoredItemId = handle
        request.RequestedParameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=50, Filter=bad)
        params = ua.ModifyMonitoredItemsParameters(SubscriptionId=subscription.subscription_id, ItemsToModify=[request])
        (result,) = await client.uaclient.modify_monitored_items(params)
        assert result.StatusCode.name == "BadDeadbandFilterInvalid"
        await serve(sensor_api, client, 65.6)  # inside the kept 1.0 deadband
        await serve(sensor_api, client, 200.0)
        assert await reported_until(changes, 200.0) == [65.0, 200.0]
