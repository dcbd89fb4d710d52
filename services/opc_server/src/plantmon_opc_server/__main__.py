"""``plantmon-opc-server``: run the OPC UA server until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from plantmon_common.lifecycle import run_service
from plantmon_common.logging import setup_logging
from plantmon_common.opcua import AsyncuaIncompatibleError
from pydantic import ValidationError

from plantmon_opc_server.server import run
from plantmon_opc_server.settings import OpcServerSettings

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        settings = OpcServerSettings()
    except ValidationError as exc:
        setup_logging("opc_server")
        logger.error("invalid settings: %s", exc)
        sys.exit(2)
    setup_logging("opc_server", settings.log_level, settings.log_format)

    async def _main(stop: asyncio.Event) -> None:
        await run(settings, stop)

    try:
        run_service(_main)
    except AsyncuaIncompatibleError as exc:
        logger.error("refusing to start: the installed asyncua is incompatible", extra={"error": str(exc)})
        sys.exit(2)


if __name__ == "__main__":
    main()
