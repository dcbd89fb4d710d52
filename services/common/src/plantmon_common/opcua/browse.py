"""The tag list: every variable below ``Objects/Plant``, its path built from the browse names."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from asyncua import Client, Node, ua

from plantmon_common.opcua.connect import OpcUaError
from plantmon_common.tags import ROOT, TagPathError, validate_path

__all__ = ["DiscoveredTag", "browse_plant", "find_plant"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DiscoveredTag:
    """A variable found below ``Objects/Plant``."""

    path: str
    node_id: ua.NodeId
    unit: str = ""
    eu_low: float | None = None
    eu_high: float | None = None
    description: str = ""


async def find_plant(client: Client) -> Node:
    """The ``Objects/Plant`` node, whatever its namespace index."""
    for ref in await client.nodes.objects.get_children_descriptions():
        if ref.BrowseName.Name == ROOT:
            return client.get_node(ref.NodeId)
    raise OpcUaError("the server has no Objects/Plant")


async def _read_metadata(node: Node) -> tuple[str, float | None, float | None, str]:
    unit, low, high, description = "", None, None, ""
    with contextlib.suppress(ua.UaError):
        desc = await node.read_description()
        description = desc.Text or ""
    for prop in await node.get_properties():
        name = (await prop.read_browse_name()).Name
        with contextlib.suppress(ua.UaError):
            if name == "EngineeringUnits":
                eu = await prop.read_value()
                unit = eu.DisplayName.Text or ""
            elif name == "EURange":
                rng = await prop.read_value()
                low, high = float(rng.Low), float(rng.High)
    return unit, low, high, description


async def browse_plant(client: Client, *, with_metadata: bool = True) -> list[DiscoveredTag]:
    """Every variable below ``Objects/Plant``, its path built from the browse names."""
    plant = await find_plant(client)
    found: list[DiscoveredTag] = []
    stack: list[tuple[Node, str]] = [(plant, ROOT)]
    while stack:
        node, prefix = stack.pop()
        for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
            if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                continue
            path = f"{prefix}/{ref.BrowseName.Name}"
            child = client.get_node(ref.NodeId)
            if ref.NodeClass == ua.NodeClass.Object:
                stack.append((child, path))
            elif ref.NodeClass == ua.NodeClass.Variable:
                try:
                    validate_path(path)
                except TagPathError:
                    logger.warning("skipping a variable with an invalid path", extra={"path": path})
                    continue
                unit, low, high, description = await _read_metadata(child) if with_metadata else ("", None, None, "")
                found.append(DiscoveredTag(path, ref.NodeId, unit, low, high, description))
    found.sort(key=lambda t: t.path)
    return found
