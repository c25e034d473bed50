"""Rendering of the ``<service-topology>`` widget in headless Chromium: a 200-node neighbourhood (layered
SVG, dagre) handed to the widget, and the fleet of a real server holding a simulated 10,000-service fleet
(sigma.js WebGL; ForceAtlas2 in a worker), with what a frame costs while the camera moves.

    .venv/bin/python -m bench.widget_render [--services 10000] [--minutes 1]
    .venv/bin/python -m bench.widget_render --data-dir /tmp/fleet10k            # build it there, keep it
    .venv/bin/python -m bench.widget_render --data-dir /tmp/fleet10k --reuse --window 6h

The neighbourhood: ``tests/js/widget.mjs --scenario bench`` hands the widget synthetic graphs with
``setData`` (the data "arrives" at that call) and times until two animation frames later (painted).
The fleet: ``tests.e2e.simfleet`` feeds the simulator's traffic through the real pipeline into an
embedded store, ``topology serve --embedded`` serves it, and ``--scenario fleet --frames`` opens
``<service-topology mode="fleet" endpoint="/graphql">``: loading (every page of ``Query.topology``),
drawing (from the last answer to painted), what the canvas holds against ``/export?format=json``, and
frames (see ``FRAMES`` in widget.mjs). The screenshot is written to var/artefacts/widget/. WebGL is
Chromium's software renderer (SwiftShader) on this machine: there is no GPU. Targets (issue 11):
neighbourhood <= 500 ms, fleet <= 3 s, pan/zoom >= 30 frames/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import header

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "var" / "artefacts" / "widget"


def widget(base: str, scenario: str, out: Path, *extra: str) -> dict[str, Any]:
    from tests.e2e.conftest import CHROMIUM, JS_DIR

    done = subprocess.run(["node", str(JS_DIR / "widget.mjs"), "--base", base, "--scenario", scenario,
                           "--out", str(out), "--chromium", CHROMIUM, "--timeout", "600000", *extra],
                          capture_output=True, text=True, timeout=1200, env=os.environ)
    lines = done.stdout.strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1]) if lines else {"ok": False, "error": done.stderr}
    if not report["ok"]:
        raise SystemExit(f"widget.mjs --scenario {scenario}: {report['error']}")
    return report


def neighbourhood(tmp: Path) -> None:
    from tests.e2e.conftest import serve_embedded

    with serve_embedded(tmp, tmp / "empty") as server:
        report = widget(server.base, "bench", tmp)
    print(f"# WebGL renderer: {report['webgl']}")
    runs = report["neighbourhood200"]
    painted = [r["paintedMs"] for r in runs]
    inside = [r["ms"] for r in runs]
    print(f"neighbourhood 200 nodes (svg, setData): {runs[0]['nodes']} nodes {runs[0]['edges']} edges; drawn "
          f"(to paint) median {statistics.median(painted):.0f} ms, max {max(painted):.0f} ms; in the widget "
          f"median {statistics.median(inside):.0f} ms ({len(runs)} runs)")


def fleet(data_dir: Path, args: argparse.Namespace) -> None:
    from tests.e2e.conftest import _DIRECT, serve_embedded
    from tests.e2e.simfleet import fill

    if not args.reuse:
        took = asyncio.run(fill(data_dir, args.services, args.minutes, args.seed))
        print(f"simulated fleet: {args.services} services, {args.minutes:g} minute(s) of traffic through the "
              f"pipeline into {data_dir} in {took:.0f} s")
    with serve_embedded(data_dir.parent, data_dir) as server:
        t0 = time.monotonic()
        query = f"?format=json&window={args.window}" if args.window else "?format=json"
        with _DIRECT.open(f"{server.base}/export{query}", timeout=600) as resp:
            truth = json.loads(resp.read())
        print(f"server: /export?format=json {len(truth['nodes'])} nodes, {len(truth['edges'])} edges "
              f"(truncated: {truth['truncated']}) in {time.monotonic() - t0:.1f} s")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shot = f"widget-fleet-server-{args.services}.png"
        extra = ["--shot", shot, *(["--window", args.window] if args.window else [])]
        for run in range(args.runs):
            r = widget(server.base, "fleet", ARTEFACTS, *extra, *(["--frames"] if run == 0 else []))
            f = r["fleet"]
            same = (f["drawnNodes"], f["drawnEdges"]) == (len(truth["nodes"]), len(truth["edges"]))
            print(f"fleet from the server (webgl), run {run + 1}: loaded and painted "
                  f"{r['loadedMs'] / 1000:.1f} s after navigation ({f['pages']} pages of Query.topology); "
                  f"drawn (last answer to paint) "
                  f"{f['paintedMs']:.0f} ms, in the widget {f['ms']:.0f} ms; canvas holds {f['drawnNodes']} "
                  f"nodes, {f['drawnEdges']} edges: {'equal to' if same else 'DIFFERENT FROM'} the server's")
            if "frames" in r:
                frames(r["frames"])
        print(f"screenshot: {ARTEFACTS / shot}")


def frames(fr: dict[str, Any]) -> None:
    s = fr["settings"]
    print(f"frames while the camera moves (animations, 2 x 1.5 s; the widget: nodes {s['node']}, "
          f"edges {s['edge']}, "
          f"hideEdgesOnMove {s['hideEdgesOnMove']}, hideLabelsOnMove {s['hideLabelsOnMove']}, "
          f"pixelRatio {s['pixelRatio']}):")
    print(f"  floors: the page idle {fr['idleFps']:.1f} frames/s; one WebGL canvas cleared per frame "
          f"{fr['oneWebglFps']:.1f}; 3 WebGL + 4 2D canvases (sigma's layers) {fr['sevenLayersFps']:.1f}")
    for r in fr["runs"]:
        print(f"  {r['node']}: {r['fps']:.1f} frames/s ({r['frames']} frames); "
              f"sigma render() {r['jsMs']:.1f} ms JavaScript; "
              f"a moving frame rasterised {r['movingFrameMs']:.0f} ms")
    still = fr["stillFrameMs"]
    print(f"  a still frame (edges, labels) rasterised: arrows {still['arrow']:.0f} ms, "
          f"lines {still['line']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000, help="services of the simulated fleet")
    p.add_argument("--minutes", type=float, default=1.0, help="simulated minutes of traffic (ending now)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", type=Path, help="where to build the fleet's store (default: temporary)")
    p.add_argument("--reuse", action="store_true", help="serve the store already in --data-dir")
    p.add_argument("--window", help="the widget's and the export's window (e.g. 6h for a reused store)")
    p.add_argument("--runs", type=int, default=1, help="page loads of the fleet (frames in the first)")
    p.add_argument("--no-neighbourhood", dest="neighbourhood", action="store_false")
    args = p.parse_args(argv)
    if args.reuse and not args.data_dir:
        p.error("--reuse needs --data-dir")
    print(header("widget rendering (bench.widget_render)"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.neighbourhood:
            neighbourhood(Path(tmp))
        fleet(args.data_dir or Path(tmp) / "fleet", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
