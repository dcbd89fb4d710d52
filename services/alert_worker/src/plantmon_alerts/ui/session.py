"""The operator page's sign-in session: an itsdangerous-signed cookie, and the cookies' flags.

The session cookie is ``URLSafeTimedSerializer(ALERTS_API_TOKEN, salt=SESSION_SALT)`` over
``{"op": operator, "csrf": token}`` with HMAC-SHA256: the signing key comes from the API token
(rotating the token signs everybody out), the signed timestamp bounds its age to the session
lifetime on the server (whatever the browser keeps), and a changed byte or another key makes it
no session at all. Both cookies are HttpOnly, limited to ``/ui`` and Secure when the request came
over HTTPS; the session is SameSite=Lax (a link from Grafana must arrive signed in; forms that
change state carry the session's CSRF token instead), the sign-in form's own double-submit
token SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr

SESSION_COOKIE = "plantmon_session"
LOGIN_COOKIE = "plantmon_login"
SESSION_SALT = "plantmon-alerts-session"
LOGIN_FORM_MAX_AGE_S = 900
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class Session:
    """A signed-in operator and the CSRF token that each of their forms carries."""

    operator: str
    csrf: str


def session_serializer(token: SecretStr, signer: type[TimestampSigner] = TimestampSigner) -> URLSafeTimedSerializer:
    """The serializer of the session cookie (``signer`` is there for tests that date a cookie back)."""
    return URLSafeTimedSerializer(
        token.get_secret_value(),
        salt=SESSION_SALT,
        signer=signer,
        signer_kwargs={"digest_method": hashlib.sha256},
    )


class SessionSigner:
    """Signs and checks session cookies (see the module docstring)."""

    def __init__(self, token: SecretStr, max_age_s: int) -> None:
        self.serializer = session_serializer(token)
        self.max_age_s = max_age_s

    def new(self, operator: str) -> Session:
        return Session(operator, secrets.token_urlsafe(24))

    def dump(self, session: Session) -> str:
        return str(self.serializer.dumps({"op": session.operator, "csrf": session.csrf}))

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``; None when it is missing, tampered with, malformed or expired."""
        if not cookie:
            return None
        try:
            data: Any = self.serializer.loads(cookie, max_age=self.max_age_s)
        except BadData:  # BadSignature, SignatureExpired, BadPayload ...
            return None
        if not isinstance(data, dict) or not isinstance(data.get("op"), str) or not isinstance(data.get("csrf"), str):
            return None
        return Session(data["op"], data["csrf"])


def same_token(given: str, expected: str) -> bool:
    """A constant-time comparison of a form's token with the expected one."""
    return secrets.compare_digest(given.encode(), expected.encode())


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def set_session_cookie(response: Response, request: Request, signer: SessionSigner, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        signer.dump(session),
        max_age=signer.max_age_s,
        httponly=True,
        # Lax, not Strict: a link from Grafana (another site) must arrive signed in. Forms that
        # change state are protected by their CSRF token, not by the cookie policy.
        samesite="lax",
        path=COOKIE_PATH,
        secure=is_https(request),
    )


def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_FORM_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=is_https(request),
    )
