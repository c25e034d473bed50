"""The map in the browser, served from local files: the ``<service-topology>`` module and the pages on it.

==================================  ===============================================================
``GET /widget/service-topology.js`` the web component, one ES module (``widget/``, bundled by esbuild at
                                    install time into ``widget/dist``; ``make install-node`` builds it)
``GET /map``                        the full-page explorer (``widget/map.html``) on the component
``GET /``                           a short index linking the map, GraphiQL and the exports
==================================  ===============================================================

Nothing here reaches outside the machine: the module bundles its dependencies (dagre, sigma.js,
graphology) and the pages load only it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["BUNDLE", "MAP_PAGE", "WIDGET_PATH", "widget_routes"]

log = logging.getLogger("service.widget")

WIDGET_DIR = Path(__file__).resolve().parents[1] / "widget"
BUNDLE = WIDGET_DIR / "dist" / "service-topology.js"
MAP_PAGE = WIDGET_DIR / "map.html"
WIDGET_PATH = "/widget/service-topology.js"

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service Topology</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:42rem;color:#1f2933}
a{color:#1d4ed8}code{background:#f1f3f6;padding:0 .25rem;border-radius:3px}</style></head>
<body><h1>Service Topology</h1>
<ul>
<li><a href="/map">Map</a>: search a service, see its dependencies with their health, move through time</li>
<li><a href="/graphql">GraphQL</a> (GraphiQL when enabled)</li>
<li><a href="/export?format=json">Export</a> the graph:
  <code>format=dot|mermaid|cytoscape|graphml|json</code></li>
<li>Embed the map:
  <code>&lt;script type="module" src="/widget/service-topology.js"&gt;&lt;/script&gt;</code></li>
<li><a href="/metrics">Metrics</a> · <a href="/readyz">readiness</a></li>
</ul></body></html>
"""


async def bundle(request: Request) -> Response:
    if not BUNDLE.is_file():
        log.warning("the widget is not built (run `make install-node`)")
        return PlainTextResponse("the widget is not built on this server (run `make install-node`)\n",
                                 status_code=404)
    return FileResponse(BUNDLE, media_type="text/javascript; charset=utf-8",
                        headers={"cache-control": "no-cache"})


async def map_page(request: Request) -> Response:
    return HTMLResponse(MAP_PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-cache"})


async def index(request: Request) -> Response:
    return HTMLResponse(INDEX)


def widget_routes() -> list[BaseRoute]:
    return [
        Route(WIDGET_PATH, bundle, methods=["GET", "HEAD"]),
        Route("/map", map_page, methods=["GET", "HEAD"]),
        Route("/", index, methods=["GET", "HEAD"]),
    ]
