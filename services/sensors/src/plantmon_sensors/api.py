"""The HTTP transport: FastAPI routes over the latest snapshot, ``/health``, ``/metrics``, ``/admin``.

Requests only read the snapshot the sampler keeps; they never wait for a device. The handlers are
``async`` on purpose: they run on the event loop, like the sampler, so the simulator is never
touched from two threads. The sampling
tasks start and stop in the app's lifespan (:func:`create_app`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from plantmon_common.metrics import new_registry
from plantmon_common.tags import TagMeta, TagReading
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from plantmon_sensors import __version__
from plantmon_sensors.catalog import SENSOR_BY_ID, TAG_BY_PATH, TAGS, SensorKind
from plantmon_sensors.devices import DeviceSet, build_devices
from plantmon_sensors.domain import SnapshotStore
from plantmon_sensors.metrics import SensorMetrics
from plantmon_sensors.sampler import MIN_READ_TIMEOUT_S, Sampler, SensorHealth
from plantmon_sensors.settings import SensorSettings
from plantmon_sensors.simulator import FAULT_DESCRIPTIONS, Fault, FaultError

logger = logging.getLogger(__name__)

MFCC_PREFIX = "Plant/Audio/MFCC/"
SPECTRUM_PREFIX = "Plant/Audio/Spectrum/"
ALL_PATHS = tuple(t.path for t in TAGS)
PATHS_BY_SENSOR = {sensor: tuple(t.path for t in TAGS if t.sensor_id == sensor) for sensor in SENSOR_BY_ID}
MFCC_PATHS = tuple(t.path for t in TAGS if t.path.startswith(MFCC_PREFIX))
SPECTRUM_PATHS = tuple(t.path for t in TAGS if t.path.startswith(SPECTRUM_PREFIX))


def _json(body: bytes) -> Response:
    """A JSON response from bytes the snapshot serialised when the reading was stored.

    The readings routes declare their ``response_model`` for the OpenAPI schema but return these
    bytes directly: the rows were validated and serialised once, by the store, not per request.
    """
    return Response(content=body, media_type="application/json")


# -- response models ---------------------------------------------------------------------
class Problem(BaseModel):
    """An error with its reason (a list of field errors for request validation)."""

    detail: str | list[Any]


class ReadingsResponse(BaseModel):
    """Several readings at once."""

    readings: list[TagReading]


class HealthResponse(BaseModel):
    """Service health: ``ok`` when every sensor reads, ``degraded`` otherwise, ``dead`` if sampling stopped."""

    status: Literal["ok", "degraded", "dead"]
    mode: str
    drivers: dict[str, str] = Field(default_factory=dict, description="sim or hardware, per sensor id")
    version: str
    sensors: list[SensorHealth]
    dead_loops: list[str] = Field(default_factory=list)


class FaultStatus(BaseModel):
    """One injectable fault."""

    fault: Fault
    active: bool
    description: str
    sensors: list[str] = Field(default_factory=list, description="Stopped sensors (sensor_stopped only)")


class FaultsResponse(BaseModel):
    faults: list[FaultStatus]


class FaultRequest(BaseModel):
    """Switch a fault on or off; ``sensor`` names the sensor for ``sensor_stopped``."""

    model_config = {"extra": "forbid"}

    active: bool
    sensor: str | None = Field(default=None, description="Sensor id, for sensor_stopped")


# -- the service object the routes share -------------------------------------------------
class SensorService:
    """What the routes need: settings, devices, the snapshot, the sampler."""

    def __init__(self, settings: SensorSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = SensorMetrics(registry)
        self.devices: DeviceSet = build_devices(settings, self.metrics.feature_seconds.observe)
        intervals = {kind: settings.interval_for(kind.value) for kind in SensorKind}
        self.store = SnapshotStore(
            {s.sensor_id: 3 * intervals[s.kind] + MIN_READ_TIMEOUT_S for s in SENSOR_BY_ID.values()}
        )
        self.sampler = Sampler(self.devices, intervals, self.store, self.metrics)

    def faults(self) -> FaultsResponse:
        sim = self.devices.simulation
        if sim is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "fault injection needs SENSORS_MODE=sim")
        return FaultsResponse(
            faults=[
                FaultStatus(
                    fault=f,
                    active=sim.faults.is_active(f),
                    description=FAULT_DESCRIPTIONS[f],
                    sensors=sorted(sim.faults.stopped_sensors) if f is Fault.SENSOR_STOPPED else [],
                )
                for f in Fault
            ]
        )


def _service(request: Request) -> SensorService:
    service: SensorService = request.app.state.service
    return service


ServiceDep = Annotated[SensorService, Depends(_service)]
_bearer = HTTPBearer(auto_error=False, description="SENSORS_ADMIN_TOKEN")


def _require_admin(
    service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = service.settings.admin_token
    if token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin disabled (set SENSORS_ADMIN_TOKEN to enable it)")
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 422: {"model": Problem}}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    403: {"model": Problem, "description": "admin disabled (no SENSORS_ADMIN_TOKEN)"},
    409: {"model": Problem, "description": "not in simulation mode"},
    422: {"model": Problem, "description": "unknown fault or sensor"},
}


def _unknown_sensor(sensor: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSOR_BY_ID)}"
    )


def create_app(settings: SensorSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    """The sensor API; the sampling tasks run for the lifespan of the app."""
    service = SensorService(settings, registry if registry is not None else new_registry("sensors"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.devices.start()  # audio tables load in the background; audio tags read "warming up" meanwhile
        try:
            async with service.sampler:
                # Everything alive now (modules, the catalog, the app) lives as long as the process:
                # move it out of the collector's view, so a full collection does not walk tens of
                # thousands of objects in the middle of a request (a 100 ms pause measured here).
                gc.collect()
                gc.freeze()
                yield
        finally:
            service.devices.close()

    app = FastAPI(
        title="plantmon sensors",
        version=__version__,
        description="Readings of the plant's sensors (or of the simulator), with quality and observation time.",
        lifespan=lifespan,
    )
    app.state.service = service

    # The read routes use ``service`` from this scope rather than a FastAPI dependency: solving
    # one costs about 0.2 ms per request here, more than building the answer.
    @app.get(
        "/api/v1/tags", response_model=list[TagMeta], tags=["tags"], responses=_ERRORS, summary="Metadata of every tag"
    )
    async def list_tags(
        sensor: Annotated[str | None, Query(description="Only the tags of this sensor id")] = None,
    ) -> list[TagMeta]:
        if sensor is not None and sensor not in SENSOR_BY_ID:
            raise _unknown_sensor(sensor)
        return [t.meta() for t in TAGS if sensor is None or t.sensor_id == sensor]

    @app.get(
        "/api/v1/readings",
        response_model=ReadingsResponse,
        tags=["readings"],
        responses=_ERRORS,
        summary="The latest reading of every tag",
    )
    async def all_readings(
        sensor: Annotated[str | None, Query(description="Only the readings of this sensor id")] = None,
    ) -> Response:
        if sensor is None:
            return _json(service.store.readings_json(ALL_PATHS))
        if sensor not in SENSOR_BY_ID:
            raise _unknown_sensor(sensor)
        return _json(service.store.readings_json(PATHS_BY_SENSOR[sensor]))

    @app.get(
        "/api/v1/readings/{path:path}",
        response_model=TagReading,
        tags=["readings"],
        responses=_ERRORS,
        summary="The latest reading of one tag by its path",
    )
    async def one_reading(
        path: Annotated[str, Path(description="Tag path, e.g. Plant/Temperature/Upper")],
    ) -> Response:
        if path not in TAG_BY_PATH:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tag {path!r}; GET /api/v1/tags lists them")
        return _json(service.store.row_json(path))

    def _single(route: str, tag_path: str, summary: str) -> None:
        async def handler() -> Response:
            return _json(service.store.row_json(tag_path))

        handler.__name__ = "read_" + route.strip("/").replace("/", "_")
        app.get(route, response_model=TagReading, tags=["seed endpoints"], summary=summary)(handler)

    _single("/temperature/upper", "Plant/Temperature/Upper", "Upper bearing temperature")
    _single("/temperature/lower", "Plant/Temperature/Lower", "Lower bearing temperature")
    _single("/rpm", "Plant/RPM/MainShaft", "Main shaft speed")
    _single("/voltage", "Plant/Voltage/MainSupply", "Main supply voltage")

    @app.get("/audio/mfcc", response_model=ReadingsResponse, tags=["seed endpoints"], summary="The 13 MFCC")
    async def audio_mfcc() -> Response:
        return _json(service.store.readings_json(MFCC_PATHS))

    @app.get(
        "/audio/spectrum", response_model=ReadingsResponse, tags=["seed endpoints"], summary="The 32 spectrum bands"
    )
    async def audio_spectrum() -> Response:
        return _json(service.store.readings_json(SPECTRUM_PATHS))

    @app.get(
        "/health",
        response_model=HealthResponse,
        tags=["operations"],
        responses={503: {"model": HealthResponse, "description": "the sampling loop is dead"}},
        summary="Per-sensor health; 503 only when sampling has stopped",
    )
    async def health(service: ServiceDep) -> JSONResponse:
        sensors = service.sampler.health()
        alive = service.sampler.alive()
        overall: Literal["ok", "degraded", "dead"] = (
            "dead" if not alive else "ok" if all(s.status == "ok" for s in sensors) else "degraded"
        )
        body = HealthResponse(
            status=overall,
            mode=settings.mode,
            drivers=service.devices.drivers,
            version=__version__,
            sensors=sensors,
            dead_loops=service.sampler.dead_loops(),
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if alive else 503)

    @app.get(
        "/admin/faults",
        response_model=FaultsResponse,
        tags=["admin"],
        responses=_ADMIN_ERRORS,
        dependencies=[Depends(_require_admin)],
        summary="The injectable faults and which are active",
    )
    async def get_faults(service: ServiceDep) -> FaultsResponse:
        return service.faults()

    @app.put(
        "/admin/faults/{fault}",
        response_model=FaultsResponse,
        tags=["admin"],
        responses=_ADMIN_ERRORS,
        dependencies=[Depends(_require_admin)],
        summary="Switch a fault on or off",
    )
    async def put_fault(service: ServiceDep, fault: Fault, body: FaultRequest) -> FaultsResponse:
        sim = service.devices.simulation
        if sim is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "fault injection needs SENSORS_MODE=sim")
        try:
            sim.set_fault(fault, body.active, body.sensor)
        except FaultError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        logger.info(
            "fault set through /admin", extra={"fault": fault.value, "active": body.active, "sensor": body.sensor}
        )
        return service.faults()

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    return app
