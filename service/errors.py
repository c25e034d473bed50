"""Errors the API shows, and the extension that gives every error an ``extensions.code``.

::

    ApiError                      an error meant for the person who sent the query
     ├── BadUserInput             BAD_USER_INPUT: an argument is out of range or malformed
     ├── NotFound                 NOT_FOUND: a name the API does not know (the field answers null;
     │                            ``extensions.suggestions`` lists the closest known names)
     └── Unavailable              UNAVAILABLE: a store cannot answer (``extensions.layer`` names a layer)

Everything else a resolver raises is a bug or an outage nobody planned for: the client sees
``Internal server error.`` with ``extensions.code = "INTERNAL_SERVER_ERROR"`` and the details go
to the log (with the exception) and to the ``topology_graphql_errors_total`` counter.

Documents that fail to parse get ``GRAPHQL_PARSE_FAILED`` (the token limit too), documents that
fail validation (unknown fields, the depth and alias limits) ``GRAPHQL_VALIDATION_FAILED``, and
variables of the wrong type ``BAD_USER_INPUT``.

An exception that escapes the operation before execution (graphql-core's parser and validation
rules recurse: ~250 chained fragments exhaust the stack) is no bare error either: a
``RecursionError`` is ``GRAPHQL_VALIDATION_FAILED`` ("the document nests too deeply"), anything else
``INTERNAL_SERVER_ERROR`` (logged).

Partial answers: when a layer fails during a query the resolver still returns what the other
layers gave and records the failure in the request context; :class:`ErrorCodes` then adds one
``UNAVAILABLE`` error per failed layer and field path, beside the data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.responses import JSONResponse
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from topology.model import Layer
from topology.store.base import StoreUnavailable

__all__ = ["ApiError", "BadUserInput", "ErrorCodes", "LayerOutage", "NotFound", "Unavailable"]

log = logging.getLogger("service.errors")

INTERNAL_MESSAGE = "Internal server error."


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.extensions = {k: v for k, v in extensions.items() if v is not None}


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message, argument=argument)


class NotFound(ApiError):
    code = "NOT_FOUND"

    def __init__(self, message: str, argument: str | None = None, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message, argument=argument, suggestions=list(suggestions))


class Unavailable(ApiError):
    code = "UNAVAILABLE"

    def __init__(self, message: str, layer: Layer | None = None, store: str | None = None) -> None:
        super().__init__(message, layer=None if layer is None else layer.value, store=store)


@dataclass(frozen=True, slots=True)
class LayerOutage:
    """A layer that did not answer for the field at ``path`` (recorded by resolvers)."""

    layer: Layer
    message: str
    path: tuple[str | int, ...]


def _code_of(error: GraphQLError) -> tuple[str, dict[str, Any], str]:
    """(code, extra extensions, message to show) for one error."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code, original.extensions, error.message
    if isinstance(original, StoreUnavailable):
        layer = original.layer.value if original.layer is not None else None
        ext = {"layer": layer} if layer else {"store": "catalog"}
        return "UNAVAILABLE", ext, f"a store is unavailable: {original}"
    existing = (error.extensions or {}).get("code")
    if original is None and isinstance(existing, str):
        return existing, {}, error.message
    if error.path is None:  # before execution: the document or its variables, never our internals
        msg = error.message
        if msg.startswith("Syntax Error") or ("tokens" in msg and "Parsing aborted" in msg):
            return "GRAPHQL_PARSE_FAILED", {}, msg
        if msg.startswith("Variable '$"):
            return "BAD_USER_INPUT", {}, msg
        return "GRAPHQL_VALIDATION_FAILED", {}, msg
    return "INTERNAL_SERVER_ERROR", {}, INTERNAL_MESSAGE


_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)
#: ``extensions.code`` of a request refused before it is a GraphQL operation, by HTTP status.
REQUEST_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "BAD_REQUEST",
                 503: "UNAVAILABLE"}


