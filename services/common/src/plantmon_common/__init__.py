"""Shared building blocks of the plantmon services.

Layers, from the bottom up:

- :mod:`plantmon_common.tags`: the tag model (one name for one thing, see ARCHITECTURE.md);
- :mod:`plantmon_common.settings`: the pydantic-settings base every service extends;
- :mod:`plantmon_common.logging`: structured (JSON) log lines;
- :mod:`plantmon_common.metrics`: the Prometheus registry and the ``/metrics`` app;
- :mod:`plantmon_common.service`: the HTTP side-car (``/health``, ``/metrics``) and SIGTERM handling;
- :mod:`plantmon_common.opcua`: the OPC UA browse-and-subscribe client used by the
  scraper and the alert worker, and the certificate helpers the server uses too (a package:
  settings, certificates, connect, browse, publish, subscriber, and ``asyncua_private``, the
  only module that touches asyncua's internals);
- :mod:`plantmon_common.opcua_fast`: the measured Publish decoder the subscriber installs.
"""

__version__ = "0.1.0"
