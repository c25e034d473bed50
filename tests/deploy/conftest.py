"""Helm for the deployment tests, built from its Go module source by docker/helm/build-helm.sh (once per
version, into var/tools; no downloaded binary). Without Go, or when the build fails, the chart tests
skip on a developer's machine and fail with ``CI=true`` (:func:`tests.conftest.require`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "docker" / "helm" / "service-topology"
EXAMPLES = ROOT / "docker" / "helm" / "examples"
BUILD = ROOT / "docker" / "helm" / "build-helm.sh"
RELEASE, NAMESPACE = "topology", "topology"

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The helm command line, with its cache, config and data homes in a temporary directory."""
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    require(done.returncode == 0, f"helm built from Go modules ({BUILD.name}: {done.stderr.strip()[-500:]})")
    home = tmp_path_factory.mktemp("helm-home")
    return ["env", f"HELM_CACHE_HOME={home}/cache", f"HELM_CONFIG_HOME={home}/config",
            f"HELM_DATA_HOME={home}/data", done.stdout.strip()]


def run_helm(helm: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*helm, *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="session")
def render(helm: list[str]) -> Render:
    """``render(*value files, set={...})``: the chart's manifests, one dict per document. A refusal
    (the chart's ``fail``) raises :class:`RenderError` with helm's message."""

    def render_chart(*values: str | Path, set: dict[str, str] | None = None) -> list[dict[str, Any]]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for v in values:
            args += ["--values", str(v)]
        for key, value in (set or {}).items():
            args += ["--set", f"{key}={value}"]
        done = run_helm(helm, *args)
        if done.returncode != 0:
            raise RenderError(done.stderr.strip())
        return [d for d in yaml.safe_load_all(done.stdout) if d]

    return render_chart


class RenderError(Exception):
    """helm template refused the values."""
