"""The OPC UA server against a real HTTP sensor peer, through real secure asyncua sessions."""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

import pytest
from asyncua import Client, ua
from plantmon_common.opcua import OpcUaError, browse_plant, connect
from plantmon_common.tags import UNITS
from plantmon_dev.waiting import eventually
from plantmon_opc_server.server import BULK_TAGS

from services.opc_server.tests.support import (
    OPERATOR_PASSWORD,
    FakeSensorApi,
    client_settings,
    plant_server,
    server_settings,
)


async def read(client: Client, path: str) -> ua.DataValue:
    ns = await client.get_namespace_index("urn:plantmon:plant")
    return await client.get_node(ua.NodeId(path, ns)).read_data_value(raise_on_bad_status=False)


async def test_plant_tree_is_analog_items_with_units_and_ranges(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        tags = await browse_plant(client)
        assert [t.path for t in tags] == sorted(sensor_api.tags)
        upper = next(t for t in tags if t.path == "Plant/Temperature/Upper")
        assert (upper.unit, upper.eu_low, upper.eu_high) == ("°C", -200.0, 1350.0)
        ns = await client.get_namespace_index("urn:plantmon:plant")
        node = client.get_node(ua.NodeId("Plant/Temperature/Upper", ns))
        assert upper.node_id == node.nodeid
        assert await node.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
        assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
        access = (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
        user_access = (await node.read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value
        for level in (access, user_access):
            assert level & ua.AccessLevel.CurrentRead.mask and level & ua.AccessLevel.HistoryRead.mask
            assert not level & ua.AccessLevel.CurrentWrite.mask
        assert (await node.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
        assert (await node.read_attribute(ua.AttributeIds.MinimumSamplingInterval)).Value.Value == pytest.approx(200)
        eu = await (await node.get_child("0:EngineeringUnits")).read_value()
        assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
        assert eu.UnitId == UNITS["°C"].unit_id == 4408652
        with pytest.raises(ua.UaStatusCodeError):
            await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))


async def test_values_equal_the_sensor_api_with_source_timestamps(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    sensor_api.set("Plant/Temperature/Upper", value=71.25)
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        dv = await read(client, "Plant/Temperature/Upper")
        assert dv.Value.Value == 71.25
        assert dv.StatusCode.is_good()
        assert dv.SourceTimestamp is not None and dv.ServerTimestamp is not None


async def test_unreachable_sensors_give_bad_communication_error_then_recover(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings) as plant, connect(client_settings(settings, tmp_path)) as client:
        sensor_api.up = False

        async def is_comm_error() -> bool:
            dv = await read(client, "Plant/RPM/MainShaft")
            return bool(dv.StatusCode.value == ua.StatusCodes.BadCommunicationError)

        await eventually(is_comm_error, timeout=5, what="BadCommunicationError on the tag")
        assert plant.health.consecutive_failures <= 3
        sensor_api.up = True

        async def is_good() -> bool:
            return bool((await read(client, "Plant/RPM/MainShaft")).StatusCode.is_good())

        await eventually(is_good, timeout=5, what="a Good value on the tag")


async def test_a_bad_sensor_marks_only_its_own_nodes(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        sensor_api.set("Plant/Temperature/Upper", value=None, quality="bad", reason="open circuit")

        async def upper_bad() -> bool:
            dv = await read(client, "Plant/Temperature/Upper")
            return bool(dv.StatusCode.value == ua.StatusCodes.BadSensorFailure)

        await eventually(upper_bad, what="the upper temperature Bad")
        assert (await read(client, "Plant/Temperature/Lower")).StatusCode.is_good()


async def test_stale_values_become_uncertain_never_good(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}", stale_after_polls=2)
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        sensor_api.frozen = True

        async def uncertain() -> bool:
            dv = await read(client, "Plant/Voltage/MainSupply")
            return bool(dv.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue)

        await eventually(uncertain, what="an Uncertain value")


async def test_a_new_tag_appears_without_restart(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        before = {t.path: t.node_id for t in await browse_plant(client)}
        sensor_api.add("Plant/Temperature/UpperColdJunction", "°C", -40.0, 125.0, 24.5)

        async def appeared() -> bool:
            return any(t.path == "Plant/Temperature/UpperColdJunction" for t in await browse_plant(client))

        await eventually(appeared, what="the new tag in the address space")
        after = {t.path: t.node_id for t in await browse_plant(client)}
        assert {p: after[p] for p in before} == before


async def test_secure_mode_refuses_anonymous_wrong_password_and_no_security(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings):
        with pytest.raises(OpcUaError):
            async with connect(client_settings(settings, tmp_path, username=None, password=None)):
                pass
        with pytest.raises(OpcUaError):
            async with connect(client_settings(settings, tmp_path, password="wrong-password")):
                pass
        with pytest.raises(OpcUaError):
            async with connect(client_settings(settings, tmp_path, security="None")):
                pass
        async with connect(client_settings(settings, tmp_path, username="operator", password=OPERATOR_PASSWORD)) as c:
            assert c.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt


async def test_dev_mode_allows_anonymous_without_security(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}", dev_mode=True)
    async with (
        plant_server(settings),
        connect(client_settings(settings, tmp_path, security="None", username=None, password=None)) as client,
    ):
        assert (await read(client, "Plant/Temperature/Upper")).StatusCode.is_good()


async def test_certificate_is_generated_once_and_reused(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings):
        pass
    first = (settings.cert_dir / "cert.der").read_bytes()
    async with plant_server(settings):
        pass
    assert (settings.cert_dir / "cert.der").read_bytes() == first


async def test_an_uncertain_reading_without_a_value_is_published_as_waiting_not_dropped(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    # e.g. the audio features while they warm up: quality uncertain, no value yet
    sensor_api.add("Plant/Audio/MFCC/Coefficient_0", "", -500.0, 500.0, 0.0)
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        sensor_api.set("Plant/Audio/MFCC/Coefficient_0", value=None, quality="uncertain", reason="warming up")

        async def waiting() -> bool:
            dv = await read(client, "Plant/Audio/MFCC/Coefficient_0")
            return bool(dv.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData)

        await eventually(waiting, what="BadWaitingForInitialData on the MFCC tag")
        sensor_api.set("Plant/Audio/MFCC/Coefficient_0", value=3.5, quality="uncertain", reason="noisy")

        async def uncertain_with_value() -> bool:
            dv = await read(client, "Plant/Audio/MFCC/Coefficient_0")
            return bool(dv.StatusCode.value == ua.StatusCodes.UncertainSensorNotAccurate and dv.Value.Value == 3.5)

        await eventually(uncertain_with_value, what="an Uncertain value that keeps its number")


async def test_hundreds_of_new_tags_at_once_get_the_same_model_while_a_session_keeps_reading(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    # Enough tags for the bulk path (batched AddNodes, collector paused, heap frozen afterwards).
    count = BULK_TAGS + 100
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    frozen_before = gc.get_freeze_count()
    try:
        async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
            for i in range(count):
                sensor_api.add(f"Plant/Bulk/Tag_{i:04d}", "V", -10.0, float(i), float(i) / 2)
            last = f"Plant/Bulk/Tag_{count - 1:04d}"

            async def last_is_good() -> bool:
                with contextlib.suppress(ua.UaStatusCodeError):
                    dv = await read(client, last)
                    return bool(dv.StatusCode.is_good() and dv.Value.Value == (count - 1) / 2)
                return False

            await eventually(last_is_good, timeout=60, what="the last value Good")
            assert (await read(client, "Plant/Temperature/Upper")).StatusCode.is_good()
            assert gc.isenabled()

            tags = {t.path: t for t in await browse_plant(client)}
            bulk = sorted(p for p in tags if p.startswith("Plant/Bulk/"))
            assert bulk == [f"Plant/Bulk/Tag_{i:04d}" for i in range(count)]
            ns = await client.get_namespace_index("urn:plantmon:plant")
            for i in (0, count // 2, count - 1):
                tag = tags[f"Plant/Bulk/Tag_{i:04d}"]
                assert tag.node_id == ua.NodeId(tag.path, ns)
                assert (tag.unit, tag.eu_low, tag.eu_high) == ("V", -10.0, float(i))
                assert tag.description == f"test {tag.path}"
                node = client.get_node(tag.node_id)
                assert await node.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
                assert await node.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
                for attr in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                    level = (await node.read_attribute(attr)).Value.Value
                    assert level == ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
                assert (await node.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
                for name in ("EURange", "EngineeringUnits"):
                    prop = await node.get_child(f"0:{name}")
                    assert await prop.read_type_definition() == ua.NodeId(ua.ObjectIds.PropertyType)
                    level = (await prop.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
                    assert level == ua.AccessLevel.CurrentRead.mask
                parents = await node.get_references(ua.ObjectIds.HasComponent, ua.BrowseDirection.Inverse)
                assert [r.NodeId for r in parents] == [ua.NodeId("Plant/Bulk", ns)]
            assert gc.get_freeze_count() > frozen_before
    finally:
        gc.unfreeze()  # the test process is not a server: give its objects back to the collector
