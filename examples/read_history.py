"""Read one tag's history (HistoryRead, raw values) over the last M minutes and print the rows.

Against the local stack (``./task up``), as the read-only operator, whose password ``task up``
generated into ``.data/secrets.env``::

    export PLANTMON_OPCUA_PASSWORD="$(sed -n 's/^OPC_SERVER_OPERATOR_PASSWORD=//p' .data/secrets.env)"
    .venv/bin/python examples/read_history.py --tag Plant/Temperature/Upper --minutes 5

The OPC UA server answers from its in-memory window (15 minutes by default) and older ranges from
the database. Options and their environment variables: ``--url`` (``PLANTMON_OPCUA_URL``), ``--user``
(``PLANTMON_OPCUA_USER``, default ``operator``), ``--password`` (``PLANTMON_OPCUA_PASSWORD``,
required), ``--cert-dir``. Connects through :func:`plantmon_common.opcua.connect`, finds the tag by
browsing ``Objects/Plant``; the history is asyncua's ``Node.read_raw_history``. Exit status 0 when
rows came back, 1 when none did (or the tag does not exist).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua import ua
from plantmon_common.opcua import OpcUaClientSettings, OpcUaError, browse_plant, connect, datavalue_to_sample
from plantmon_common.tags import TagPathError, validate_path
from pydantic import SecretStr

DEFAULT_URL = "opc.tcp://127.0.0.1:4840/freeopcua/server/"
DEFAULT_CERT_DIR = Path(__file__).resolve().parents[1] / ".data" / "pki" / "examples"


async def main(args: argparse.Namespace) -> int:
    settings = OpcUaClientSettings(
        url=args.url,
        username=args.user,
        password=SecretStr(args.password),
        cert_dir=args.cert_dir,
        application_uri="urn:plantmon:examples",
        hostname="localhost",
    )
    end = datetime.now(UTC)
    start = end - timedelta(minutes=args.minutes)
    async with connect(settings) as client:
        # Found by browsing Objects/Plant, so whatever namespace index the server gave the plant.
        found = {tag.path: tag.node_id for tag in await browse_plant(client, with_metadata=False)}
        if args.tag not in found:
            print(f"no tag {args.tag} below Objects/Plant; there are {len(found)}, e.g. {sorted(found)[:3]}")
            return 1
        values = await client.get_node(found[args.tag]).read_raw_history(start, end)
    for dv in values:
        sample = datavalue_to_sample(args.tag, dv)
        print(f"{sample.source_time.isoformat()} {sample.value} {ua.StatusCode(sample.status).name}")
    print(f"{len(values)} rows of {args.tag} from {start.isoformat()} to {end.isoformat()}")
    return 0 if values else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("PLANTMON_OPCUA_URL", DEFAULT_URL))
    parser.add_argument("--user", default=os.environ.get("PLANTMON_OPCUA_USER", "operator"))
    parser.add_argument("--password", default=os.environ.get("PLANTMON_OPCUA_PASSWORD"))
    parser.add_argument("--cert-dir", type=Path, default=Path(os.environ.get("PLANTMON_CERT_DIR", DEFAULT_CERT_DIR)))
    parser.add_argument("--tag", default="Plant/Temperature/Upper", help="the tag's path")
    parser.add_argument("--minutes", type=float, default=5.0, help="how far back to read")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("no password: pass --password or set PLANTMON_OPCUA_PASSWORD")
    try:
        validate_path(args.tag)
    except TagPathError as exc:
        parser.error(str(exc))
    return args


def run(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(main(parse(argv)))
    except OpcUaError as exc:  # unreachable, refused (a wrong password), or no Plant: the reason, no traceback
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
