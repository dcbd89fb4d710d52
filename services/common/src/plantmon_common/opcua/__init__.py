"""The OPC UA side every client service shares: certificates, the secure connection, and the
browse-and-subscribe loop over ``Objects/Plant`` used by the scraper and the alert worker.

Layers, one module each:

- :mod:`~plantmon_common.opcua.settings`: :class:`OpcUaClientSettings` (what to connect to and as whom);
- :mod:`~plantmon_common.opcua.certificates`: :func:`ensure_certificate` (the self-signed application
  certificate, also the server's);
- :mod:`~plantmon_common.opcua.connect`: :func:`connect` (a secure, authenticated asyncua ``Client``)
  and :class:`OpcUaError`;
- :mod:`~plantmon_common.opcua.browse`: :func:`browse_plant` (the tag list);
- :mod:`~plantmon_common.opcua.publish`: :func:`publish_loop` (extra Publish requests in flight) and the
  fast Publish decoder's installation (the decoder itself is :mod:`plantmon_common.opcua_fast`);
- :mod:`~plantmon_common.opcua.subscriber`: :class:`PlantSubscriber` (subscribe every tag with the
  StatusValueTimestamp trigger, hand each notification on as a :class:`Sample`, reconnect with
  backoff, pick up new tags);
- :mod:`~plantmon_common.opcua.asyncua_private`: every use of a private asyncua API, and the
  start-up check that they still exist (:class:`AsyncuaIncompatibleError`).

Everything is re-exported here, so ``from plantmon_common.opcua import X`` keeps working.
"""

from plantmon_common.opcua.asyncua_private import AsyncuaIncompatibleError, check_asyncua
from plantmon_common.opcua.browse import DiscoveredTag, browse_plant, find_plant
from plantmon_common.opcua.certificates import ensure_certificate
from plantmon_common.opcua.connect import OpcUaError, connect
from plantmon_common.opcua.publish import publish_loop
from plantmon_common.opcua.settings import OpcUaClientSettings, SecurityMode
from plantmon_common.opcua.subscriber import (
    BatchSink,
    ConnectedHook,
    PlantSubscriber,
    SampleSink,
    datavalue_to_sample,
)
from plantmon_common.sample import Sample

__all__ = [
    "AsyncuaIncompatibleError",
    "BatchSink",
    "ConnectedHook",
    "DiscoveredTag",
    "OpcUaClientSettings",
    "OpcUaError",
    "PlantSubscriber",
    "Sample",
    "SampleSink",
    "SecurityMode",
    "browse_plant",
    "check_asyncua",
    "connect",
    "datavalue_to_sample",
    "ensure_certificate",
    "find_plant",
    "publish_loop",
]
