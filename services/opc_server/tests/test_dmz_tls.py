"""Optional TLS between the OPC UA server and the nginx DMZ: a private CA, nginx ``listen ... ssl``."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from plantmon_common.opcua import connect
from plantmon_dev.waiting import eventually
from plantmon_opc_server.server import running_server

from services.opc_server.tests.support import (
    FakeSensorApi,
    client_settings,
    plant_server,
    server_settings,
)
from tests.plugins.nginx import DmzFactory


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """``(ca.pem, dmz.pem, dmz.key)``: a CA and the DMZ's certificate for 127.0.0.1 signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plantmon test DMZ CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "dmz.pem", folder / "dmz.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


async def test_server_polls_through_a_tls_dmz_with_the_configured_ca(
    sensor_api: FakeSensorApi, dmz_factory: DmzFactory, tmp_path: Path
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    dmz = dmz_factory(sensor_api.port, tls_cert=cert, tls_key=key)
    assert dmz.url.startswith("https://")
    sensor_api.set("Plant/Temperature/Upper", value=81.5)
    settings = server_settings(tmp_path, dmz.url, sensors_ca_file=ca)
    async with plant_server(settings), connect(client_settings(settings, tmp_path)) as client:
        ns = await client.get_namespace_index("urn:plantmon:plant")
        dv = await client.get_node(ua.NodeId("Plant/Temperature/Upper", ns)).read_data_value()
        assert dv.StatusCode.is_good() and dv.Value.Value == 81.5


async def test_a_dmz_certificate_the_server_does_not_trust_is_bad_communication_error(
    sensor_api: FakeSensorApi, dmz_factory: DmzFactory, tmp_path: Path
) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    dmz = dmz_factory(sensor_api.port, tls_cert=cert, tls_key=key)
    # The server trusts another CA: every poll fails certificate verification.
    settings = server_settings(tmp_path, dmz.url, sensors_ca_file=other_ca)
    stop = asyncio.Event()
    async with running_server(settings, stop) as plant:
        await eventually(
            lambda: plant.health.consecutive_failures >= 2, timeout=20, what="two failed polls of the sensor API"
        )
        assert "CERTIFICATE_VERIFY_FAILED" in (plant.health.last_error or "")
        assert plant.space is not None and plant.space.variables == {}
        assert not plant.first_good.is_set()
