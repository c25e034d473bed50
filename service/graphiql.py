"""GraphiQL served entirely from local files: no CDN, no request leaves the machine.

The seven files come from npm packages pinned in ``service/static/package.json`` (installed into
``service/static/node_modules`` by ``make install-node``); they are byte for byte the files
Strawberry's own page would fetch from a CDN, and the page checks them with the same integrity
hashes. The page reads an initial query from ``?q=`` (as Strawberry's does).
"""

from __future__ import annotations

import html
import json
import pathlib
from dataclasses import dataclass

__all__ = ["ASSETS", "NODE_MODULES", "missing_assets", "render_page"]

NODE_MODULES = pathlib.Path(__file__).resolve().parent / "static" / "node_modules"


@dataclass(frozen=True, slots=True)
class Asset:
    path: str  # inside node_modules
    integrity: str  # subresource integrity (sha384) of the pinned version


ASSETS: dict[str, Asset] = {
    "react": Asset("react/umd/react.production.min.js",
                   "sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8"),
    "react-dom": Asset("react-dom/umd/react-dom.production.min.js",
                       "sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh"),
    "js-cookie": Asset("js-cookie/dist/js.cookie.min.js",
                       "sha384-/vxhYfM1LENRhdpZ8dwEsQn/X4VhpbEZSiU4m/FwR+PVpzar4fkEOw8FP9Y+OfQN"),
    "graphiql-css": Asset("graphiql/graphiql.min.css",
                          "sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM"),
    "explorer-css": Asset("@graphiql/plugin-explorer/dist/style.css",
                          "sha384-5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi"),
    "graphiql": Asset("graphiql/graphiql.min.js",
                      "sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie"),
    "explorer": Asset("@graphiql/plugin-explorer/dist/index.umd.js",
                      "sha384-2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9"),
}

DEFAULT_QUERY = """# Service Topology: upstream = what a service calls, downstream = what calls it.
# Ctrl-Enter runs the query.
{
  services(first: 5) {
    edges { node { name tier domain owner { team } healthStatus { status } } }
  }
}
"""

_SCRIPT = """
(function () {
  var params = new URLSearchParams(window.location.search);
  var endpoint = window.location.pathname;
  var headers = {};
  var csrf = window.Cookies ? Cookies.get("csrftoken") : undefined;
  if (csrf) { headers["x-csrftoken"] = csrf; }
  var fetcher = GraphiQL.createFetcher({ url: endpoint, headers: headers });
  var initial = %(initial)s;

  function keepInUrl(key, value) {
    var next = new URLSearchParams(window.location.search);
    if (value) { next.set(key, value); } else { next.delete(key); }
    var search = next.toString().replace(/\\+/g, "%%20");
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  function App() {
    var explorer = React.useMemo(function () { return GraphiQLPluginExplorer.explorerPlugin(); }, []);
    var query = React.useState(params.get("q") || initial);
    var variables = React.useState(params.get("variables") || undefined);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [explorer],
      query: query[0],
      variables: variables[0],
      onEditQuery: function (q) { query[1](q); keepInUrl("q", q); },
      onEditVariables: function (v) { variables[1](v); keepInUrl("variables", v); },
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      inputValueDeprecation: true
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
})();
"""


def _tag(name: str, prefix: str) -> str:
    a = ASSETS[name]
    url = html.escape(f"{prefix}/{a.path}", quote=True)
    if a.path.endswith(".css"):
        return f'<link rel="stylesheet" href="{url}" integrity="{a.integrity}">'
    return f'<script src="{url}" integrity="{a.integrity}"></script>'


def render_page(assets_prefix: str, title: str = "Service Topology GraphiQL") -> str:
    """The GraphiQL page; ``assets_prefix`` is the URL path the node_modules files are served under."""
    prefix = assets_prefix.rstrip("/")
    head = "\n    ".join(_tag(n, prefix) for n in ("graphiql-css", "explorer-css"))
    body = "\n    ".join(_tag(n, prefix) for n in ("react", "react-dom", "js-cookie", "graphiql", "explorer"))
    # json.dumps escapes quotes; "</" is split so the query text cannot close the script element.
    initial = json.dumps(DEFAULT_QUERY).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>{html.escape(title)}</title>
    <style>
      html, body {{ height: 100%; margin: 0; overflow: hidden; }}
      #graphiql {{ height: 100vh; display: flex; }}
    </style>
    {head}
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL...</div>
    {body}
    <script>{_SCRIPT % {"initial": initial}}</script>
  </body>
</html>
"""


def missing_assets() -> list[str]:
    """Asset files not installed (run ``make install-node``)."""
    return [a.path for a in ASSETS.values() if not (NODE_MODULES / a.path).is_file()]
