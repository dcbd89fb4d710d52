"""Subscribe to every tag below ``Objects/Plant`` and print each value change for N seconds.

Against the local stack (``./task up``), as the read-only operator, whose password ``task up``
generated into ``.data/secrets.env``::

    export PLANTMON_OPCUA_PASSWORD="$(sed -n 's/^OPC_SERVER_OPERATOR_PASSWORD=//p' .data/secrets.env)"
    .venv/bin/python examples/subscribe_plant.py --seconds 10

Options and their environment variables: ``--url`` (``PLANTMON_OPCUA_URL``, default the local
endpoint), ``--user`` (``PLANTMON_OPCUA_USER``, default ``operator``), ``--password``
(``PLANTMON_OPCUA_PASSWORD``, required), ``--cert-dir`` (where this client's certificate is made
once). The connection is Basic256Sha256 SignAndEncrypt through :func:`plantmon_common.opcua.connect`;
the subscription is plain asyncua.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from asyncua import ua
from plantmon_common.opcua import OpcUaClientSettings, OpcUaError, browse_plant, connect, datavalue_to_sample
from pydantic import SecretStr

DEFAULT_URL = "opc.tcp://127.0.0.1:4840/freeopcua/server/"
DEFAULT_CERT_DIR = Path(__file__).resolve().parents[1] / ".data" / "pki" / "examples"


class PrintChanges:
    """asyncua calls this for every data change of the subscription."""

    def __init__(self, paths: dict[ua.NodeId, str]) -> None:
        self.paths = paths
        self.changes = 0
        self.tags: set[str] = set()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        sample = datavalue_to_sample(self.paths[node.nodeid], data.monitored_item.Value)
        status = ua.StatusCode(sample.status).name
        print(f"{sample.source_time.isoformat()} {sample.path} {sample.value} {status}", flush=True)
        self.changes += 1
        self.tags.add(sample.path)


async def main(args: argparse.Namespace) -> int:
    settings = OpcUaClientSettings(
        url=args.url,
        username=args.user,
        password=SecretStr(args.password),
        cert_dir=args.cert_dir,
        application_uri="urn:plantmon:examples",
        hostname="localhost",
    )
    async with connect(settings) as client:
        tags = await browse_plant(client, with_metadata=False)
        handler = PrintChanges({tag.node_id: tag.path for tag in tags})
        subscription = await client.create_subscription(250, handler)
        await subscription.subscribe_data_change([client.get_node(tag.node_id) for tag in tags])
        await asyncio.sleep(args.seconds)  # the time to watch, not a synchronisation
        await subscription.delete()
    print(f"{handler.changes} value changes of {len(handler.tags)} of {len(tags)} tags in {args.seconds:g} s")
    return 0 if handler.changes else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("PLANTMON_OPCUA_URL", DEFAULT_URL))
    parser.add_argument("--user", default=os.environ.get("PLANTMON_OPCUA_USER", "operator"))
    parser.add_argument("--password", default=os.environ.get("PLANTMON_OPCUA_PASSWORD"))
    parser.add_argument("--cert-dir", type=Path, default=Path(os.environ.get("PLANTMON_CERT_DIR", DEFAULT_CERT_DIR)))
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to print changes")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("no password: pass --password or set PLANTMON_OPCUA_PASSWORD")
    return args


def run(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(main(parse(argv)))
    except OpcUaError as exc:  # unreachable, refused (a wrong password), or no Plant: the reason, no traceback
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
