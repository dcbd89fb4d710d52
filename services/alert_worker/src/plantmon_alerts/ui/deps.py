"""What the operator page's routes depend on: the page's configuration and the signed-in session.

:func:`plantmon_alerts.ui.operator_router` puts one :class:`OperatorPage` in front of the
routes (a router dependency that runs before theirs); a route asks for it as :data:`PageDep`
and for the operator's session, if any, as :data:`SessionDep`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import SecretStr

from plantmon_alerts.store import AlertStore
from plantmon_alerts.ui.session import SESSION_COOKIE, Session, SessionSigner


@dataclass(frozen=True)
class OperatorPage:
    """The store, the API token (signing in is off without one) and the acknowledgement hook."""

    store: AlertStore
    api_token: SecretStr | None
    signer: SessionSigner | None
    on_ack: Callable[[dict[str, Any]], None] | None = None

    def bind(self, request: Request) -> None:
        """The router dependency that hands this page to the request's route."""
        request.state.operator_page = self


def operator_page(request: Request) -> OperatorPage:
    page: OperatorPage = request.state.operator_page
    return page


PageDep = Annotated[OperatorPage, Depends(operator_page)]


def current_session(request: Request, page: PageDep) -> Session | None:
    """The operator signed in with this request's cookie, or None (no cookie, tampered, expired)."""
    return page.signer.load(request.cookies.get(SESSION_COOKIE)) if page.signer else None


SessionDep = Annotated[Session | None, Depends(current_session)]
