"""A secure, authenticated asyncua ``Client`` for :class:`OpcUaClientSettings`, and the error
raised when the server cannot be reached or refuses us."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from asyncua import Client, ua
from asyncua.crypto import security_policies

from plantmon_common.opcua.certificates import ensure_certificate
from plantmon_common.opcua.settings import OpcUaClientSettings

__all__ = ["OpcUaError", "connect"]


class OpcUaError(Exception):
    """The OPC UA server could not be reached, refused us, or has no Plant."""


@contextlib.asynccontextmanager
async def connect(settings: OpcUaClientSettings) -> AsyncIterator[Client]:
    """A connected, authenticated client (SignAndEncrypt by default), disconnected on exit."""
    client = Client(settings.url, timeout=settings.timeout_s, watchdog_intervall=settings.watchdog_interval_s)
    client.application_uri = settings.application_uri
    client.name = client.description = settings.application_uri
    if settings.security != "None":
        cert, key = await ensure_certificate(settings.cert_dir, settings.application_uri, settings.hostname)
        mode = getattr(ua.MessageSecurityMode, settings.security)
        try:
            await client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
        except (OSError, TimeoutError) as exc:
            raise OpcUaError(f"cannot reach {settings.url}: {exc}") from exc
        except ua.UaError as exc:
            raise OpcUaError(f"{settings.url} offers no Basic256Sha256 {settings.security} endpoint: {exc}") from exc
    if settings.username:
        client.set_user(settings.username)
    if settings.password:
        client.set_password(settings.password.get_secret_value())
    try:
        await client.connect()
    except (OSError, TimeoutError) as exc:
        raise OpcUaError(f"cannot reach {settings.url}: {exc}") from exc
    except ua.UaStatusCodeError as exc:
        raise OpcUaError(f"{settings.url} refused the session: {exc}") from exc
    except ua.UaError as exc:
        raise OpcUaError(f"{settings.url}: {exc}") from exc
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
