"""``Objects/Plant/...``: folders per path segment and one AnalogItemType variable per tag.

NodeIds are the tag paths as strings in the plant namespace (``ns=2;s=Plant/Temperature/Upper``),
so they are stable across restarts and new tags never renumber old ones.
"""

from __future__ import annotations

import logging

from asyncua import Node, Server, ua
from plantmon_common.tags import UNITS, TagMeta

from plantmon_opc_server.history import PlantHistory

logger = logging.getLogger(__name__)

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
READ_AND_HISTORY = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask


def eu_information(unit_symbol: str) -> ua.EUInformation:
    """EUInformation with the UNECE code of the unit (dimensionless when unknown)."""
    unit = UNITS.get(unit_symbol) or UNITS[""]
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=unit.unit_id,
        DisplayName=ua.LocalizedText(unit_symbol or unit.symbol),
        Description=ua.LocalizedText(unit.description),
    )


class PlantAddressSpace:
    """Creates and finds the Plant nodes; knows nothing about where values come from."""

    def __init__(self, server: Server, ns: int, sampling_interval_ms: float, history: PlantHistory) -> None:
        self.server = server
        self.ns = ns
        self.sampling_interval_ms = sampling_interval_ms
        self.history = history
        self.folders: dict[str, Node] = {}
        self.variables: dict[str, ua.NodeId] = {}

    def node_id(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)

    async def root(self) -> Node:
        """``Objects/Plant``, present even before the first tag arrives."""
        return await self._folder("Plant")

    async def _folder(self, path: str) -> Node:
        if path in self.folders:
            return self.folders[path]
        parent_path, _, name = path.rpartition("/")
        parent = await self._folder(parent_path) if parent_path else self.server.nodes.objects
        folder = await parent.add_folder(self.node_id(path), ua.QualifiedName(name, self.ns))
        self.folders[path] = folder
        return folder

    async def ensure(self, tag: TagMeta) -> ua.NodeId:
        """The variable of ``tag``, created (with its properties) the first time."""
        if tag.path in self.variables:
            return self.variables[tag.path]
        parent_path, _, name = tag.path.rpartition("/")
        parent = await self._folder(parent_path)
        nodeid = self.node_id(tag.path)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(tag.description or tag.path)
        attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.Value = ua.Variant()
        attrs.AccessLevel = READ_AND_HISTORY
        attrs.UserAccessLevel = READ_AND_HISTORY
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = True
        attrs.MinimumSamplingInterval = self.sampling_interval_ms
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = ua.QualifiedName(name, self.ns)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent.nodeid
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.AnalogItemType)
        item.NodeAttributes = attrs
        result = (await self.server.iserver.isession.add_nodes([item]))[0]
        result.StatusCode.check()
        variable = self.server.get_node(nodeid)
        eu_range = await variable.add_property(
            ua.NodeId(f"{tag.path}/EURange", self.ns),
            ua.QualifiedName("EURange", 0),
            ua.Range(Low=tag.eu_low, High=tag.eu_high),
            datatype=ua.NodeId(ua.ObjectIds.Range),
        )
        units = await variable.add_property(
            ua.NodeId(f"{tag.path}/EngineeringUnits", self.ns),
            ua.QualifiedName("EngineeringUnits", 0),
            eu_information(tag.unit),
            datatype=ua.NodeId(ua.ObjectIds.EUInformation),
        )
        for prop in (eu_range, units):
            await prop.write_attribute(
                ua.AttributeIds.AccessLevel,
                ua.DataValue(ua.Variant(ua.AccessLevel.CurrentRead.mask, ua.VariantType.Byte)),
            )
        # Historizing: the poll loop records every published value itself (see history.py).
        await self.history.new_historized_node(nodeid, self.history.window)
        self.variables[tag.path] = nodeid
        logger.debug("tag node created", extra={"path": tag.path})
        return nodeid


class StatusObject:
    """``Objects/PlantMonitor/Polling``: the health of the sensor polling, for OPC UA clients."""

    def __init__(self, server: Server, ns: int) -> None:
        self.server = server
        self.ns = ns
        self.nodes: dict[str, Node] = {}

    async def create(self) -> None:
        root = await self.server.nodes.objects.add_object(ua.NodeId("PlantMonitor", self.ns), "PlantMonitor")
        polling = await root.add_object(ua.NodeId("PlantMonitor/Polling", self.ns), "Polling")
        for name, value, vtype in (
            ("LastSuccessfulPoll", None, ua.VariantType.DateTime),
            ("ConsecutiveFailures", 0, ua.VariantType.UInt32),
            ("SensorsReachable", False, ua.VariantType.Boolean),
            ("LastError", "", ua.VariantType.String),
        ):
            self.nodes[name] = await polling.add_variable(
                ua.NodeId(f"PlantMonitor/Polling/{name}", self.ns), name, ua.Variant(value, vtype)
            )

    async def update(self, **values: object) -> None:
        types = {
            "LastSuccessfulPoll": ua.VariantType.DateTime,
            "ConsecutiveFailures": ua.VariantType.UInt32,
            "SensorsReachable": ua.VariantType.Boolean,
            "LastError": ua.VariantType.String,
        }
        for name, value in values.items():
            await self.server.write_attribute_value(
                self.nodes[name].nodeid, ua.DataValue(ua.Variant(value, types[name]))
            )
