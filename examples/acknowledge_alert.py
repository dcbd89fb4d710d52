"""Acknowledge an active alert through the alert worker's API, the way an operator's tool would.

Against the local stack (``./task up``), with the API token ``task up`` generated into
``.data/secrets.env``::

    export PLANTMON_ALERTS_TOKEN="$(sed -n 's/^ALERTS_API_TOKEN=//p' .data/secrets.env)"
    .venv/bin/python examples/acknowledge_alert.py --tag 'Plant/Temperature/*' --by "$USER"

Without ``--id`` it acknowledges the newest active alert whose tag matches ``--tag`` (a glob with
``*`` and ``?``; every tag by default). Options and their environment variables: ``--url``
(``PLANTMON_ALERTS_URL``, default the local alert worker), ``--token`` (``PLANTMON_ALERTS_TOKEN``,
required), ``--by`` (who acknowledges), ``--comment``. It lists with ``GET /api/v1/alerts`` and
acknowledges with ``POST /api/v1/alerts/{id}/ack`` (both described at the worker's ``/docs``).
Exit status 0 when an alert was acknowledged; 1 with the server's reason when it refused (wrong
token, already acknowledged, cleared, no such alert), when it cannot be reached, or when no alert
is active.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid

import httpx

DEFAULT_URL = "http://127.0.0.1:9103"


def reason(response: httpx.Response) -> str:
    """The ``detail`` of an error answer, or its text."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"{response.status_code}: {detail if detail is not None else response.text}"


def main(args: argparse.Namespace) -> int:
    try:
        return acknowledge(args)
    except httpx.TransportError as exc:  # not running, wrong URL: the reason, no traceback
        print(f"cannot reach the alert worker at {args.url}: {exc!r}", file=sys.stderr)
        return 1


def acknowledge(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=10) as client:
        alert_id = args.id
        if alert_id is None:
            listed = client.get("/api/v1/alerts", params={"state": "active", "tag": args.tag, "limit": 1})
            if listed.status_code != 200:
                print(f"listing refused: {reason(listed)}", file=sys.stderr)
                return 1
            alerts = listed.json()["alerts"]
            if not alerts:
                print(f"no active alert for {args.tag}")
                return 1
            alert_id = uuid.UUID(alerts[0]["id"])
        body = {"by": args.by, "comment": args.comment}
        answer = client.post(f"/api/v1/alerts/{alert_id}/ack", json=body)
        if answer.status_code != 200:
            print(f"acknowledge refused: {reason(answer)}", file=sys.stderr)
            return 1
        alert = answer.json()
    print(
        f"acknowledged {alert['id']}: {alert['rule']} on {alert['tag_path']} (severity {alert['severity']}), "
        f"raised {alert['raised_at']}, by {alert['acknowledged_by']}"
    )
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("PLANTMON_ALERTS_URL", DEFAULT_URL))
    parser.add_argument("--token", default=os.environ.get("PLANTMON_ALERTS_TOKEN"))
    parser.add_argument("--id", type=uuid.UUID, help="the alert to acknowledge (default: the newest active one)")
    parser.add_argument("--tag", default="*", help="tag path glob for the newest active alert (default: any)")
    parser.add_argument("--by", default=getpass.getuser(), help="who acknowledges (default: this user)")
    parser.add_argument("--comment", default=None)
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: pass --token or set PLANTMON_ALERTS_TOKEN")
    return args


if __name__ == "__main__":
    sys.exit(main(parse()))
