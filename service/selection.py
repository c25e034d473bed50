"""What a query selects below the field being resolved, read from the parsed document.

Resolvers use it to skip work nobody asked for (e.g. merging edge stats when no ``perLayer`` is
selected). Answers are conservative: a field named anywhere below, under any fragment or directive,
counts as selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import strawberry
from graphql import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, SelectionNode

__all__ = ["selects"]


def selects(info: strawberry.Info, name: str) -> bool:
    """Whether the field ``name`` (as spelled in the schema) is selected anywhere below this field."""
    raw = info._raw_info
    return _below(raw.field_nodes, name, raw.fragments, set())


def _below(
    nodes: Iterable[SelectionNode],
    name: str,
    fragments: Mapping[str, FragmentDefinitionNode],
    visited: set[str],
) -> bool:
    for node in nodes:
        if isinstance(node, FragmentSpreadNode):
            spread = node.name.value
            if spread in visited or spread not in fragments:
                continue
            visited.add(spread)
            inner = fragments[spread].selection_set
        elif isinstance(node, FieldNode | InlineFragmentNode):
            if isinstance(node, FieldNode) and node.name.value == name:
                return True
            inner = node.selection_set
        else:
            continue
        if inner is not None and _below(inner.selections, name, fragments, visited):
            return True
    return False
