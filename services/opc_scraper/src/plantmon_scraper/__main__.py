"""``plantmon-scraper``: read the settings, set up logging, run until SIGTERM."""

from __future__ import annotations

import logging
import sys

from plantmon_common.lifecycle import run_service
from plantmon_common.logging import setup_logging
from plantmon_common.opcua import AsyncuaIncompatibleError
from plantmon_common.settings import PlaceholderSecretError, require_secret
from pydantic import ValidationError

from plantmon_scraper.service import run
from plantmon_scraper.settings import ScraperSettings

logger = logging.getLogger(__name__)


def main() -> None:
    """Entry point of the console script."""
    try:
        settings = ScraperSettings()
    except ValidationError as exc:
        setup_logging("scraper")
        logger.error("invalid settings", extra={"error": str(exc)})
        sys.exit(2)
    setup_logging("scraper", settings.log_level, settings.log_format)
    # The pool logs every failed connect; the store logs the database state once per change.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        require_secret("SCRAPER_OPCUA__PASSWORD", settings.opcua.password)
        require_secret("PGPASSWORD", settings.database.password)
    except PlaceholderSecretError as exc:
        logger.error("refusing a placeholder secret", extra={"error": str(exc)})
        sys.exit(2)
    try:
        run_service(lambda stop: run(settings, stop))
    except AsyncuaIncompatibleError as exc:
        logger.error("refusing to start: the installed asyncua is incompatible", extra={"error": str(exc)})
        sys.exit(2)


if __name__ == "__main__":
    main()
