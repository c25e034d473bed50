"""Deployment files read back as the processes will see them, and checked with the program's own code.

A container of ours is a ``topology`` command line: its ``command`` + ``args`` (the agent image's entry
point adds ``agent``) are parsed by :func:`service.cli.build_parser`, the parser ``topology`` itself
uses, and its environment must hold only variables that the settings groups of that command read
(``topology/settings.py``, ``service/settings.py``, ``ingest/main.py``, ``agent/settings.py``). Then
the groups are resolved from the flags and the environment exactly as the command does, so a value a
setting refuses, or settings that contradict each other, fail here rather than in a pod; a server
must also pass the exposure check `serve` makes before listening (authentication or --insecure).

Secrets are files: a variable or flag naming a file under a Secret volume must name a key that volume
mounts; for the resolution it is replaced by a real file (the settings check that files exist).
Kubernetes' ``$(VAR)`` references in arguments are expanded from the container's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.settings import AgentSettings
from ingest.main import INGEST_DEFAULTS, WORKER_DEFAULTS, IngestSettings, WorkerSettings
from service.cli import SERVE_STORE, build_parser
from service.config import ServiceConfig
from service.security import check_exposure
from service.settings import ServeSettings
from topology.settings import KafkaSettings, LogSettings, StoreSettings, resolve, rows

# The image entry points that are `topology <command>` already (docker/agent/entrypoint.sh).
ENTRYPOINTS = {"topology-agent": ["agent"]}
# Placeholder values of variables Kubernetes fills in (fieldRef): a node name, a pod name.
FIELD_VALUES = {"spec.nodeName": "node-1", "metadata.name": "pod-1"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # Kubernetes' $(VAR) in command and args


@dataclass
class Container:
    """One container of a workload: where it is, what runs, its environment, its Secret files."""

    where: str  # "Deployment/x container y"
    argv: list[str]  # after `topology`
    env: dict[str, str]
    secret_files: dict[str, str]  # mounted path -> "secret/key"
    spec: dict[str, Any]
    pod: dict[str, Any]


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def image_repository(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[0].split("@", 1)[0]


def containers(docs: list[dict[str, Any]], *, ours: set[str]) -> Iterator[Container]:
    """The containers of ``docs`` whose image repository (last path part) is in ``ours``."""
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        pod = pod_spec(doc)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("containers", []):
            repo = image_repository(c["image"])
            if repo not in ours:
                continue
            where = f"{doc['kind']}/{doc['metadata']['name']} container {c['name']}"
            env = _env(c, where)
            files = _secret_files(c, volumes)
            argv = _argv(c, repo, env, where)
            yield Container(where, argv, env, files, c, pod)


def _env(c: Mapping[str, Any], where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in c.get("env", []):
        name = e["name"]
        assert name not in env, f"{where}: {name} is set twice"
        if "value" in e:
            env[name] = str(e["value"])
        else:
            ref = e["valueFrom"]
            assert set(ref) == {"fieldRef"}, (
                f"{where}: {name} comes from {sorted(ref)}: a secret goes into a file (the *_FILE "
                "settings), other values are literal")
            env[name] = FIELD_VALUES[ref["fieldRef"]["fieldPath"]]
    return env


def _secret_files(c: Mapping[str, Any], volumes: Mapping[str, Any]) -> dict[str, str]:
    files: dict[str, str] = {}
    for m in c.get("volumeMounts", []):
        secret = volumes[m["name"]].get("secret")
        if secret is None:
            continue
        assert m.get("readOnly") is True, f"Secret volume {m['name']} is mounted writable"
        for item in secret["items"]:
            files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = f"{secret['secretName']}/{item['key']}"
    return files


def _argv(c: Mapping[str, Any], repo: str, env: Mapping[str, str], where: str) -> list[str]:
    command = list(c.get("command", []))
    if command:
        assert command[0] == "topology", f"{where}: runs {command[0]}, not topology"
        argv = command[1:] + list(c.get("args", []))
    else:
        assert repo in ENTRYPOINTS, f"{where}: no command, and {repo} has no known entry point"
        argv = ENTRYPOINTS[repo] + list(c.get("args", []))

    def expand(m: re.Match[str]) -> str:
        assert m.group(1) in env, f"{where}: $({m.group(1)}) is not in the container's environment"
        return env[m.group(1)]

    return [REFERENCE.sub(expand, str(a)) for a in argv]


def parse(argv: list[str], where: str) -> argparse.Namespace:
    """``argv`` parsed by the real ``topology`` parser; a refusal fails with argparse's own words."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{where}: `topology {' '.join(argv)}` does not parse: "
                             f"{err.getvalue().strip()}") from None


