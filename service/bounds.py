"""Bounded work per GraphQL operation: input sizes checked before execution, and a time budget.

:class:`InputBounds` (a schema extension) refuses, before any resolver or variable coercion runs, an
operation whose document or variables hold

* a list longer than ``TOPOLOGY_MAX_LIST`` (literal or in the variables),
* a string longer than ``TOPOLOGY_MAX_STRING`` (names, cursors, representations' fields),
* an ``_entities`` call with more than ``TOPOLOGY_MAX_ENTITIES`` representations (that list has its own
  limit: gateways batch entities),

with one ``BAD_USER_INPUT`` error naming the limit (``extensions.limit``). :func:`within_budget` runs
an operation under ``TOPOLOGY_OPERATION_TIMEOUT``: past it the client gets a ``TIMEOUT`` error and
the operation is cancelled. The body limit of :mod:`service.limits` comes first: a document or its
variables never exceed ``TOPOLOGY_MAX_REQUEST_BODY``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLError,
    ListValueNode,
    StringValueNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.language import DocumentNode
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult as OperationResult

__all__ = ["DocumentChecks", "InputBounds", "within_budget"]

ENTITIES = "_entities"


class _TooLarge(Exception):
    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class _Literals(Visitor):
    """Lists and strings written in the document; the variables passed as ``_entities``
    representations."""

    def __init__(self, max_list: int, max_string: int, max_entities: int) -> None:
        super().__init__()
        self.max_list, self.max_string, self.max_entities = max_list, max_string, max_entities
        self.representations: list[str] = []

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value != ENTITIES:
            return
        for arg in node.arguments or ():
            if arg.name.value != "representations":
                continue
            if isinstance(arg.value, VariableNode):
                self.representations.append(arg.value.name.value)
            elif isinstance(arg.value, ListValueNode) and len(arg.value.values) > self.max_entities:
                raise _TooLarge(f"_entities takes at most {self.max_entities} representations, got "
                                f"{len(arg.value.values)}", "entities")

    def enter_list_value(self, node: ListValueNode, key: Any, parent: Any, *_: Any) -> None:
        inside_entities = getattr(parent, "name", None) is not None and parent.name.value == "representations"
        if not inside_entities and len(node.values) > self.max_list:
            raise _TooLarge(f"a list in the document has {len(node.values)} elements; at most "
                            f"{self.max_list}", "list")

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if len(node.value) > self.max_string:
            raise _TooLarge(f"a string in the document has {len(node.value)} characters; at most "
                            f"{self.max_string}", "string")


def _values(value: Any) -> Iterator[Any]:
    """Every value inside ``value`` (lists, objects), without recursion: deep nesting costs no stack."""
    stack = [value]
    while stack:
        v = stack.pop()
        yield v
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())


def check_variables(variables: dict[str, Any], entities: set[str], max_list: int, max_string: int,
                    max_entities: int) -> None:
    for name, value in variables.items():
        top_limit = max_entities if name in entities else max_list
        if isinstance(value, list) and len(value) > top_limit:
            what = "_entities representations" if name in entities else "elements"
            raise _TooLarge(f"variable ${name} has {len(value)} {what}; at most {top_limit}",
                            "entities" if name in entities else "list")
        inner = value if isinstance(value, list) and name in entities else [value]
        for item in inner:
            for v in _values(item):
                if isinstance(v, list) and len(v) > max_list:
                    raise _TooLarge(f"variable ${name} holds a list of {len(v)} elements; at most {max_list}",
                                    "list")
                if isinstance(v, str) and len(v) > max_string:
                    raise _TooLarge(f"variable ${name} holds a string of {len(v)} characters; at most "
                                    f"{max_string}", "string")


class DocumentChecks:
    """What the walk of a document found (the variables passed as ``_entities`` representations, or
    what is too large), kept per parsed document: a document sent again (the parsed documents are
    kept, :mod:`service.documents`) is not walked again. Bounded: the latest ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        # id(document) -> (the document, kept alive so that its id is not reused; what its walk found)
        self._found: OrderedDict[int, tuple[DocumentNode, frozenset[str] | _TooLarge]] = OrderedDict()

    def representations(self, document: DocumentNode, max_list: int, max_string: int,
                        max_entities: int) -> frozenset[str]:
        """The variables ``document`` passes as representations; raises :class:`_TooLarge`."""
        kept = self._found.get(id(document))
        if kept is None or kept[0] is not document:
            literals = _Literals(max_list, max_string, max_entities)
            found: frozenset[str] | _TooLarge
            try:
                visit(document, literals)
                found = frozenset(literals.representations)
            except _TooLarge as e:
                found = e
            kept = (document, found)
            self._found[id(document)] = kept
            while len(self._found) > self.maxsize:
                self._found.popitem(last=False)
        if isinstance(kept[1], _TooLarge):
            raise kept[1]
        return kept[1]


class InputBounds(SchemaExtension):
    """Refuses oversized inputs before execution (see the module docstring)."""

    def __init__(self, *, max_list: int, max_string: int, max_entities: int,
                 checks: DocumentChecks | None = None) -> None:
        self.max_list, self.max_string, self.max_entities = max_list, max_string, max_entities
        self.checks = checks or DocumentChecks(1)

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        document: DocumentNode | None = ctx.graphql_document
        try:
            if document is not None:
                entities = self.checks.representations(document, self.max_list, self.max_string,
                                                       self.max_entities)
                check_variables(ctx.variables or {}, set(entities), self.max_list,
                                self.max_string, self.max_entities)
        except _TooLarge as e:
            ctx.result = ExecutionResult(data=None, errors=[GraphQLError(
                str(e), extensions={"code": "BAD_USER_INPUT", "limit": e.limit})])
        yield


async def within_budget(run: Callable[[], Awaitable[Any]], seconds: float,
                        on_error: Callable[[str], None] | None = None) -> Any:
    """``run()``, or a result with one ``TIMEOUT`` error if it takes longer than ``seconds``."""
    try:
        return await asyncio.wait_for(run(), seconds)
    except TimeoutError:
        if on_error is not None:
            on_error("TIMEOUT")
        return OperationResult(data=None, errors=[GraphQLError(
            f"the operation took longer than its budget of {seconds:g} s (TOPOLOGY_OPERATION_TIMEOUT)",
            extensions={"code": "TIMEOUT"})])
