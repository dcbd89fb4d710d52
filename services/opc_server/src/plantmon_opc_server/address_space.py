"""``Objects/Plant/...``: folders per path segment and one AnalogItemType variable per tag.

NodeIds are the tag paths as strings in the plant namespace (``ns=2;s=Plant/Temperature/Upper``),
so they are stable across restarts and new tags never renumber old ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from asyncua import Node, Server, ua
from plantmon_common.tags import UNITS, TagMeta

from plantmon_opc_server.history import PlantHistory

logger = logging.getLogger(__name__)

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
READ_AND_HISTORY = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
DOUBLE = ua.NodeId(ua.ObjectIds.Double)
RANGE = ua.NodeId(ua.ObjectIds.Range)
EU_INFORMATION = ua.NodeId(ua.ObjectIds.EUInformation)
HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
ANALOG_ITEM_TYPE = ua.NodeId(ua.ObjectIds.AnalogItemType)
PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)
# Tags added per AddNodes call (three nodes each) before the event loop is given back.
NODE_BATCH = 25


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
        await self.ensure_many([tag])
        if tag.path not in self.variables:
            raise ua.UaError(f"the server refused the node of {tag.path} (see the log)")
        return self.variables[tag.path]

    async def ensure_many(self, tags: Sequence[TagMeta], batch_size: int = NODE_BATCH) -> list[str]:
        """Create the variables (with their properties) of the ``tags`` not there yet; return their paths.

        A tag whose node the server refuses (e.g. its NodeId is a folder's) is logged and left out.

        ``batch_size`` tags (three nodes each) are added per step with one AddNodes call, and the
        event loop is given back between steps, so that sessions are served while thousands of
        tags arrive at once.
        """
        new: dict[str, TagMeta] = {}
        for tag in tags:
            if tag.path not in self.variables:
                new.setdefault(tag.path, tag)
        pending = list(new.values())
        added: list[str] = []
        for start in range(0, len(pending), batch_size):
            if start:
                await asyncio.sleep(0)
            chunk = pending[start : start + batch_size]
            parents = [(await self._folder(tag.path.rpartition("/")[0])).nodeid for tag in chunk]
            for tag in self._add_variables(chunk, parents):
                # Historizing: the poll loop records every published value itself (see history.py).
                await self.history.new_historized_node(self.variables[tag.path], self.history.window)
                added.append(tag.path)
            logger.debug("tag nodes created", extra={"count": len(chunk), "first": chunk[0].path})
        return added

    def _variable_items(self, tag: TagMeta, parent: ua.NodeId) -> list[ua.AddNodesItem]:
        """The AnalogItemType variable of ``tag`` and its EURange and EngineeringUnits properties."""
        name = tag.path.rpartition("/")[2]
        nodeid = self.node_id(tag.path)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(tag.description or tag.path)
        attrs.DataType = DOUBLE
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.Value = ua.Variant()
        attrs.AccessLevel = READ_AND_HISTORY
        attrs.UserAccessLevel = READ_AND_HISTORY
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = True
        attrs.MinimumSamplingInterval = self.sampling_interval_ms
        variable = ua.AddNodesItem(
            RequestedNewNodeId=nodeid,
            BrowseName=ua.QualifiedName(name, self.ns),
            NodeClass=ua.NodeClass.Variable,
            ParentNodeId=parent,
            ReferenceTypeId=HAS_COMPONENT,
            TypeDefinition=ANALOG_ITEM_TYPE,
            NodeAttributes=attrs,
        )
        return [
            variable,
            self._property_item(
                nodeid, f"{tag.path}/EURange", "EURange", ua.Range(Low=tag.eu_low, High=tag.eu_high), RANGE
            ),
            self._property_item(
                nodeid, f"{tag.path}/EngineeringUnits", "EngineeringUnits", eu_information(tag.unit), EU_INFORMATION
            ),
        ]

    def _property_item(
        self, parent: ua.NodeId, path: str, name: str, value: object, datatype: ua.NodeId
    ) -> ua.AddNodesItem:
        """A read-only PropertyType variable, as ``Node.add_property`` makes it."""
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(name)
        attrs.DataType = datatype
        attrs.Value = ua.Variant(value)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.ArrayDimensions = None  # type: ignore[assignment]
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = False
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        return ua.AddNodesItem(
            RequestedNewNodeId=ua.NodeId(path, self.ns),
            BrowseName=ua.QualifiedName(name, 0),
            NodeClass=ua.NodeClass.Variable,
            ParentNodeId=parent,
            ReferenceTypeId=HAS_PROPERTY,
            TypeDefinition=PROPERTY_TYPE,
            NodeAttributes=attrs,
        )

    def _add_variables(self, chunk: Sequence[TagMeta], parents: Sequence[ua.NodeId]) -> list[TagMeta]:
        """One AddNodes call for ``chunk``; synchronous, so no other coroutine sees it half done.

        asyncua's AddNodes compares every new child with every reference its parent already has
        (a browse-name check and a duplicate-reference check): linear per node, so quadratic for a
        folder that receives thousands of tags (5,000 tags took over 100 s). The references of
        the parent folders to their children are set aside for the call and put back in front
        of the new ones afterwards, so that each node is only compared with its own batch. The
        checks that matter still hold: a NodeId that exists already is refused (checked here
        first, then by AddNodes with a dict lookup), and two tags cannot share a path, hence a
        browse name below one folder.
        """
        aspace = self.server.iserver.aspace
        accepted: list[TagMeta] = []
        items: list[ua.AddNodesItem] = []
        for tag, parent in zip(chunk, parents, strict=True):
            if self.node_id(tag.path) in aspace:
                logger.error("tag path already names another node", extra={"path": tag.path})
                continue
            accepted.append(tag)
            items.extend(self._variable_items(tag, parent))
        folders = {parent: aspace[parent] for parent in parents}
        kept: dict[ua.NodeId, tuple[list[ua.ReferenceDescription], int]] = {}
        for parent, data in folders.items():
            # What AddNodes reads from the parent (its own type definition, its parent) stays.
            own = [r for r in data.references if not r.IsForward or r.ReferenceTypeId == HAS_TYPE_DEFINITION]
            kept[parent] = (data.references, len(own))
            data.references = own
        try:
            results = self.server.iserver.node_mgt_service.add_nodes(items)
        finally:
            for parent, data in folders.items():
                before, own_count = kept[parent]
                data.references = before + data.references[own_count:]
        created: list[TagMeta] = []
        for n, tag in enumerate(accepted):
            refused = [
                (item, result)
                for item, result in zip(items[3 * n : 3 * n + 3], results[3 * n : 3 * n + 3], strict=True)
                if not result.StatusCode.is_good()
            ]
            for item, result in refused:
                logger.error(
                    "node refused",
                    extra={
                        "path": tag.path,
                        "node": item.RequestedNewNodeId.to_string(),
                        "status": result.StatusCode.name,
                    },
                )
            if results[3 * n].StatusCode.is_good():
                self.variables[tag.path] = self.node_id(tag.path)
                created.append(tag)
        return created


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
