"""The fence around asyncua's internals: the start-up check passes on the installed asyncua and
refuses, naming the version and the attribute, when one is missing, takes other parameters or
no longer calls what plantmon replaces; the services then refuse to start.

The changes are made on the real asyncua classes (pytest's monkeypatch, or in a child process
before the service's entry point runs), below the library, as a new asyncua release would."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import Subscription
from asyncua.server.monitored_item_service import MonitoredItemService
from plantmon_common.opcua import AsyncuaIncompatibleError, OpcUaClientSettings, PlantSubscriber
from plantmon_common.opcua import asyncua_private as private

VERSION = metadata.version("asyncua")
ALL_GROUPS = (private.SUBSCRIBER, private.SERVER, private.SERVER_DEADBAND, private.TESTS, private.BENCH_LOAD_SERVER)


def with_stand_in(
    group: tuple[private.Requirement, ...], owner: type, **changed: object
) -> tuple[private.Requirement, ...]:
    """``group`` checked against a subclass of ``owner`` in which ``changed`` replaces attributes:
    another asyncua release, without touching the installed one."""
    stand_in = type(owner.__name__, (owner,), dict(changed))
    return tuple(dataclasses.replace(r, owner=stand_in) if r.owner is owner else r for r in group)


def refusal(*groups: tuple[private.Requirement, ...]) -> str:
    with pytest.raises(AsyncuaIncompatibleError) as caught:
        private.check_asyncua(*groups)
    assert caught.value.version == VERSION
    message = str(caught.value)
    assert f"asyncua {VERSION} is not the asyncua plantmon was written against" in message
    return message


def test_the_installed_asyncua_passes_every_check() -> None:
    assert VERSION.startswith(private.WRITTEN_AGAINST + ".")
    private.check_asyncua(*ALL_GROUPS)


def test_a_missing_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Subscription, "_explode_datachange")
    message = refusal(private.SUBSCRIBER)
    assert "asyncua.common.subscription.Subscription._explode_datachange is missing" in message
    # A check of another group does not mind.
    private.check_asyncua(private.SERVER)


def test_a_changed_signature_is_named() -> None:
    def builder(self: Subscription, node: object, attr: object, mfilter: object, queuesize: object) -> None:
        """A builder that lost two parameters."""

    message = refusal(with_stand_in(private.SUBSCRIBER, Subscription, _make_monitored_item_request=builder))
    assert (
        "Subscription._make_monitored_item_request takes (self, node, attr, mfilter, queuesize), "
        "expected (self, node, attr, mfilter, queuesize, monitoring, sampling_interval)"
    ) in message


def test_a_replacement_that_would_no_longer_take_effect_is_named() -> None:
    async def publish_loop(self: UaSession) -> None:
        """A loop that sends its Publish requests some other way than ``self.publish``."""
        await self.send_publish_some_other_way()  # type: ignore[attr-defined]

    message = refusal(with_stand_in(private.SUBSCRIBER, UaSession, _publish_loop=publish_loop))
    assert "UaSession._publish_loop no longer uses 'publish'" in message


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(UaSession, "_send_request")
    monkeypatch.delattr(Subscription, "_explode_datachange")
    message = refusal(private.SUBSCRIBER)
    assert "UaSession._send_request is missing" in message
    assert "Subscription._explode_datachange is missing" in message


def test_the_subscriber_refuses_before_it_connects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(UaSession, "publish")
    # Nothing listens there: a subscriber that got as far as connecting would retry, not raise.
    settings = OpcUaClientSettings(url="opc.tcp://127.0.0.1:1/", cert_dir=tmp_path)
    with pytest.raises(AsyncuaIncompatibleError, match=r"UaSession\.publish is missing"):
        PlantSubscriber(settings, lambda sample: None)
    assert not any(tmp_path.iterdir()), "no certificate made, nothing connected"


# Each service's entry point, run in a child process after one asyncua attribute is broken there.
SERVICES = {
    "scraper": (
        "from asyncua.common.subscription import Subscription\ndel Subscription._explode_datachange\n",
        "from plantmon_scraper.__main__ import main\nmain()\n",
        "asyncua.common.subscription.Subscription._explode_datachange is missing",
    ),
    "alert worker": (
        "from asyncua.client.ua_session import UaSession\n"
        "async def publish(self, acks, timeout): ...\n"
        "UaSession.publish = publish\n",
        "import sys\nfrom plantmon_alerts.__main__ import main\nsys.exit(main([]))\n",
        "asyncua.client.ua_session.UaSession.publish takes (self, acks, timeout), expected (self, acks)",
    ),
    "OPC UA server": (
        "from asyncua.server.monitored_item_service import MonitoredItemService\n"
        "def init(self, isub, aspace):\n    self.items = {}\n"
        "MonitoredItemService.__init__ = init\n",
        "from plantmon_opc_server.__main__ import main\nmain()\n",
        "MonitoredItemService.__init__ no longer uses '_monitored_items'",
    ),
}


def service_env(tmp_path: Path) -> dict[str, str]:
    """Complete settings for every service; nothing listens at any of the addresses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SCRAPER_", "ALERTS_", "OPC_SERVER_"))}
    return {
        **env,
        "PGHOST": "127.0.0.1",
        "PGPORT": "1",
        "PGDATABASE": "plantmon",
        "PGUSER": "plantmon_writer",
        "PGPASSWORD": "a-test-password-nobody-uses",
        "SCRAPER_HTTP_PORT": "0",
        "SCRAPER_OPCUA__URL": "opc.tcp://127.0.0.1:1/",
        "SCRAPER_OPCUA__USERNAME": "plantmon",
        "SCRAPER_OPCUA__PASSWORD": "a-test-password-nobody-uses",
        "SCRAPER_OPCUA__CERT_DIR": str(tmp_path / "scraper-pki"),
        "SCRAPER_SPOOL_DIR": str(tmp_path / "spool"),
        "ALERTS_HTTP_PORT": "0",
        "ALERTS_OPCUA__URL": "opc.tcp://127.0.0.1:1/",
        "ALERTS_OPCUA__USERNAME": "plantmon",
        "ALERTS_OPCUA__PASSWORD": "a-test-password-nobody-uses",
        "ALERTS_OPCUA__CERT_DIR": str(tmp_path / "alerts-pki"),
        "ALERTS_STATE_DIR": str(tmp_path / "alerts"),
        "OPC_SERVER_ENDPOINT": "opc.tcp://127.0.0.1:1/freeopcua/server/",
        "OPC_SERVER_HTTP_PORT": "0",
        "OPC_SERVER_CERT_DIR": str(tmp_path / "server-pki"),
        "OPC_SERVER_SERVICE_PASSWORD": "a-test-password-nobody-uses",
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_refuses_to_start_with_an_incompatible_asyncua(service: str, tmp_path: Path) -> None:
    breakage, entry_point, problem = SERVICES[service]
    program = textwrap.dedent(breakage) + entry_point
    proc = subprocess.run(
        [sys.executable, "-c", program], env=service_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "refusing to start: the installed asyncua is incompatible" in proc.stderr
    assert f"asyncua {VERSION} is not the asyncua plantmon was written against" in proc.stderr
    assert problem in proc.stderr
    assert not (tmp_path / "server-pki").exists(), "the server made no certificate: it never began serving"
    assert "Traceback" not in proc.stderr


def test_the_checks_cover_the_server_side_attributes() -> None:
    def datachange_callback(self: MonitoredItemService, handle: int, value: object) -> None:
        """A callback that lost its ``error`` parameter."""

    for group in (private.BENCH_LOAD_SERVER, private.SERVER_DEADBAND):
        message = refusal(with_stand_in(group, MonitoredItemService, datachange_callback=datachange_callback))
        assert "MonitoredItemService.datachange_callback takes (self, handle, value)" in message

    def is_deadband_exceeded(self: MonitoredItemService, values: object) -> bool:
        """A deadband check that lost its filter."""
        return True

    message = refusal(
        with_stand_in(private.SERVER_DEADBAND, MonitoredItemService, _is_deadband_exceeded=is_deadband_exceeded)
    )
    assert "MonitoredItemService._is_deadband_exceeded takes (self, values)" in message
