"""plantmon alert worker: rules evaluated on live OPC UA values, alert lifecycle in the database.

Modules: :mod:`~plantmon_alerts.rules` (the rules file and its rule kinds),
:mod:`~plantmon_alerts.engine` (pure evaluation: samples in, lifecycle transitions out),
:mod:`~plantmon_alerts.store` (PostgreSQL and the in-memory outbox), :mod:`~plantmon_alerts.api`
(HTTP API), :mod:`~plantmon_alerts.worker` (the process: subscription, engine, writer, HTTP).
"""

__version__ = "0.1.0"
