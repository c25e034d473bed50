"""The stage specs, the runner and checkpoints import no Kafka client: only the worker (and the tools
that create topics or publish) talk to a broker, so everything else runs from lists."""

from __future__ import annotations

import subprocess
import sys

PURE = ("ingest.record", "ingest.logic", "ingest.runner", "ingest.checkpoint", "ingest.envelope",
        "ingest.reorder", "ingest.splitter", "ingest.topics", "ingest.network", "ingest.ipc", "ingest.trace",
        "ingest.final", "ingest.meta", "tests.ingest.testing")


def _import_without_aiokafka(modules: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    code = "import sys; sys.modules['aiokafka'] = None\n" + "".join(f"import {m}\n" for m in modules)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)


def test_specs_runner_and_checkpoints_import_without_a_kafka_client() -> None:
    done = _import_without_aiokafka(PURE)
    assert done.returncode == 0, done.stderr


def test_the_worker_is_where_the_kafka_client_comes_in() -> None:
    done = _import_without_aiokafka(("ingest.worker",))
    assert done.returncode != 0 and "aiokafka" in done.stderr
