"""The ASGI application: the GraphQL subgraph and its operational endpoints.

==========================  =====================================================================
``POST /graphql``           GraphQL over HTTP (GET with ``?query=`` works too)
``GET /graphql``            GraphiQL (from local assets under ``/graphiql/assets/``)
``GET /healthz``            200 while the process runs
``GET /readyz``             200 when every store answers a ping (and, with Kafka workers, none has
                            failed), else 503 naming the ones that do not
``GET /metrics``            Prometheus text (see :mod:`service.observability` and the README's Metrics)
``GET /export``             the graph of a selection as DOT, Mermaid, Cytoscape, GraphML, JSON
``GET /map``, ``/widget/``  the map page and the ``<service-topology>`` module (:mod:`service.widget`)
==========================  =====================================================================

With authentication configured, every route but the probes and the static pages needs a scope
(:mod:`service.auth`); every request passes the Host/Origin/Content-Type guard (:mod:`service.guard`)
and, with ``TOPOLOGY_ALLOWED_ORIGINS``, CORS (:mod:`service.security` puts them together).

Build it with :func:`create_app`; run it with any ASGI server (``uvicorn``). The app does not own
the stores: whoever opened them closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from cross_web import HTTPException
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET

from service.answers import AnswerCache, Answered, store_versions
from service.auth import websocket_allowed
from service.config import ServiceConfig
from service.context import RequestContext
from service.errors import decode_body, request_error
from service.export import export_endpoint
from service.feed import ChangeFeed
from service.front import IngestFront
from service.gate import RETRY_AFTER, Overloaded, QueryGate
from service.graphiql import ASSETS, NODE_MODULES, missing_assets, render_page
from service.guard import is_ingest
from service.limits import RequestLimits
from service.loaders import Loaders
from service.observability import (
    Metrics,
    MetricsExtension,
    RouteMetrics,
    global_tracer_provider,
    runtime_service_graph,
    timed_stores,
    tracer_provider_for,
)
from service.receiver import refused_at_http
from service.runtime import Runtime
from service.schema import build_schema
from service.security import authenticator_for, cors_middleware, security_layers, unset, use
from service.storethread import StoreThread
from service.widget import widget_routes
from topology.store.base import Stores

__all__ = ["ASSETS_PATH", "create_app", "freeze_heap"]

log = logging.getLogger("service.app")

ASSETS_PATH = "/graphiql/assets"
READY_TIMEOUT = 2.0


class _Assets(StaticFiles):
    """Serves the GraphiQL files and nothing else from node_modules."""

    _allowed = frozenset(a.path for a in ASSETS.values())

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self._allowed:
            return PlainTextResponse("Not Found", status_code=404)
        response = await super().get_response(path, scope)
        response.headers.setdefault("cache-control", "public, max-age=86400")
        return response


class _GraphQL(GraphQL[RequestContext, None]):
    def __init__(self, stores: Stores, config: ServiceConfig, metrics: Metrics,
                 clock: Callable[[], float], feed: ChangeFeed | None = None,
                 store_thread: tuple[StoreThread, Stores] | None = None,
                 answers: AnswerCache | None = None, **kwargs: Any) -> None:
        """``stores``: as the server's loop uses them; ``store_thread``: where HTTP operations execute,
        with the stores as that thread uses them (:mod:`service.storethread`); ``answers``: where
        answers to repeated requests are kept (:mod:`service.answers`)."""
        super().__init__(**kwargs)
        self._feed = feed
        self._stores = stores
        self._thread = store_thread
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._page = render_page(ASSETS_PATH)
        self._gate = QueryGate(config.max_queries, config.max_queued_queries)
        self._answers = answers

    async def execute_single(self, request: Any, request_adapter: Any, sub_response: Any,
                             context: Any, root_value: Any, request_data: Any) -> Any:
        """Strawberry's, on the store thread when there is one."""
        args = (request, request_adapter, sub_response, context, root_value, request_data)
        if self._thread is None:
            return await super().execute_single(*args)
        thread, stores = self._thread
        return await thread.run(self._execute_there(stores, *args))

    async def _execute_there(self, stores: Stores, *args: Any) -> Any:
        context = args[3]
        if isinstance(context, RequestContext):  # the thread's stores, and loaders of its loop
            context.stores = stores
            context.loaders = Loaders(stores.catalog, stores.layers)
        return await super().execute_single(*args)

    async def context_there(self, request: Any) -> RequestContext:
        """A context for executing on the store thread (run there): ``/export``."""
        context = await self.get_context(request, None)
        if self._thread is not None:
            stores = self._thread[1]
            context.stores = stores
            context.loaders = Loaders(stores.catalog, stores.layers)
        return context

    async def get_context(self, request: Any, response: Any) -> RequestContext:
        return RequestContext(
            stores=self._stores,
            config=self._config,
            loaders=Loaders(self._stores.catalog, self._stores.layers),
            now=self._clock(),
            request=request,
            response=response,
            on_error=self._metrics.count_error,
            metrics=self._metrics,
            feed=self._feed,
        )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self._page)

    async def on_ws_connect(self, context: RequestContext) -> Any:
        # A WebSocket whose handshake carried no credentials authenticates in connection_init.
        if not await websocket_allowed(context.request.scope, context.connection_params):
            raise ConnectionRejectionError()
        return await super().on_ws_connect(context)

    def decode_json(self, data: str | bytes) -> object:
        return decode_body(data)  # never an exception the view does not answer with 400

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Strawberry's, through the gate (:mod:`service.gate`), with requests it refuses answered
        GraphQL-shaped (``extensions.code``), not as plain text; an answer kept for the same request
        in the same state (:mod:`service.answers`) is sent without executing anything."""
        if not isinstance(request, Request):  # a WebSocket: subscriptions are bounded by the feed
            return await super().run(request, context, root_value)
        if self._answers is not None and context is UNSET and request.method in ("GET", "POST"):
            return await self._run_kept(request, self._answers, root_value)
        return await self._run_gated(request, context, root_value)

    async def _run_kept(self, request: Request, answers: AnswerCache, root_value: Any) -> Any:
        start = time.perf_counter()
        context = await self.get_context(request, None)
        body = await request.body() if request.method == "POST" else b""
        key = answers.key((request.method, request.url.query, request.headers.get("content-type", ""),
                           request.headers.get("accept", ""), body), context.now)
        kept = None if key is None else answers.get(key)
        if kept is not None:
            for name in kept.operations:  # counted as the operations they answer
                op = self._metrics.operation_label(name)
                self._metrics.requests.labels(op, "ok").inc()
                self._metrics.latency.labels(op).observe(time.perf_counter() - start)
            return Response(kept.body, media_type=kept.content_type)
        response = await self._run_gated(request, context, root_value)
        done = context.executed
        sent = getattr(response, "body", None)
        if (key is not None and done and all(ok for _, ok in done) and response.status_code == 200
                and isinstance(sent, bytes)):
            kind = response.headers.get("content-type", "application/json")
            answers.put(key, Answered(sent, kind, tuple(name for name, _ in done)))
        return response

    async def _run_gated(self, request: Request, context: Any, root_value: Any) -> Any:
        try:
            async with self._gate.slot():
                return await super().run(request, context, root_value)
        except Overloaded as e:
            self._metrics.count_error("UNAVAILABLE")
            answer = request_error(503, str(e))
            answer.headers["retry-after"] = RETRY_AFTER
            return answer
        except HTTPException as e:
            if not isinstance(request, Request):
                raise
            return request_error(e.status_code, e.reason)


def on_thread(thread: StoreThread | None,
              endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` run on the store thread (it must not read the request's body there)."""
    if thread is None:
        return endpoint

    async def there(request: Request) -> Response:
        return await thread.run(endpoint(request))

    return there


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic garbage collector's generations.

    Call it once the stores are open: their in-memory index (hundreds of thousands of long-lived
    objects at 10,000 services) is then no longer walked by every full collection, which were the
    largest pauses behind query p99 (docs/benchmarks.md). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(
    stores: Stores,
    config: ServiceConfig,
    ingest: Any | None = None,
    *,
    runtime: Any | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    clock: Callable[[], float] = time.time,
    tracer_provider: TracerProvider | None = None,
    consumers: Any | None = None,
    data_ready: Callable[[], bool] | None = None,
    store_thread: StoreThread | None = None,
    data_detail: Callable[[], dict[str, str]] | None = None,
) -> Starlette | IngestFront:
    """The GraphQL service over ``stores``.

    * ``ingest`` (or ``runtime``, the same thing under the name the CLI uses): an ingest runtime whose
      ``counters()`` (or a prometheus Collector) is exposed on ``/metrics``.
    * ``extra_routes``: mounted beside ours (e.g. the HTTP/OTLP ingest routes).
    * ``clock``: the time "now" for queries without ``at`` (tests pass a fixed clock).
    * ``consumers``: the in-process Kafka workers (:class:`service.consumers.Consumers`) of
      ``serve --kafka``: their metrics are added to ``/metrics`` and their state to ``/readyz``.
    * ``data_ready``: ``/readyz`` answers 503 (``"data": "loading"``) until it returns True (the demo:
      until its live map is filled).
    * ``data_detail``: more to say about the data on ``/readyz`` (the demo: whether its history is
      filled yet), without changing readiness.
    * ``store_thread``: the thread whose loop owns ``stores`` (:mod:`service.storethread`): GraphQL
      operations over HTTP and ``/export`` execute there, everything else reaches the stores through it.
    * ``tracer_provider``: where resolver spans go; by default an OTLP exporter when
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` is configured, the process-wide SDK provider if one is
      installed, otherwise no tracing at all (no per-resolver cost).
    """
    metrics = Metrics()
    source = ingest if ingest is not None else runtime
    if source is not None:
        metrics.add_ingest(source)
    if consumers is not None:
        metrics.add_ingest(consumers.metrics.ingest)
        metrics.add_service_graph(consumers.metrics.service_graph)

    owned: TracerProvider | None = None
    provider: trace.TracerProvider | None = tracer_provider
    if provider is None:
        provider = owned = tracer_provider_for(config)
    if provider is None:
        provider = global_tracer_provider()
    extensions: list[Callable[[], SchemaExtension]] = [MetricsExtension]
    if provider is not None:
        traced = provider
        extensions.append(lambda: OpenTelemetryExtension(tracer_provider=traced))
    schema = build_schema(config, extensions)

    here = stores if store_thread is None else store_thread.bind(stores)  # as this loop uses them
    served = timed_stores(here, metrics)
    there = None if store_thread is None else (store_thread, timed_stores(stores, metrics))
    feed = ChangeFeed(clock, config.max_subscriptions, config.max_connection_subscriptions)
    if isinstance(source, Runtime):  # live updates as stage 3 writes (subscriptions poll otherwise)
        source.flushed.append(feed.notify)
        source.flushed.append(runtime_service_graph(metrics))  # Grafana's service-graph metrics
    answers = None
    if config.response_cache:
        versions = store_versions([*stores.layers.values(), stores.catalog])
        answers = AnswerCache(config.response_cache, versions) if versions() is not None else None
    graphql = _GraphQL(
        served, config, metrics, clock, feed, there, answers,
        schema=schema,
        graphql_ide="graphiql" if config.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        allowed_origins=config.allowed_origins,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}

        async def check(name: str, probe: Any) -> None:
            try:
                await asyncio.wait_for(probe, READY_TIMEOUT)
                checks[name] = "ok"
            except Exception as e:
                checks[name] = f"unavailable: {e or type(e).__name__}"

        await asyncio.gather(
            *(check(layer.value, s.ping()) for layer, s in here.layers.items()),
            check("CATALOG", here.catalog.services([])),
        )
        ready = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "stores": checks}
        if data_ready is not None and not data_ready():
            ready, body["status"], body["data"] = False, "unavailable", "loading"
        if data_detail is not None:
            body.update(data_detail())
        if consumers is not None:
            body["kafka"] = workers = consumers.status()
            if any(v.startswith("failed") for v in workers.values()):
                ready = False
                body["status"] = "unavailable"
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.graphiql and missing_assets():
            log.warning("GraphiQL assets are not installed (run `make install-node`)",
                        extra={"missing": missing_assets()})
        try:
            yield
        finally:
            if owned is not None:
                owned.shutdown()

    routes: list[BaseRoute] = [
        Route("/graphql", graphql, name="graphql"),
        WebSocketRoute("/graphql", graphql),  # graphql-transport-ws: subscriptions (topologyChanges)
        Mount(ASSETS_PATH, _Assets(directory=NODE_MODULES, check_dir=False), name="graphiql-assets"),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/export", on_thread(store_thread, export_endpoint(schema, graphql.context_there,
                                                                 config.max_page)), methods=["GET"]),
        *widget_routes(),
        *extra_routes,
    ]
    def refused(path: str, why: str) -> None:
        metrics.refused.labels(why).inc()
        if isinstance(source, Runtime):  # counted and dead-lettered as the route would have
            refused_at_http(runtime, path, why)

    limits = RequestLimits(unset, max_body=config.max_body, max_request_body=config.max_request_body,
                           read_timeout=config.read_timeout, max_ingest_requests=config.max_ingest_requests,
                           is_ingest=is_ingest, on_refused=refused)
    guard, auth = security_layers(config, authenticator_for(config))
    starlette = Starlette(routes=routes, lifespan=lifespan,
                          middleware=[Middleware(RouteMetrics, metrics=metrics, routes=routes),
                                      *cors_middleware(config), Middleware(use, layer=guard),
                                      Middleware(use, layer=auth), Middleware(use, layer=limits)])
    app: Starlette | IngestFront = starlette
    handlers = getattr(extra_routes, "handlers", None)
    if handlers:  # the ingest routes' short road (service.front), beside the same routes in Starlette
        app = IngestFront(starlette, handlers, runtime=source if isinstance(source, Runtime) else None,
                          guard=guard, auth=auth, limits=limits, metrics=metrics,
                          cors=bool(config.allowed_origins))
    app.state.metrics = metrics
    app.state.schema = schema
    app.state.config = config
    app.state.feed = feed
    app.state.answers = answers
    return app