def request_error(status: int, message: str) -> JSONResponse:
    """A GraphQL-shaped answer for a request refused before execution (a body that is not JSON, not an
    object, no query): ``{"errors": [{"message", "extensions": {"code"}}]}`` with ``status``."""
    code = REQUEST_CODES.get(status, "BAD_REQUEST")
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def decode_body(data: str | bytes) -> dict[str, Any] | list[Any]:
    """A GraphQL request body (JSON); an ``HTTPException`` 400 saying why for bytes that are not UTF-8
    JSON, nesting too deep, or a value other than an object (or a batch, which the view refuses)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise HTTPException(400, "the body is JSON nested too deeply") from None
    except UnicodeDecodeError as e:
        raise HTTPException(400, f"the body is not UTF-8: {e.reason}") from None
    except ValueError as e:
        raise HTTPException(400, f"the body is not JSON: {e}") from None
    if not isinstance(value, dict | list):
        raise HTTPException(400, "the body must be a JSON object with a 'query'")
    if isinstance(value, dict) and not isinstance(value.get("operationName"), str | None):
        raise HTTPException(400, "the GraphQL operation's `operationName` must be a string or null")
    return value


class ErrorCodes(SchemaExtension):
    """Sets ``extensions.code`` on every error, masks unexpected ones and adds layer outages.

    The request context may provide ``outages`` (a list of :class:`LayerOutage`) and ``on_error``
    (a callable taking the code, for metrics).
    """

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except GraphQLError as error:
            if not isinstance((error.extensions or {}).get("code"), str):
                raise self._escaped(error.original_error or error) from error
            raise
        except _REQUEST_ERRORS:  # the view answers these 400 (no query, an operation type it refuses)
            raise
        except Exception as error:  # raised again as an error with a code
            raise self._escaped(error) from error
        result = self.execution_context.result
        if result is None:
            return
        ctx = self.execution_context.context
        outages: list[LayerOutage] = list(getattr(ctx, "outages", ()) or ())
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or [])
        if not errors and not outages:
            return
        on_error = getattr(ctx, "on_error", None)
        out: list[GraphQLError] = []
        for error in errors:
            code, extra, message = _code_of(error)
            if code == "INTERNAL_SERVER_ERROR":
                original = error.original_error or error
                log.error(
                    "resolver failed",
                    exc_info=(type(original), original, original.__traceback__),
                    extra={"path": error.path, "operation": self.execution_context.operation_name},
                )
            elif code == "UNAVAILABLE":
                log.warning("store unavailable", extra={"path": error.path, "error": error.message})
            out.append(
                GraphQLError(
                    message,
                    nodes=error.nodes,
                    source=error.source,
                    positions=error.positions,
                    path=error.path,
                    original_error=None,
                    extensions={**(error.extensions or {}), **extra, "code": code},
                )
            )
            if on_error is not None:
                on_error(code)
        seen: set[tuple[Layer, tuple[str | int, ...]]] = set()
        for outage in outages:
            if (outage.layer, outage.path) in seen:
                continue
            seen.add((outage.layer, outage.path))
            out.append(
                GraphQLError(
                    outage.message,
                    path=list(outage.path),
                    extensions={"code": "UNAVAILABLE", "layer": outage.layer.value},
                )
            )
            if on_error is not None:
                on_error("UNAVAILABLE")
        result.errors = out

    def _escaped(self, error: BaseException) -> GraphQLError:
        """The error to show for an exception that escaped the operation's hooks (see the module doc)."""
        if isinstance(error, RecursionError):
            code, message = "GRAPHQL_VALIDATION_FAILED", "the document nests too deeply"
        else:
            code, message = "INTERNAL_SERVER_ERROR", INTERNAL_MESSAGE
            log.error("operation failed", exc_info=(type(error), error, error.__traceback__),
                      extra={"operation": self.execution_context.operation_name})
        on_error = getattr(self.execution_context.context, "on_error", None)
        if on_error is not None:
            on_error(code)
        return GraphQLError(message, extensions={"code": code})
