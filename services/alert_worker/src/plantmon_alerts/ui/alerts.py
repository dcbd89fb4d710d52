"""The operator page's alert routes: the list, one alert, and acknowledging it with a comment.

``GET /ui/alerts`` lists the open alerts (active and acknowledged), most severe first.
``GET /ui/alerts/{id}`` shows one alert in any state; it is the link format of Grafana's alert
table (``${__data.fields.id}``, see docs/operations.md). ``POST /ui/alerts/{id}/ack`` needs a
session and the session's CSRF token (403 without it), then answers with a redirect to the
alert (``?done=acked``, or ``?done=conflict`` when it was already cleared or acknowledged).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from plantmon_alerts.store import AlertNotFoundError, AlertNotOpenError, AlertQuery, StoreError
from plantmon_alerts.ui.deps import PageDep, SessionDep
from plantmon_alerts.ui.render import message, page
from plantmon_alerts.ui.session import same_token

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ui")

COMMENT_MAX = 2000
UNAVAILABLE = "The alert database is unavailable."


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/alerts", status.HTTP_303_SEE_OTHER)


@router.get("/alerts")
async def active_alerts(request: Request, ui: PageDep, session: SessionDep) -> HTMLResponse:
    try:
        rows = await ui.store.query(AlertQuery(open_only=True, limit=500))
    except StoreError:
        return message(request, "Active alerts", UNAVAILABLE, session, status.HTTP_503_SERVICE_UNAVAILABLE)
    rows.sort(key=lambda r: (-r["severity"], r["raised_at"]))
    return page(request, "alerts.html", "Active alerts", session, alerts=rows)


@router.get("/alerts/{alert_id}")
async def one_alert(request: Request, alert_id: str, ui: PageDep, session: SessionDep) -> HTMLResponse:
    try:
        parsed = uuid.UUID(alert_id)
    except ValueError:
        return message(request, "Alert", "Not an alert id.", session, status.HTTP_404_NOT_FOUND)
    try:
        row = await ui.store.get(parsed)
    except StoreError:
        return message(request, "Alert", UNAVAILABLE, session, status.HTTP_503_SERVICE_UNAVAILABLE)
    if row is None:
        return message(request, "Alert", f"No alert {alert_id}.", session, status.HTTP_404_NOT_FOUND)
    return page(
        request,
        "alert.html",
        f"Alert: {row['rule']} on {row['tag_path']}",
        session,
        alert=row,
        notice=request.query_params.get("done", ""),
        signing_in=ui.signer is not None,
        comment_max=COMMENT_MAX,
    )


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(
    request: Request,
    alert_id: str,
    ui: PageDep,
    session: SessionDep,
    csrf: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> Response:
    if ui.signer is None:
        return message(request, "Acknowledge", "Acknowledging is off.", None, status.HTTP_403_FORBIDDEN)
    if session is None:
        return RedirectResponse(f"/ui/login?next={quote(f'/ui/alerts/{alert_id}')}", status.HTTP_303_SEE_OTHER)
    if not same_token(csrf, session.csrf):
        logger.warning("operator page: acknowledgement without a valid CSRF token", extra={"by": session.operator})
        return message(request, "Acknowledge", "Invalid form (CSRF token).", session, status.HTTP_403_FORBIDDEN)
    try:
        parsed = uuid.UUID(alert_id)
    except ValueError:
        return message(request, "Acknowledge", "Not an alert id.", session, status.HTTP_404_NOT_FOUND)
    try:
        row = await ui.store.acknowledge(parsed, session.operator, comment.strip()[:COMMENT_MAX] or None)
    except AlertNotFoundError:
        return message(request, "Acknowledge", f"No alert {alert_id}.", session, status.HTTP_404_NOT_FOUND)
    except AlertNotOpenError:
        return RedirectResponse(f"/ui/alerts/{parsed}?done=conflict", status.HTTP_303_SEE_OTHER)
    except StoreError:
        return message(request, "Acknowledge", UNAVAILABLE, session, status.HTTP_503_SERVICE_UNAVAILABLE)
    logger.info("alert acknowledged on the operator page", extra={"alert_id": str(parsed), "by": session.operator})
    if ui.on_ack is not None:
        ui.on_ack(row)
    return RedirectResponse(f"/ui/alerts/{parsed}?done=acked", status.HTTP_303_SEE_OTHER)
