"""What a request must look like before any route sees it: a known ``Host``, and for ingest a proper
``Content-Type`` and no foreign ``Origin``; with a separate ingest port, each route on its own port.

A web page can make the browser of someone on the server's network POST to it: a "simple" request
(``text/plain``, form encodings) goes out without a CORS preflight, and DNS rebinding can even point
a name the page controls at 127.0.0.1. So, checked in this order (``/healthz`` and ``/readyz`` are
exempt, for probes that address the server by IP):

1. ``Host`` must be one of the allowed hosts (``TOPOLOGY_ALLOWED_HOSTS``; the server defaults them to
   the loopback names and the address it listens on, any host when it listens on every interface;
   ``*`` allows any, ``*.example.com`` any subdomain). Otherwise 400.
2. With ``TOPOLOGY_INGEST_PORT``, ingest routes answer only on that port and the others only on the
   main one (404 naming the right port).
3. Ingest routes refuse a request whose ``Origin`` is neither the server itself nor one of
   ``TOPOLOGY_ALLOWED_ORIGINS`` (403), and a ``Content-Type`` other than the route's (415): only
   ``/ingest/vpcflows`` takes a type a page may send without a preflight (``text/plain``), and for
   it the Origin check is the guard (browsers send ``Origin`` with every cross-site POST).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CONTENT_TYPES", "RequestGuard", "default_hosts", "host_allowed", "is_ingest"]

OTLP_TYPES = frozenset({"application/x-protobuf", "application/json"})
JSON = frozenset({"application/json"})
CONTENT_TYPES: dict[str, frozenset[str]] = {
    "/v1/traces": OTLP_TYPES,
    "/v1/metrics": OTLP_TYPES,
    "/ingest/flows": frozenset({"application/x-topology-flows"}),
    # Flow-log lines are plain text, which a page may send too: the Origin check keeps pages out
    # (browsers send Origin with every cross-site POST).
    "/ingest/vpcflows": frozenset({"text/plain"}),
    "/ingest/catalog": JSON,
    "/ingest/health": JSON,
    "/ingest/addresses": JSON,
    "/ingest/changes": JSON,
}
# Any other /ingest/* route takes any type but these: the ones a cross-site page can send unasked.
SIMPLE_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
PROBES = frozenset({"/healthz", "/readyz"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_ingest(path: str) -> bool:
    return path in CONTENT_TYPES or path.startswith("/ingest/")


def default_hosts(bind_host: str) -> tuple[str, ...]:
    """The hosts a server listening on ``bind_host`` answers by default."""
    if bind_host in WILDCARD_BINDS:
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_HOSTS, bind_host.strip("[]").lower())))


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    if not host:
        return False
    name = _hostname(host)
    for pattern in allowed:
        p = pattern.strip().lower()
        if p == "*" or p.strip("[]") == name or (p.startswith("*.") and name.endswith(p[1:])):
            return True
    return False


def _refuse(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


class RequestGuard:
    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str] = (),
                 allowed_origins: Sequence[str] = (), ingest_port: int | None = None,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        """``allowed_hosts`` empty: any Host (an app in tests; the server passes its defaults).
        ``on_refused(path, "content-type")``: told of each ingest request refused for its content type
        (the app counts and dead-letters it, :func:`service.receiver.refused_at_http`)."""
        self.app = app
        self.on_refused = on_refused
        self.hosts = tuple(allowed_hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.ingest_port = ingest_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            reason = bytes(problem.body).decode()[:120]
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
        else:
            await problem(scope, receive, send)

    def problem(self, scope: Scope, headers: Mapping[str, str] | None = None) -> JSONResponse | None:
        """The answer refusing the request in ``scope`` (``headers``: its headers if read), or None."""
        path: str = scope["path"]
        if path in PROBES:
            return None
        if headers is None:
            headers = Headers(scope=scope)
        host = headers.get("host")
        if self.hosts and not host_allowed(host, self.hosts):
            return _refuse(400, f"unknown Host {host!r}: add it to TOPOLOGY_ALLOWED_HOSTS to serve it",
                           "BAD_HOST")
        ingest = is_ingest(path)
        if self.ingest_port is not None:
            server = scope.get("server") or (None, None)
            on_ingest_port = server[1] == self.ingest_port
            if ingest != on_ingest_port:
                where = "the ingest port" if ingest else "the main port, not the ingest port"
                return _refuse(404, f"{path} is served on {where}", "NOT_FOUND")
        if not ingest or scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = headers.get("origin")
        if origin is not None and not self._own_origin(origin, scope, host):
            return _refuse(403, f"ingest from the web page at {origin!r} is not allowed "
                           "(list it in TOPOLOGY_ALLOWED_ORIGINS if it must)", "FORBIDDEN_ORIGIN")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        accepted = CONTENT_TYPES.get(path)
        if (ctype not in accepted) if accepted is not None else (ctype in SIMPLE_TYPES):
            wanted = " or ".join(sorted(accepted)) if accepted else "the route's content type"
            if self.on_refused is not None:
                self.on_refused(path, "content-type")
            return _refuse(415, f"Content-Type {ctype or '(none)'!r} is not accepted here: send {wanted}",
                           "UNSUPPORTED_MEDIA_TYPE")
        return None

    def _own_origin(self, origin: str, scope: Scope, host: str | None) -> bool:
        o = origin.rstrip("/").lower()
        return o in self.origins or "*" in self.origins or (
            host is not None and o == f"{scope.get('scheme', 'http')}://{host.lower()}")
