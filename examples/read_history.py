"""Read one tag's history (HistoryRead, raw values) over the last M minutes and print the rows.

Against the local stack (``./task up``), as the read-only operator, whose password ``task up``
generated into ``.data/secrets.env``::

    export PLANTMON_OPCUA_PASSWORD="$(sed -n 's/^OPC_SERVER_OPERATOR_PASSWORD=//p' .data/secrets.env)"
    .venv/bin/python examples/read_history.py --tag Plant/Temperature/Upper --minutes 5

The OPC UA server answers from its in-memory window (15 minutes by default) and older ranges from
the database. The connection options are :mod:`plant_connection`'s. It finds the tag by browsing
``Objects/Plant``; the history is asyncua's ``Node.read_raw_history``. Exit status 0 when rows came
back, 1 when none did (or the tag does not exist).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

import plant_connection
from asyncua import ua
from plantmon_common.opcua import browse_plant, connect, datavalue_to_sample
from plantmon_common.tags import TagPathError, validate_path


async def main(args: argparse.Namespace) -> int:
    end = datetime.now(UTC)
    start = end - timedelta(minutes=args.minutes)
    async with connect(plant_connection.settings(args)) as client:
        # Found by browsing Objects/Plant, so whatever namespace index the server gave the plant.
        found = {tag.path: tag.node_id for tag in await browse_plant(client, with_metadata=False)}
        if args.tag not in found:
            print(
                f"no tag {args.tag} below Objects/Plant; there are {len(found)}, e.g. {sorted(found)[:3]}",
                file=sys.stderr,
            )
            return 1
        values = await client.get_node(found[args.tag]).read_raw_history(start, end)
    for dv in values:
        sample = datavalue_to_sample(args.tag, dv)
        print(f"{sample.source_time.isoformat()} {sample.value} {ua.StatusCode(sample.status).name}")
    print(f"{len(values)} rows of {args.tag} from {start.isoformat()} to {end.isoformat()}")
    return 0 if values else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = plant_connection.options(__doc__)
    parser.add_argument("--tag", default="Plant/Temperature/Upper", help="the tag's path")
    parser.add_argument("--minutes", type=float, default=5.0, help="how far back to read")
    args = plant_connection.parse(parser, argv)
    try:
        validate_path(args.tag)
    except TagPathError as exc:
        parser.error(str(exc))
    return args


if __name__ == "__main__":
    sys.exit(plant_connection.run(main, parse()))
