"""Fixtures of the scraper tests (helpers live in support.py)."""

from services.opc_scraper.tests.support import plant_server

__all__ = ["plant_server"]
