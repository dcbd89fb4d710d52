"""The plant's OPC UA server.

Layers: :mod:`.settings` (what to serve, as whom) -> :mod:`.poller` (fetch every tag through the
nginx DMZ, decide each value's StatusCode) -> :mod:`.address_space` (``Objects/Plant/...`` as
AnalogItemType variables, written with source timestamps) -> :mod:`.server` (asyncua server,
security, users, lifecycle, ``/health`` and ``/metrics``). Nothing here touches hardware.
"""
