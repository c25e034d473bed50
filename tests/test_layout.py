"""The house's import rules, read from the source: one road in, nothing imports the command line.

* ``topology/`` (the pure core) imports nothing of ``service/``, ``ingest/`` or ``agent/``, and no I/O
  library outside ``topology/store/`` (the store implementations are the core's one I/O boundary:
  SQLite, Gremlin, the data-directory lock).
* ``topology/wire/`` only decodes: it imports nothing from ``topology/stages/``.
* No module imports the command line (``service/cli.py``); the CLI imports the rest.
* ``ingest/`` (the Kafka shell) does not import the GraphQL service.
* Every aiokafka client is made with ``**client_options(...)`` (ingest/security.py), so none of them
  misses the transport security of ``KafkaSettings``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("topology", "service", "ingest", "agent", "bench")
IO_LIBRARIES = ("aiokafka", "gremlin_python", "httpx", "starlette", "uvicorn", "strawberry", "bcc", "socket",
                "urllib.request", "requests")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute, including imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.append(mod)
            names.extend(f"{mod}.{a.name}" for a in node.names)
    return names


def _offenders(package: str, forbidden: tuple[str, ...], exempt: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(exempt):
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{rel} imports {name}")
    return sorted(set(found))


def test_the_core_imports_no_io_and_no_shell() -> None:
    assert _offenders("topology", ("service", "ingest", "agent")) == []
    assert _offenders("topology", IO_LIBRARIES, exempt=("topology/store/",)) == []


def test_wire_only_decodes_and_imports_nothing_from_the_stages() -> None:
    found = [o for o in _offenders("topology", ("topology.stages",)) if o.startswith("topology/wire/")]
    assert found == []


def test_nothing_imports_the_command_line() -> None:
    found = [o for p in PACKAGES for o in _offenders(p, ("service.cli",), exempt=("service/cli.py",))]
    assert found == []


def test_the_kafka_shell_does_not_import_the_graphql_service() -> None:
    assert _offenders("ingest", ("service",)) == []


def test_the_rules_see_imports_inside_functions() -> None:
    """The checker itself: a function-level and a relative import are both found."""
    sample = ROOT / "service" / "cli.py"
    names = _imports(sample)
    assert any(n.startswith("service.") for n in names)


KAFKA_CLIENTS = ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient")


def _kafka_clients_without_security(path: Path) -> list[str]:
    """``file:line`` of each aiokafka client made in ``path`` without ``**client_options(...)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in KAFKA_CLIENTS:
            continue
        spread = [k.value for k in node.keywords if k.arg is None]
        if not any(isinstance(v, ast.Call) and getattr(v.func, "id", None) == "client_options"
                   for v in spread):
            found.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {name}")
    return found


def test_every_kafka_client_carries_the_transport_security() -> None:
    found = [hit for package in PACKAGES for path in _modules(package)
             for hit in _kafka_clients_without_security(path)]
    assert found == [], "make aiokafka clients with **client_options(kafka) (ingest/security.py)"
    made = [p for package in PACKAGES for p in _modules(package)
            if any(c + "(" in p.read_text(encoding="utf-8") for c in KAFKA_CLIENTS)]
    assert len(made) >= 6  # the rule sees the clients (worker, publisher, topics, checkpoint, agent, bench)
