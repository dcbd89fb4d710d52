"""Fixtures of the OPC UA server tests (helpers live in support.py)."""

from services.opc_server.tests.support import sensor_api

__all__ = ["sensor_api"]
