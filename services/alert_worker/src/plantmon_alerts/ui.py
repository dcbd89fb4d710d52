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

The session is a cookie signed with HMAC-SHA256 under a key derived from the API token (so
rotating the token signs everybody out): ``base64(json{op, exp, csrf}).signature``, HttpOnly,
SameSite=Lax, Path=/ui, Secure when the request came over HTTPS. Every state-changing form
carries the session's CSRF token in a hidden field and is refused (403) without it; the sign-in
form carries its own double-submit token (a cookie and a field that must match).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import SecretStr

from plantmon_alerts.store import AlertNotFoundError, AlertNotOpenError, AlertQuery, AlertStore, StoreError

logger = logging.getLogger(__name__)

SESSION_COOKIE = "plantmon_session"
LOGIN_COOKIE = "plantmon_login"
MAX_FORM_BYTES = 16 * 1024
SEVERITY_NAMES = {1: "info", 2: "low", 3: "medium", 4: "high", 5: "critical"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left}
.sev5{background:#fdd}.sev4{background:#fed}.sev3{background:#ffd}
.msg{padding:.5rem;border:1px solid #ccc;margin:.5rem 0}.error{background:#fdd}.ok{background:#dfd}
header{display:flex;justify-content:space-between;align-items:center}
form.inline{display:inline}label{display:block;margin:.4rem 0}
"""


@dataclass(frozen=True)
class Session:
    operator: str
    csrf: str
    expires: float


class SessionSigner:
    """Signs and checks session cookies (see the module docstring)."""

    def __init__(self, token: SecretStr, max_age_s: int) -> None:
        self.key = hashlib.sha256(b"plantmon-alerts-session\0" + token.get_secret_value().encode()).digest()
        self.max_age_s = max_age_s

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.digest(self.key, payload, "sha256")).decode().rstrip("=")

    def dump(self, session: Session) -> str:
        payload = json.dumps({"op": session.operator, "csrf": session.csrf, "exp": session.expires}).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def load(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        encoded, signature = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
            session = Session(str(data["op"]), str(data["csrf"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def new(self, operator: str) -> Session:
        return Session(operator, secrets.token_urlsafe(24), time.time() + self.max_age_s)


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (no multipart dependency needed)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _page(title: str, body: str, session: Session | None, status_code: int = 200) -> HTMLResponse:
    who = (
        f'<span>Signed in as <b id="operator">{escape(session.operator)}</b></span> '
        f'<form class="inline" method="post" action="/ui/logout">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        f'<button type="submit">Sign out</button></form>'
        if session
        else '<a href="/ui/login">Sign in</a>'
    )
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)} - plantmon</title>"
        f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1><nav>"
        f'<a href="/ui/alerts">Active alerts</a> | {who}</nav></header>{body}</body></html>'
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            "Referrer-Policy": "same-origin",
        },
    )


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value is not None else ""


def _fmt_value(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _safe_next(target: str | None) -> str:
    """Only local /ui/ paths: no open redirect."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/alerts"


def operator_router(
    store: AlertStore,
    api_token: SecretStr | None,
    *,
    on_ack: Callable[[dict[str, Any]], None] | None = None,
    session_max_age_s: int = 8 * 3600,
) -> APIRouter:
    """The ``/ui`` routes (left out of the OpenAPI schema: they are HTML for people)."""
    router = APIRouter(prefix="/ui", include_in_schema=False)
    signer = SessionSigner(api_token, session_max_age_s) if api_token is not None else None

    def current(request: Request) -> Session | None:
        return signer.load(request.cookies.get(SESSION_COOKIE)) if signer else None

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"

    @router.get("")
    @router.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/alerts", status.HTTP_303_SEE_OTHER)

    @router.get("/alerts")
    async def active_alerts(request: Request) -> HTMLResponse:
        session = current(request)
        try:
            rows = await store.query(AlertQuery(open_only=True, limit=500))
        except StoreError:
            return _page("Active alerts", '<p class="msg error">The alert database is unavailable.</p>', session, 503)
        rows.sort(key=lambda r: (-r["severity"], r["raised_at"]))
        if not rows:
            table = '<p id="no-alerts">No active alerts.</p>'
        else:
            lines = []
            for r in rows:
                lines.append(
                    f'<tr class="sev{r["severity"]}" data-alert-id="{r["id"]}">'
                    f"<td>{r['severity']} ({SEVERITY_NAMES.get(r['severity'], '')})</td>"
                    f'<td><a href="/ui/alerts/{r["id"]}">{escape(r["message"])}</a></td>'
                    f"<td>{escape(r['tag_path'])}</td><td>{escape(r['rule'])}</td>"
                    f"<td>{_fmt_value(r['value_at_raise'])}</td><td>{_fmt_value(r['peak_value'])}</td>"
                    f"<td>{_fmt_time(r['raised_at'])}</td><td class=state>{escape(r['state'])}</td>"
                    f"<td>{escape(r['acknowledged_by'] or '')}</td></tr>"
                )
            table = (
                '<table id="alerts"><thead><tr><th>Severity</th><th>Alert</th><th>Tag</th><th>Rule</th>'
                "<th>Value at raise</th><th>Peak</th><th>Raised</th><th>State</th><th>Acknowledged by</th>"
                "</tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
            )
        return _page("Active alerts", f"<p>{len(rows)} open</p>{table}", session)

    @router.get("/alerts/{alert_id}")
    async def one_alert(request: Request, alert_id: str) -> HTMLResponse:
        session = current(request)
        try:
            parsed = uuid.UUID(alert_id)
        except ValueError:
            return _page("Alert", '<p class="msg error">Not an alert id.</p>', session, 404)
        try:
            row = await store.get(parsed)
        except StoreError:
            return _page("Alert", '<p class="msg error">The alert database is unavailable.</p>', session, 503)
        if row is None:
            return _page("Alert", f'<p class="msg error">No alert {escape(alert_id)}.</p>', session, 404)
        notice = {
            "acked": '<p class="msg ok" id="notice">Acknowledged.</p>',
            "conflict": '<p class="msg error" id="notice">This alert was already cleared or acknowledged.</p>',
        }.get(request.query_params.get("done", ""), "")
        facts = [
            ("State", f'<span id="state">{escape(row["state"])}</span>'),
            ("Severity", f"{row['severity']} ({SEVERITY_NAMES.get(row['severity'], '')})"),
            ("Rule", escape(row["rule"])),
            ("Tag", escape(row["tag_path"])),
            ("Value at raise", _fmt_value(row["value_at_raise"])),
            ("Peak", _fmt_value(row["peak_value"])),
            ("Raised", _fmt_time(row["raised_at"])),
            ("Acknowledged", _fmt_time(row["acknowledged_at"])),
            ("Acknowledged by", f'<span id="acknowledged-by">{escape(row["acknowledged_by"] or "")}</span>'),
            ("Comment", escape(row["ack_comment"] or "")),
            ("Cleared", _fmt_time(row["cleared_at"])),
            ("Alert id", str(row["id"])),
        ]
        body = notice + f'<p class="msg">{escape(row["message"])}</p><table>'
        body += "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
        if row["state"] == "active":
            if signer is None:
                body += "<p>Acknowledging is off (no ALERTS_API_TOKEN configured).</p>"
            elif session is None:
                target = quote(f"/ui/alerts/{row['id']}")
                body += f'<p><a id="sign-in" href="/ui/login?next={target}">Sign in</a> to acknowledge.</p>'
            else:
                body += (
                    f'<form id="ack" method="post" action="/ui/alerts/{row["id"]}/ack">'
                    f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
                    '<label>Comment <input name="comment" maxlength="2000" size="60"></label>'
                    '<button type="submit">Acknowledge</button></form>'
                )
        return _page(f"Alert: {row['rule']} on {row['tag_path']}", body, session)

    @router.post("/alerts/{alert_id}/ack")
    async def acknowledge(request: Request, alert_id: str) -> Response:
        session = current(request)
        if signer is None:
            return _page("Acknowledge", '<p class="msg error">Acknowledging is off.</p>', None, 403)
        if session is None:
            return RedirectResponse(f"/ui/login?next={quote(f'/ui/alerts/{alert_id}')}", status.HTTP_303_SEE_OTHER)
        form = await read_form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            logger.warning("operator page: acknowledgement without a valid CSRF token", extra={"by": session.operator})
            return _page("Acknowledge", '<p class="msg error">Invalid form (CSRF token).</p>', session, 403)
        try:
            parsed = uuid.UUID(alert_id)
        except ValueError:
            return _page("Acknowledge", '<p class="msg error">Not an alert id.</p>', session, 404)
        comment = form.get("comment", "").strip()[:2000] or None
        try:
            row = await store.acknowledge(parsed, session.operator, comment)
        except AlertNotFoundError:
            return _page("Acknowledge", f'<p class="msg error">No alert {escape(alert_id)}.</p>', session, 404)
        except AlertNotOpenError:
            return RedirectResponse(f"/ui/alerts/{parsed}?done=conflict", status.HTTP_303_SEE_OTHER)
        except StoreError:
            return _page("Acknowledge", '<p class="msg error">The alert database is unavailable.</p>', session, 503)
        logger.info("alert acknowledged on the operator page", extra={"alert_id": str(parsed), "by": session.operator})
        if on_ack is not None:
            on_ack(row)
        return RedirectResponse(f"/ui/alerts/{parsed}?done=acked", status.HTTP_303_SEE_OTHER)

    def login_form(
        request: Request, error: str = "", status_code: int = 200, target: str | None = None
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        target = _safe_next(target if target is not None else request.query_params.get("next"))
        message = f'<p class="msg error" id="login-error">{escape(error)}</p>' if error else ""
        body = (
            message + '<form id="login" method="post" action="/ui/login">'
            f'<input type="hidden" name="csrf" value="{nonce}">'
            f'<input type="hidden" name="next" value="{escape(target)}">'
            '<label>Operator name <input name="operator" required maxlength="200" autocomplete="username"></label>'
            '<label>Password <input name="password" type="password" required autocomplete="current-password"></label>'
            '<button type="submit">Sign in</button></form>'
            "<p>The password is the alert API token (ALERTS_API_TOKEN).</p>"
        )
        response = _page("Sign in", body, None, status_code)
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=900, httponly=True, samesite="strict", path="/ui", secure=secure(request)
        )
        return response

    @router.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        if signer is None:
            return _page("Sign in", '<p class="msg error">Signing in is off (no ALERTS_API_TOKEN).</p>', None, 403)
        return login_form(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        if signer is None or api_token is None:
            return _page("Sign in", '<p class="msg error">Signing in is off (no ALERTS_API_TOKEN).</p>', None, 403)
        form = await read_form(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not hmac.compare_digest(form.get("csrf", "").encode(), nonce.encode()):
            return login_form(request, "The sign-in form expired; please try again.", 403, form.get("next"))
        operator = form.get("operator", "").strip()
        password = form.get("password", "")
        ok = hmac.compare_digest(password.encode(), api_token.get_secret_value().encode())
        if not operator or len(operator) > 200 or not ok:
            logger.warning("operator page: sign-in refused", extra={"operator": operator[:200]})
            return login_form(request, "Wrong operator name or password.", 401, form.get("next"))
        session = signer.new(operator)
        logger.info("operator signed in", extra={"operator": operator})
        response = RedirectResponse(_safe_next(form.get("next")), status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            SESSION_COOKIE,
            signer.dump(session),
            max_age=signer.max_age_s,
            httponly=True,
            # Lax, not Strict: a link from Grafana (another site) must arrive signed in. Forms
            # that change state are protected by their CSRF token, not by the cookie policy.
            samesite="lax",
            path="/ui",
            secure=secure(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path="/ui")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = current(request)
        form = await read_form(request)
        if session is not None and not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            return _page("Sign out", '<p class="msg error">Invalid form (CSRF token).</p>', session, 403)
        response = RedirectResponse("/ui/alerts", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    return router
