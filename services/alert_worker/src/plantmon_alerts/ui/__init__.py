"""The operator page: server-rendered HTML with plain forms (no front-end build, no JavaScript).

``GET /ui/alerts``
    The open alerts (active and acknowledged), most severe first; each links to its own page.
``GET /ui/alerts/{id}``
    One alert (any state): what, where, values, times, who acknowledged. While it is active and
    the operator is signed in, a form acknowledges it with a comment. This is the link format the
    Grafana alert table uses (``${__data.fields.id}``, see docs/operations.md).
``GET /ui/login``, ``POST /ui/login``
    Sign-in with the operator's name and, as password, the same credential the API asks for
    (``ALERTS_API_TOKEN``). A wrong password is refused (401) and logged.
``POST /ui/logout``

Modules: :mod:`.alerts` and :mod:`.signin` hold the routes, :mod:`.session` the signed session
cookie (itsdangerous; key from the API token, age bounded on the server, HttpOnly, SameSite,
Secure over HTTPS), :mod:`.render` the Jinja2 templates (``templates/``, autoescaped) and
:mod:`.deps` what the routes depend on. Every state-changing form carries the session's CSRF
token in a hidden field and is refused (403) without it; the sign-in form carries its own
double-submit token. Forms are parsed by FastAPI (``Form(...)``, python-multipart); a body over
:data:`MAX_FORM_BYTES` is refused with 413 before anything is read into a form, a body that does
not parse with 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import SecretStr

from plantmon_alerts.store import AlertStore
from plantmon_alerts.ui import alerts, signin
from plantmon_alerts.ui.deps import OperatorPage
from plantmon_alerts.ui.session import SessionSigner

MAX_FORM_BYTES = 16 * 1024

__all__ = ["MAX_FORM_BYTES", "operator_router"]


def operator_router(
    store: AlertStore,
    api_token: SecretStr | None,
    *,
    on_ack: Callable[[dict[str, Any]], None] | None = None,
    session_max_age_s: int = 8 * 3600,
) -> APIRouter:
    """The ``/ui`` routes (left out of the OpenAPI schema: they are HTML for people)."""
    signer = SessionSigner(api_token, session_max_age_s) if api_token is not None else None
    ui = OperatorPage(store, api_token, signer, on_ack)
    router = APIRouter(
        include_in_schema=False,
        dependencies=[Depends(ui.bind)],
        max_body_size=MAX_FORM_BYTES,
    )
    router.include_router(alerts.router)
    router.include_router(signin.router)
    return router
