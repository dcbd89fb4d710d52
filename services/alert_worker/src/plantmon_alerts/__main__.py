"""``plantmon-alerts``: run the alert worker, or only check a rules file (``--check-rules``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from plantmon_common.logging import setup_logging
from plantmon_common.opcua import AsyncuaIncompatibleError
from plantmon_common.service import run_service
from plantmon_common.settings import PlaceholderSecretError
from pydantic import ValidationError

from plantmon_alerts.rules import RulesError, load_rules
from plantmon_alerts.settings import AlertSettings
from plantmon_alerts.worker import run

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a configuration error)."""
    parser = argparse.ArgumentParser(prog="plantmon-alerts", description="plantmon alert worker")
    parser.add_argument("--check-rules", type=Path, metavar="FILE", help="validate a rules file and exit")
    args = parser.parse_args(argv)
    if args.check_rules is not None:
        try:
            rules = load_rules(args.check_rules)
        except RulesError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{args.check_rules}: {len(rules)} rules, valid")
        return 0
    try:
        settings = AlertSettings()
    except (ValidationError, PlaceholderSecretError) as exc:
        print(f"plantmon-alerts: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    setup_logging("alert_worker", settings.log_level, settings.log_format)
    # The pool warns at every reconnection attempt; the worker logs the outage once itself.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    async def service(stop: asyncio.Event) -> None:
        await run(settings, stop)

    try:
        run_service(service)
    except RulesError as exc:
        logger.error("rules file refused", extra={"problems": exc.problems, "rules_file": exc.source})
        return 2
    except AsyncuaIncompatibleError as exc:
        logger.error("refusing to start: the installed asyncua is incompatible", extra={"error": str(exc)})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
