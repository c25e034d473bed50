"""Plain data completed without graphql-core's per-field machinery.

graphql-core executes every field the same way: a resolve-info object and a path, the resolver,
an awaitable check, then a type dispatch to complete the value; for a page of a hundred dependencies
that is most of a query's CPU (docs/benchmarks.md, "Queries over HTTP"), although nearly every one
of those fields only reads an attribute of an object the resolver above already built.

:class:`PlainExecution` completes such parts directly. An object whose selected fields (under every
fragment, ``@skip``/``@include`` applied by graphql-core's own field collection) are all *plain* is
completed by reading the attributes and coercing the leaves in one loop, recursively. Plain means:
Strawberry's default resolver (a field without a resolver, permission or extension: it reads one
attribute), no arguments, no ``@defer``/``@stream``, an object type without ``is_type_of``, and
no abstract types below; ``__typename`` too. Anything else (a field with a resolver, such as
``Service.healthStatus``) makes the object complete the ordinary way, so resolvers, their
``info``, errors, tracing and every extension run exactly as before.

The result is the one graphql-core would give: the same keys in the same order, leaves coerced by
the same ``coerce_output_value``. When a plain value is wrong (null where the schema says non-null,
not a list where it says list, a leaf that does not coerce) the object is completed again the
ordinary way, which reports the error at its path and nulls what the specification says; reading
attributes twice changes nothing. With field middleware installed (a resolve hook, e.g. tracing
every resolver) nothing is taken off the ordinary path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import AwaitableOrValue, Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

__all__ = ["PlainExecution"]

_Complete = Callable[[Any], Any]
_DEFINITION = "strawberry-definition"  # where Strawberry keeps a GraphQL field's own definition


class _NotPlain(Exception):
    """A value the plain completion does not take: the ordinary completion says what is wrong."""


class PlainExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, completing plain objects in one pass (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (object type, id of the field group) -> completion, or None when not plain; the field
        # groups are graphql-core's memoised ones, kept alive by its own cache for this operation
        self._plans: dict[tuple[GraphQLObjectType, int], _Complete | None] = {}

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        manager = self.middleware_manager
        if manager is None or not manager.middlewares:  # Strawberry passes an empty manager
            complete = self._object(return_type, field_details_list)
            if complete is not None:
                try:
                    completed: dict[str, Any] = complete(result)
                    return completed
                except _NotPlain:
                    pass
                except Exception:
                    pass  # an attribute that raises: the ordinary completion reports it
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _object(self, object_type: GraphQLObjectType, group: FieldDetailsList) -> _Complete | None:
        key = (object_type, id(group))
        if key in self._plans:
            return self._plans[key]
        self._plans[key] = None  # while planning (and for good, unless plain)
        if object_type.is_type_of is not None:
            return None
        grouped, new_defers, forbidden = self.collect_subfields(object_type, group)
        if new_defers or forbidden:
            return None
        fields: list[tuple[str, Callable[[Any], Any], _Complete]] = []
        for response_name, sub_group in grouped.items():
            node = sub_group[0].node
            if node.arguments or any(d.node.arguments for d in sub_group[1:]):
                return None
            name = node.name.value
            if name == "__typename":
                fields.append((response_name, _constant(object_type.name), _same))
                continue
            field = self.schema.get_field(object_type, name)
            read = None if field is None else _reader(field)
            complete = None if field is None or read is None else self._value(field.type, sub_group)
            if read is None or complete is None:
                return None
            fields.append((response_name, read, complete))

        def complete_object(source: Any) -> dict[str, Any]:
            return {response_name: complete(read(source)) for response_name, read, complete in fields}

        self._plans[key] = complete_object
        return complete_object

    def _value(self, of_type: GraphQLOutputType, group: FieldDetailsList) -> _Complete | None:
        """How to complete a value of ``of_type`` selected by ``group``; None if not plain."""
        if is_non_null_type(of_type):
            assert isinstance(of_type, GraphQLNonNull)
            inner = self._value(of_type.of_type, group)
            return None if inner is None else _non_null(inner)
        if is_list_type(of_type):
            assert isinstance(of_type, GraphQLList)
            item = self._value(of_type.of_type, group)
            return None if item is None else _list(item)
        if is_leaf_type(of_type):
            return _leaf(_enum_names(of_type) or of_type.coerce_output_value)
        if is_object_type(of_type):
            assert isinstance(of_type, GraphQLObjectType)
            obj = self._object(of_type, group)
            return None if obj is None else _nullable(obj)
        return None  # interfaces and unions: resolved the ordinary way


def _reader(field: GraphQLField) -> Callable[[Any], Any] | None:
    """The attribute read of a Strawberry field without a resolver; None for any other field."""
    if not getattr(field.resolve, "_is_default", False):
        return None
    definition = (field.extensions or {}).get(_DEFINITION)
    python_name = getattr(definition, "python_name", None)
    if not isinstance(python_name, str) or not getattr(definition, "is_basic_field", False):
        return None
    resolver = getattr(definition, "default_resolver", getattr)
    if resolver is getattr:
        return operator.attrgetter(python_name)
    return lambda source: resolver(source, python_name)


def _enum_names(of_type: Any) -> Callable[[Any], Any] | None:
    """For a Strawberry enum, what its ``coerce_output_value`` answers (the name of the first GraphQL
    value equal to the member's value) read from a map instead of a search; None for other types."""
    wrapped = getattr(of_type, "wrapped_cls", None)
    values = getattr(of_type, "values", None)
    if not isinstance(wrapped, type) or not isinstance(values, dict):
        return None
    names: dict[Any, str] = {}
    try:
        for name, value in values.items():
            names.setdefault(value.value, name)
    except TypeError:  # a value that cannot be a key: the ordinary search
        return None
    coerce = of_type.coerce_output_value

    def coerce_member(member: Any) -> Any:
        if isinstance(member, wrapped):
            try:
                found = names.get(getattr(member, "value", None))
            except TypeError:
                found = None
            if found is not None:
                return found
        return coerce(member)

    return coerce_member


def _same(value: Any) -> Any:
    return value


def _constant(value: str) -> Callable[[Any], str]:
    return lambda _source: value


def _non_null(inner: _Complete) -> _Complete:
    def complete(value: Any) -> Any:
        completed = inner(value)
        if completed is None:
            raise _NotPlain
        return completed

    return complete


def _nullable(inner: _Complete) -> _Complete:
    def complete(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise _NotPlain
        return inner(value)

    return complete


def _list(item: _Complete) -> _Complete:
    def complete(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if not isinstance(value, list | tuple):
            raise _NotPlain  # other iterables (and async ones) the ordinary way
        return [item(v) for v in value]

    return complete


def _leaf(coerce: Callable[[Any], Any]) -> _Complete:
    def complete(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise _NotPlain
        coerced = coerce(value)
        if coerced is None or coerced is Undefined:
            raise _NotPlain
        return coerced

    return complete
