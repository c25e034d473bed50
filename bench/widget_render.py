"""Rendering of the ``<service-topology>`` widget in headless Chromium: a 200-node neighbourhood (layered
SVG, dagre) and a 10,000-service fleet (sigma.js WebGL; ForceAtlas2 in a worker), pan/zoom frames/s.

    .venv/bin/python -m bench.widget_render

A ``topology serve`` over an empty store serves the module; ``tests/js/widget.mjs --scenario bench``
hands the widget synthetic graphs with ``setData`` (the data "arrives" at that call) and times until two
animation frames later (painted). WebGL is Chromium's software renderer (SwiftShader) on this machine:
there is no GPU. Targets (issue 11): neighbourhood <= 500 ms, fleet <= 3 s, pan/zoom >= 30 frames/s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.machine import header

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.e2e.conftest import CHROMIUM, JS_DIR, serve_embedded

    print(header("widget rendering (bench.widget_render)"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with serve_embedded(root, root / "store") as server:
            done = subprocess.run(["node", str(JS_DIR / "widget.mjs"), "--base", server.base,
                                   "--scenario", "bench", "--out", tmp, "--chromium", CHROMIUM,
                                   "--timeout", "120000"],
                                  capture_output=True, text=True, timeout=600, env=os.environ)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        print(report["error"], file=sys.stderr)
        return 1
    print(f"# WebGL renderer: {report['webgl']}")
    for name, runs in (("neighbourhood 200 nodes (svg)", report["neighbourhood200"]),
                       ("fleet 10,000 services (webgl)", report["fleet10k"])):
        painted = [r["paintedMs"] for r in runs]
        inside = [r["ms"] for r in runs]
        print(f"{name}: {runs[0]['nodes']} nodes {runs[0]['edges']} edges; drawn (to paint) median "
              f"{statistics.median(painted):.0f} ms, max {max(painted):.0f} ms; in the widget median "
              f"{statistics.median(inside):.0f} ms ({len(runs)} runs)")
    fps = report["panZoomFps"]
    print(f"fleet pan/zoom (mouse drags and wheel): {', '.join(f'{f:.1f}' for f in fps)} frames/s "
          f"(3 runs of 3 s; mode after: {report['afterInteraction']}); the same page idle: "
          f"{report['idleFps']:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
