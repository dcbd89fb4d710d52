"""Durable delivery: the local state journal (outbox, open alerts) and Event Hubs publishing.

:mod:`~plantmon_alerts.delivery.journal` is the SQLite state file in ``ALERTS_STATE_DIR``,
:mod:`~plantmon_alerts.delivery.events` turns transitions into alert events, and
:mod:`~plantmon_alerts.delivery.eventhub` sends them with azure-eventhub's async producer.
"""

from plantmon_alerts.delivery.eventhub import DeliveryMetrics, EventHubOptions, EventHubPublisher, producer_kwargs
from plantmon_alerts.delivery.events import acknowledged_event, event_factory, transition_id
from plantmon_alerts.delivery.journal import NewEvent, PendingEvent, StateJournal

__all__ = [
    "DeliveryMetrics",
    "EventHubOptions",
    "EventHubPublisher",
    "NewEvent",
    "PendingEvent",
    "StateJournal",
    "acknowledged_event",
    "event_factory",
    "producer_kwargs",
    "transition_id",
]