def _command_groups(args: argparse.Namespace, env: Mapping[str, str]) -> list[tuple[type, dict[str, Any]]]:
    """The settings groups the command resolves, with its own defaults (as service/cli.py and
    ingest/main.py and agent/cli.py do; Kafka only when the command uses it)."""
    if args.command == "serve":
        groups: list[tuple[type, dict[str, Any]]] = [(ServiceConfig, {}), (StoreSettings, dict(SERVE_STORE)),
                                                     (ServeSettings, {}), (WorkerSettings, {})]
        if resolve(ServeSettings, args, env).kafka:
            groups.append((KafkaSettings, {}))
    elif args.command == "ingest":
        groups = [(IngestSettings, {}), (KafkaSettings, {}), (WorkerSettings, dict(WORKER_DEFAULTS))]
        if resolve(IngestSettings, args, env).writes_stores:
            groups.append((StoreSettings, dict(INGEST_DEFAULTS)))
    elif args.command == "agent":
        groups = [(AgentSettings, {})]
        if resolve(AgentSettings, args, env).kafka:
            groups.append((KafkaSettings, {}))
    else:
        raise AssertionError(f"no deployment runs `topology {args.command}`")
    return [(LogSettings, {}), *groups]


def check(c: Container, tmp: Path) -> dict[type, Any]:
    """Parse and resolve one container's command line and environment as the command will; returns
    the resolved settings by group. Raises AssertionError naming the container and the setting."""
    files = _real_files(c, tmp)
    argv = [_swap(a, files) for a in c.argv]
    env = {k: _swap(v, files) for k, v in c.env.items()}
    args = parse(argv, c.where)
    try:
        groups = _command_groups(args, env)
    except ValueError as e:  # ConfigError of the setting that decides which groups count
        raise AssertionError(f"{c.where}: {e}") from None
    read = {r.env for cls, _ in groups for r in rows(cls)}
    line = [*c.spec.get("command", []), *c.spec.get("args", [])]
    substituted = set(REFERENCE.findall(" ".join(map(str, line))))
    stray = sorted(set(env) - read - substituted)
    assert not stray, f"{c.where}: `topology {args.command}` reads no variable {', '.join(stray)}"
    resolved: dict[type, Any] = {}
    for cls, defaults in groups:
        try:
            resolved[cls] = resolve(cls, args, env, defaults=defaults)
        except ValueError as e:  # ConfigError: the message names the variable
            raise AssertionError(f"{c.where}: {e}") from None
    if ServiceConfig in resolved:  # what `serve` checks before it listens (README: Security)
        try:
            check_exposure(resolved[ServiceConfig])
        except ValueError as e:
            raise AssertionError(f"{c.where}: {e}") from None
    kafka = resolved.get(ServeSettings, resolved.get(AgentSettings))
    if kafka is not None and isinstance(kafka.kafka, str):  # --kafka HOST:PORT names the servers
        resolved[KafkaSettings] = resolve(KafkaSettings, args, env, bootstrap=kafka.kafka)
    return resolved


def _real_files(c: Container, tmp: Path) -> dict[str, str]:
    """Every path a value names under a Secret mount -> a real file standing in for it. A path under a
    Secret mount that the mount does not hold fails."""
    mounts = {p.rsplit("/", 1)[0] for p in c.secret_files}
    out: dict[str, str] = {}
    for value in [*c.argv, *c.env.values()]:
        for path in re.findall(r"(/[\w./-]+)", value):
            if path.rsplit("/", 1)[0] not in mounts:
                continue
            assert path in c.secret_files, f"{c.where}: {path} is not a key its Secret volume mounts"
            stand_in = tmp / c.secret_files[path].replace("/", "_")
            stand_in.write_text("stand-in\n")
            out[path] = str(stand_in)
    return out


def _swap(value: str, files: Mapping[str, str]) -> str:
    for path, stand_in in files.items():
        value = value.replace(path, stand_in)
    return value
