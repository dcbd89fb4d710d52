"""The HTTP API of the alert worker, next to ``/health`` and ``/metrics`` (port 9103).

``GET /api/v1/alerts``
    Filters: ``state`` (``active``, ``acknowledged``, ``cleared`` or ``open`` = not cleared;
    repeatable), ``min_severity`` (1-5), ``rule``, ``tag`` (a path glob with ``*`` and ``?``),
    ``since`` / ``until`` (ISO 8601 with a time zone; an alert is listed when it was open at
    some time in ``[since, until)``), ``limit`` (1-1000, default 100). Newest raise first.
    Invalid filters are a 422 whose ``detail`` lists the reasons.

``POST /api/v1/alerts/{id}/ack`` with ``{"by": "...", "comment": "..."}``
    Needs ``Authorization: Bearer <ALERTS_API_TOKEN>``: 401 without it or with a wrong one,
    403 when the worker has no token configured (acknowledging is off). 404 for an unknown id.
    409 when the alert is already cleared (nothing is left to acknowledge; a cleared alert
    that was never acknowledged keeps ``acknowledged_at`` null) or already acknowledged (the
    first acknowledgement, who and why, is kept). 200 with the alert otherwise.

Both answer 503 while the database is unreachable (alerting itself goes on). Every error is
declared in the OpenAPI schema (``/openapi.json``, browsable at ``/docs``) with its model.

``/ui/...`` is the operator page (:mod:`plantmon_alerts.ui`), on the same app.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from plantmon_common.service import HealthCheck, health_app
from prometheus_client import CollectorRegistry
from pydantic import AwareDatetime, BaseModel, Field, SecretStr

from plantmon_alerts.store import (
    AlertNotFoundError,
    AlertNotOpenError,
    AlertQuery,
    AlertStore,
    StoreError,
    glob_to_like,
)

logger = logging.getLogger(__name__)

StateFilter = Literal["active", "acknowledged", "cleared", "open"]


class Alert(BaseModel):
    """One row of the alerts table."""

    id: uuid.UUID
    rule: str
    tag_path: str
    severity: int
    state: Literal["active", "acknowledged", "cleared"]
    message: str
    value_at_raise: float | None
    peak_value: float | None
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    cleared_at: datetime | None
    updated_at: datetime


class AlertList(BaseModel):
    alerts: list[Alert]
    count: int


class ErrorDetail(BaseModel):
    """An error with its reason."""

    detail: str = Field(description="Why the request was refused")


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorDetail(BaseModel):
    """Invalid input: one entry per problem, naming the field."""

    detail: list[ValidationProblem]


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorDetail, "description": "The alert database is unreachable (alerting goes on)"}
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorDetail, "description": "Invalid input; `detail` names each field and why"}
}


class AckRequest(BaseModel):
    """Who acknowledges, and optionally why."""

    by: str = Field(min_length=1, max_length=200, description="The operator acknowledging")
    comment: str | None = Field(default=None, max_length=2000)


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


def _unavailable(exc: StoreError) -> HTTPException:
    logger.warning("database unavailable for the API", extra={"error": str(exc)})
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the alert database is unavailable")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class TokenCheck:
    """A dependency that lets through only ``Authorization: Bearer <token>``."""

    def __init__(self, token: SecretStr | None) -> None:
        self.token = token

    def __call__(self, credentials: BearerCredentials) -> None:
        if self.token is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="acknowledging is off: ALERTS_API_TOKEN is not set")
        expected = self.token.get_secret_value().encode()
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )


def create_app(
    store: AlertStore,
    registry: CollectorRegistry,
    health: HealthCheck,
    api_token: SecretStr | None,
    *,
    on_ack: Callable[[dict[str, Any]], None] | None = None,
    session_max_age_s: int = 8 * 3600,
) -> FastAPI:
    """``/health``, ``/metrics``, the alert API and the operator page on one app.

    ``on_ack`` is called with the row of every acknowledgement (API or page), after it is stored.
    """
    from fastapi.openapi.docs import get_swagger_ui_html

    from plantmon_alerts.ui import operator_router

    app = health_app("plantmon alert worker", registry, health)
    app.version = "1.0"
    app.description = "Alerts of the plant: list, acknowledge; operator page under /ui/alerts."

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="plantmon alerts API")

    router = APIRouter(prefix="/api/v1")
    require_token = TokenCheck(api_token)

    @router.get(
        "/alerts",
        summary="List alerts",
        response_model=AlertList,
        responses={**INVALID, **UNAVAILABLE},
    )
    async def list_alerts(
        state: Annotated[list[StateFilter] | None, Query(description="Repeatable")] = None,
        min_severity: Annotated[int, Query(ge=1, le=5)] = 1,
        rule: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        tag: Annotated[str | None, Query(min_length=1, max_length=300, description="Path glob: * and ?")] = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if since is not None and until is not None and not since < until:
            raise _unprocessable("until", "until must be after since")
        if tag is not None and any(c in tag for c in "[]"):
            raise _unprocessable("tag", "only the wildcards * and ? are supported")
        states = tuple(s for s in (state or []) if s != "open")
        query = AlertQuery(
            states=states,  # type: ignore[arg-type]  # 'open' is removed above
            open_only="open" in (state or []),
            min_severity=min_severity,
            rule=rule,
            tag_like=glob_to_like(tag) if tag is not None else None,
            since=since,
            until=until,
            limit=limit,
        )
        try:
            rows = await store.query(query)
        except StoreError as exc:
            raise _unavailable(exc) from exc
        return {"alerts": rows, "count": len(rows)}

    @router.post(
        "/alerts/{alert_id}/ack",
        summary="Acknowledge an open alert",
        response_model=Alert,
        dependencies=[Depends(require_token)],
        responses={
            401: {"model": ErrorDetail, "description": "No bearer token, or a wrong one"},
            403: {"model": ErrorDetail, "description": "Acknowledging is off: no ALERTS_API_TOKEN configured"},
            404: {"model": ErrorDetail, "description": "No alert has this id"},
            409: {"model": ErrorDetail, "description": "The alert is already cleared or acknowledged"},
            **INVALID,
            **UNAVAILABLE,
        },
    )
    async def acknowledge(alert_id: Annotated[uuid.UUID, Path()], body: AckRequest) -> dict[str, Any]:
        try:
            row = await store.acknowledge(alert_id, body.by, body.comment)
        except AlertNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no alert {alert_id}") from exc
        except AlertNotOpenError as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"alert {alert_id} is {exc.alert['state']}, not active"
            ) from exc
        except StoreError as exc:
            raise _unavailable(exc) from exc
        logger.info("alert acknowledged", extra={"alert_id": str(alert_id), "by": body.by})
        if on_ack is not None:
            on_ack(row)
        return row

    app.include_router(router)
    app.include_router(operator_router(store, api_token, on_ack=on_ack, session_max_age_s=session_max_age_s))
    return app
