"""Polls the sensor API through the DMZ and turns each reading into an honest DataValue.

The StatusCode rules: Good for a good reading; Bad_SensorFailure (the sensor's reason in the
log and the health endpoint) for a bad one; Uncertain_LastUsableValue when a tag has had no
new observation for ``stale_after_polls`` polls; Bad_CommunicationError for every tag when the
sensor service or the DMZ cannot be reached. A stale value is never marked Good, and every
written DataValue has a new SourceTimestamp, so a change of status is always a new sample.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from asyncua import ua
from plantmon_common.tags import Quality, TagMeta, TagReading
from pydantic import BaseModel, TypeAdapter, ValidationError

logger = logging.getLogger(__name__)


class PolledReading(BaseModel):
    """One row of ``/api/v1/readings`` as the poll loop needs it.

    Deliberately lighter than :class:`~plantmon_common.tags.TagReading` (no path validator, no
    required metadata): it is parsed for every tag at every poll. A tag that is new to the
    server is validated in full (:class:`TagMeta`) before it becomes a node.
    """

    path: str
    value: float | None
    quality: Quality
    reason: str | None = None
    observed_at: datetime
    unit: str = ""
    eu_low: float | None = None
    eu_high: float | None = None
    description: str = ""
    sensor_id: str = ""


class ReadingsPage(BaseModel):
    readings: list[PolledReading]


TagList = TypeAdapter(list[TagMeta])


class PollError(Exception):
    """The sensor API could not be reached or answered nonsense."""


@dataclass
class TagState:
    """What the server last wrote for one tag."""

    last_observed: datetime | None = None
    last_written: datetime | None = None
    polls_without_news: int = 0
    reason: str | None = None


@dataclass
class PollHealth:
    """The polling health the status object and ``/health`` report."""

    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    sensors_reachable: bool = False
    polls: int = 0
    failing_since_poll: int | None = None
    tag_states: dict[str, TagState] = field(default_factory=dict)


GOOD = ua.StatusCode(ua.StatusCodes.Good)
UNCERTAIN_SENSOR = ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)
UNCERTAIN_STALE = ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)
BAD_SENSOR = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
BAD_COMMUNICATION = ua.StatusCode(ua.StatusCodes.BadCommunicationError)


BAD_WAITING = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)


def status_for(reading: PolledReading | TagReading) -> ua.StatusCode:
    """Good / Uncertain need a value (a Double variable cannot hold an Uncertain null)."""
    if reading.quality is Quality.GOOD and reading.value is not None:
        return GOOD
    if reading.quality is Quality.UNCERTAIN:
        # e.g. the audio features while they warm up: no value yet is not a sensor failure
        return UNCERTAIN_SENSOR if reading.value is not None else BAD_WAITING
    return BAD_SENSOR


def make_datavalue(
    value: float | None, status: ua.StatusCode, source: datetime, server_time: datetime | None = None
) -> ua.DataValue:
    variant = ua.Variant(float(value), ua.VariantType.Double) if value is not None else ua.Variant()
    return ua.DataValue(
        variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=server_time or datetime.now(UTC)
    )


class SensorPoller:
    """Fetches ``/api/v1/readings`` through the DMZ (over TLS when the URL is https://)."""

    def __init__(self, base_url: str, timeout_s: float, ca_file: Path | None = None) -> None:
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
            verify.minimum_version = ssl.TLSVersion.TLSv1_2
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers={"Accept": "application/json"}, verify=verify
        )

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self.client.get(path)
        except httpx.HTTPError as exc:
            raise PollError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PollError(f"sensor API answered HTTP {response.status_code} for {path}")
        return response

    async def fetch(self) -> tuple[list[PolledReading], float]:
        """All readings and the request's latency in seconds; raises :class:`PollError`."""
        started = time.perf_counter()
        response = await self._get("/api/v1/readings")
        latency = time.perf_counter() - started
        try:
            page = ReadingsPage.model_validate_json(response.content)
        except ValidationError as exc:
            raise PollError(f"sensor API answered an invalid body: {exc.error_count()} errors") from exc
        return page.readings, latency

    async def fetch_tags(self) -> list[TagMeta]:
        """The tag metadata the sensor service advertises (``/api/v1/tags``)."""
        response = await self._get("/api/v1/tags")
        try:
            return TagList.validate_json(response.content)
        except ValidationError as exc:
            raise PollError(f"sensor API answered an invalid tag list: {exc.error_count()} errors") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
