"""Subscribe to every tag below ``Objects/Plant`` and print each value change for N seconds.

Against the local stack (``./task up``), as the read-only operator, whose password ``task up``
generated into ``.data/secrets.env``::

    export PLANTMON_OPCUA_PASSWORD="$(sed -n 's/^OPC_SERVER_OPERATOR_PASSWORD=//p' .data/secrets.env)"
    .venv/bin/python examples/subscribe_plant.py --seconds 10

The connection options are :mod:`plant_connection`'s; the subscription is plain asyncua. Exit
status 0 when values changed, 1 when none did or the server refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import plant_connection
from asyncua import ua
from plantmon_common.opcua import browse_plant, connect, datavalue_to_sample


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
    async with connect(plant_connection.settings(args)) as client:
        tags = await browse_plant(client, with_metadata=False)
        handler = PrintChanges({tag.node_id: tag.path for tag in tags})
        subscription = await client.create_subscription(250, handler)
        await subscription.subscribe_data_change([client.get_node(tag.node_id) for tag in tags])
        await asyncio.sleep(args.seconds)  # the time to watch, not a synchronisation
        await subscription.delete()
    print(f"{handler.changes} value changes of {len(handler.tags)} of {len(tags)} tags in {args.seconds:g} s")
    return 0 if handler.changes else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = plant_connection.options(__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to print changes")
    args = plant_connection.parse(parser, argv)
    return args


if __name__ == "__main__":
    sys.exit(plant_connection.run(main, parse()))
