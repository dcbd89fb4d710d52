"""``plantmon-sensors``: serve the sensor API until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from plantmon_common.logging import setup_logging
from plantmon_common.service import run_service, serve_http

from plantmon_sensors.api import create_app
from plantmon_sensors.settings import SensorSettings

logger = logging.getLogger(__name__)


def main() -> None:
    """Read the settings, set up logging, serve on ``SENSORS_HTTP_HOST:SENSORS_HTTP_PORT``."""
    settings = SensorSettings()
    setup_logging("sensors", settings.log_level, settings.log_format)
    app = create_app(settings)

    async def serve(stop: asyncio.Event) -> None:
        async with serve_http(app, settings.http_host, settings.http_port):
            logger.info("sensor service running", extra={"mode": settings.mode, "port": settings.http_port})
            await stop.wait()
        logger.info("sensor service stopped")

    run_service(serve)


if __name__ == "__main__":
    main()
