"""HTML of the operator page: Jinja2 templates (package data, ``ui/templates``) with autoescaping.

Every value a template prints is escaped unless a template says otherwise (none does), so an
alert message or a tag path is shown as text, never as markup. Each page answers with headers
that keep it out of caches and frames and allow no script at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from plantmon_alerts.ui.session import Session

SEVERITY_NAMES = {1: "info", 2: "low", 3: "medium", 4: "high", 5: "critical"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "same-origin",
}


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value is not None else ""


def fmt_value(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def severity(value: int) -> str:
    return f"{value} ({SEVERITY_NAMES.get(value, '')})"


environment = jinja2.Environment(
    loader=jinja2.PackageLoader("plantmon_alerts", "ui/templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(time=fmt_time, value=fmt_value, severity=severity)
templates = Jinja2Templates(env=environment)


def page(
    request: Request, template: str, title: str, session: Session | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """``template`` rendered inside the page frame (title, navigation, who is signed in)."""
    return templates.TemplateResponse(
        request,
        template,
        {"title": title, "session": session, **context},
        status_code=status_code,
        headers=PAGE_HEADERS,
    )


def message(request: Request, title: str, text: str, session: Session | None, status_code: int) -> HTMLResponse:
    """A page that only says why the request was refused or failed."""
    return page(request, "message.html", title, session, status_code, text=text)
