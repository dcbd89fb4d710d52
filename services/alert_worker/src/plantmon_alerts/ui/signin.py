"""Signing in and out of the operator page.

``GET /ui/login`` shows the form with a fresh double-submit token (a cookie and a hidden field
that must match: a cross-site form post is refused with 403). ``POST /ui/login`` takes the
operator's name and, as password, the credential the API asks for (``ALERTS_API_TOKEN``); a
wrong one is refused (401) and logged. Signing in redirects to ``next`` when that is a local
``/ui/`` path (no open redirect). ``POST /ui/logout`` needs the session's CSRF token. Without an
API token nobody signs in (403).
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from plantmon_alerts.ui.deps import PageDep, SessionDep
from plantmon_alerts.ui.render import message, page
from plantmon_alerts.ui.session import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    same_token,
    set_login_cookie,
    set_session_cookie,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ui")

OPERATOR_MAX = 200
SIGNING_IN_OFF = "Signing in is off (no ALERTS_API_TOKEN)."


def safe_next(target: str | None) -> str:
    """Only local /ui/ paths: no open redirect."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/alerts"


def login_form(request: Request, target: str | None, error: str = "", status_code: int = 200) -> HTMLResponse:
    """The sign-in form with a new double-submit token, in the page and in its cookie.

    ``target`` is where to go once signed in: the form's ``next`` field, else the URL's ``?next=``.
    """
    if target is None:
        target = request.query_params.get("next")
    nonce = secrets.token_urlsafe(16)
    response = page(
        request,
        "login.html",
        "Sign in",
        None,
        status_code,
        error=error,
        nonce=nonce,
        target=safe_next(target),
        operator_max=OPERATOR_MAX,
    )
    set_login_cookie(response, request, nonce)
    return response


@router.get("/login")
async def login_page(request: Request, ui: PageDep) -> HTMLResponse:
    if ui.signer is None:
        return message(request, "Sign in", SIGNING_IN_OFF, None, status.HTTP_403_FORBIDDEN)
    return login_form(request, None)


@router.post("/login")
async def login(
    request: Request,
    ui: PageDep,
    csrf: Annotated[str, Form()] = "",
    operator: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    target: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    if ui.signer is None or ui.api_token is None:
        return message(request, "Sign in", SIGNING_IN_OFF, None, status.HTTP_403_FORBIDDEN)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not same_token(csrf, nonce):
        return login_form(request, target, "The sign-in form expired; please try again.", status.HTTP_403_FORBIDDEN)
    name = operator.strip()
    right_password = same_token(password, ui.api_token.get_secret_value())
    if not name or len(name) > OPERATOR_MAX or not right_password:
        logger.warning("operator page: sign-in refused", extra={"operator": name[:OPERATOR_MAX]})
        return login_form(request, target, "Wrong operator name or password.", status.HTTP_401_UNAUTHORIZED)
    session = ui.signer.new(name)
    logger.info("operator signed in", extra={"operator": name})
    response = RedirectResponse(safe_next(target), status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, request, ui.signer, session)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, csrf: Annotated[str, Form()] = "") -> Response:
    if session is not None and not same_token(csrf, session.csrf):
        return message(request, "Sign out", "Invalid form (CSRF token).", session, status.HTTP_403_FORBIDDEN)
    response = RedirectResponse("/ui/alerts", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
