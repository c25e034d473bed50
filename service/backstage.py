"""``topology backstage import|export``: the shell around :mod:`topology.backstage`.

``import FILE...`` reads Backstage ``catalog-info.yaml`` files (every YAML document an entity, read with
``yaml.safe_load_all``: plain data, never objects), converts the ``Component`` entities to catalog
records through the catalog admission, and sends them all in one ``POST /ingest/catalog`` (``--url``;
the admin token when the server has authentication) or writes the catalog JSON (``--output`` or
standard output). A catalog batch is all or nothing, and so is an import: if any entity is rejected,
each rejection is one line on stderr and nothing is sent.

``export [FILE...]`` reads the map as ``GET /export?format=json`` answers it (``--url``, or a saved
file with ``--graph``) and writes one ``spec.dependsOn`` patch per component (``--output DIR``:
``DIR/<name>.yaml``; else the YAML documents one after the other on standard output). The FILEs,
when given, are the components' ``catalog-info.yaml``: names and declared dependencies come from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from topology.backstage import Verdict, depends_on_patches, import_entities

__all__ = ["BackstageError", "read_documents", "run_export", "run_import"]


class BackstageError(Exception):
    """An import or export that cannot be done; the message says why (one line)."""


def read_documents(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """``(file#n, document)`` for every YAML document of every file (n from 1)."""
    out: list[tuple[str, Any]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BackstageError(f"cannot read {path}: {e}") from None
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise BackstageError(f"{path} is not YAML: {' '.join(str(e).split())}") from None
        out.extend((f"{path}#{i}", doc) for i, doc in enumerate(docs, 1))
    return out


def run_import(settings: Any, files: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``topology backstage import`` (``settings``: :class:`service.settings.BackstageSettings`)."""
    outcomes = import_entities(read_documents(files))
    for o in outcomes:
        if o.verdict != Verdict.IMPORTED:
            err.write(o.line() + "\n")
    rejected = [o for o in outcomes if o.verdict == Verdict.REJECTED]
    if rejected:
        raise BackstageError(f"{len(rejected)} of {len(outcomes)} entities rejected (above); "
                             "nothing imported")
    infos = [o.info.to_dict() for o in outcomes if o.info is not None]
    if not infos:
        raise BackstageError(f"no Component entity in {', '.join(files)}")
    payload = json.dumps(infos, indent=1 if settings.url is None else None)
    if settings.url is None:
        _write(payload + "\n", settings.output, out)
        return 0
    _post_catalog(settings.url, payload.encode(), settings.token)
    err.write(f"imported {len(infos)} components into {settings.url}\n")
    return 0


def run_export(settings: Any, files: Sequence[str], out: TextIO, err: TextIO) -> int:
    """``topology backstage export`` (``settings``: :class:`service.settings.BackstageSettings`)."""
    graph = _graph(settings)
    entities = [doc for _, doc in read_documents(files)] if files else None
    try:
        patches, notes = depends_on_patches(graph, entities)
    except ValueError as e:
        raise BackstageError(str(e)) from None
    for note in notes:
        err.write(note + "\n")
    if settings.output is not None:
        root = Path(settings.output)
        try:
            root.mkdir(parents=True, exist_ok=True)
            for name, patch in patches.items():
                (root / f"{name}.yaml").write_text(_dump(patch), encoding="utf-8")
        except OSError as e:
            raise BackstageError(f"cannot write the patches to {root}: {e}") from None
    else:
        out.write("---\n".join(_dump(p) for p in patches.values()))
    err.write(f"{len(patches)} components with dependencies to add\n")
    return 0


def _dump(patch: dict[str, Any]) -> str:
    return str(yaml.safe_dump(patch, sort_keys=False, default_flow_style=False))


def _graph(settings: Any) -> Any:
    if settings.graph is not None:
        try:
            return json.loads(Path(settings.graph).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise BackstageError(f"cannot read {settings.graph}: {e}") from None
        except ValueError as e:
            raise BackstageError(f"{settings.graph} is not JSON: {e}") from None
    if settings.url is None:
        raise BackstageError("give the map: --url of a server, or --graph FILE "
                             "(topology export --format json)")
    from service.export import fetch_export

    params = {"format": "json", "window": settings.window,
              **({"layers": settings.layers} if settings.layers else {})}
    try:
        return fetch_export(settings.url, params, settings.token).json()
    except ValueError as e:
        raise BackstageError(f"the server's export is not JSON: {e}") from None


def _post_catalog(url: str, payload: bytes, token: str | None) -> None:
    from service.client import request

    r = request("POST", url, "/ingest/catalog", token, content=payload,
                headers={"content-type": "application/json"})
    if r.status_code != 200:
        raise BackstageError(f"the server refused the catalog ({r.status_code}): "
                             f"{' '.join(r.text.split())[:300]}")


def _write(text: str, path: str | None, out: TextIO) -> None:
    if path is None:
        out.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise BackstageError(f"cannot write {path}: {e}") from None
