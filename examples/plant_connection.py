"""What the OPC UA examples share: the connection options with their environment variables, the
client settings they make, and running a script so that a failure is one line with its reason.

``--url`` (``PLANTMON_OPCUA_URL``, default the local endpoint), ``--user`` (``PLANTMON_OPCUA_USER``,
default ``operator``), ``--password`` (``PLANTMON_OPCUA_PASSWORD``, required), ``--cert-dir``
(``PLANTMON_CERT_DIR``: where this client's certificate is made once). The connection is
Basic256Sha256 SignAndEncrypt through :func:`plantmon_common.opcua.connect`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from plantmon_common.opcua import OpcUaClientSettings, OpcUaError
from pydantic import SecretStr

DEFAULT_URL = "opc.tcp://127.0.0.1:4840/freeopcua/server/"
DEFAULT_CERT_DIR = Path(__file__).resolve().parents[1] / ".data" / "pki" / "examples"


def options(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the connection options; ``doc``'s first paragraph is its description."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--url", default=os.environ.get("PLANTMON_OPCUA_URL", DEFAULT_URL))
    parser.add_argument("--user", default=os.environ.get("PLANTMON_OPCUA_USER", "operator"))
    parser.add_argument("--password", default=os.environ.get("PLANTMON_OPCUA_PASSWORD"))
    parser.add_argument("--cert-dir", type=Path, default=Path(os.environ.get("PLANTMON_CERT_DIR", DEFAULT_CERT_DIR)))
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("no password: pass --password or set PLANTMON_OPCUA_PASSWORD")
    return args


def settings(args: argparse.Namespace) -> OpcUaClientSettings:
    return OpcUaClientSettings(
        url=args.url,
        username=args.user,
        password=SecretStr(args.password),
        cert_dir=args.cert_dir,
        application_uri="urn:plantmon:examples",
        hostname="localhost",
    )


def run(main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    """``main(args)``'s exit status; 1 with the reason when the server is unreachable, refuses the
    session (a wrong password) or has no Plant."""
    try:
        return asyncio.run(main(args))
    except OpcUaError as exc:
        print(exc, file=sys.stderr)
        return 1
