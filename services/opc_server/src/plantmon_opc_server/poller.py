"""Polls the sensor API through the DMZ and turns each reading into an honest DataValue.

The StatusCode rules: Good for a good reading; Bad_SensorFailure (the sensor's reason in the
log and the health endpoint) for a bad one; Uncertain_LastUsableValue when a tag has had no
new observation for ``stale_after_polls`` polls; Bad_CommunicationError for every tag when the
sensor service or the DMZ cannot be reached. A stale value is never marked Good, and every
written DataValue has a new SourceTimestamp, so a change of status is always a new sample.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from asyncua import ua
from plantmon_common.tags import Quality, TagMeta, TagReading
from pydantic import BaseModel, TypeAdapter, ValidationError

logger = logging.getLogger(__name__)


class ReadingsPage(BaseModel):
    readings: list[TagReading]


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
    tag_states: dict[str, TagState] = field(default_factory=dict)


def status_for(reading: TagReading) -> ua.StatusCode:
    if reading.quality is Quality.GOOD and reading.value is not None:
        return ua.StatusCode(ua.StatusCodes.Good)
    if reading.quality is Quality.UNCERTAIN:
        return ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)
    return ua.StatusCode(ua.StatusCodes.BadSensorFailure)


def make_datavalue(value: float | None, status: ua.StatusCode, source: datetime) -> ua.DataValue:
    variant = ua.Variant(float(value), ua.VariantType.Double) if value is not None else ua.Variant()
    return ua.DataValue(variant, StatusCode=status, SourceTimestamp=source, ServerTimestamp=datetime.now(UTC))


class SensorPoller:
    """Fetches ``/api/v1/readings`` through the DMZ."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers={"Accept": "application/json"})

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self.client.get(path)
        except httpx.HTTPError as exc:
            raise PollError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PollError(f"sensor API answered HTTP {response.status_code} for {path}")
        return response

    async def fetch(self) -> tuple[list[TagReading], float]:
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
