"""The self-signed application certificate of an OPC UA client (or of the server)."""

from __future__ import annotations

from pathlib import Path

from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = ["ensure_certificate"]


async def ensure_certificate(
    cert_dir: Path, application_uri: str, hostname: str, *, server: bool = False
) -> tuple[Path, Path]:
    """Create (once) and return ``(cert.der, key.pem)`` in ``cert_dir``; reused afterwards."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert, key = cert_dir / "cert.der", cert_dir / "key.pem"
    uses = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    await setup_self_signed_certificate(key, cert, application_uri, hostname, uses, {"organizationName": "plantmon"})
    key.chmod(0o600)
    return cert, key
