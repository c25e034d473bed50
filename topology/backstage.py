"""Backstage's software catalog beside ours: import ``Component`` entities, export observed dependencies.

Backstage describes each service in a ``catalog-info.yaml`` (its "descriptor format": one entity per
YAML document, ``apiVersion: backstage.io/v1alpha1``, ``kind``, ``metadata``, ``spec``). This module
works on the parsed documents (the YAML is read with ``yaml.safe_load_all`` by :mod:`service.backstage`)
and is pure.

Import (:func:`import_entities`): each ``kind: Component`` becomes one catalog record
(:meth:`topology.catalog.ServiceInfo.to_dict`'s shape), which then passes the catalog admission
(:func:`topology.admit.admit_catalog`, the one road every catalog record takes), so an entity the
catalog would refuse is rejected with the admission's reason:

==========================================  =================================================================
catalog field                               from
==========================================  =================================================================
``name``                                    annotation ``service-topology.io/name`` (the ``service.name`` the
                                            service reports, when it differs), else ``metadata.name``
``owner.team``                              ``spec.owner``, an entity reference
                                            ``[group:|user:][namespace/]name``: its name part
``owner.email`` / ``chat`` / ``oncall``     annotations ``service-topology.io/email``, ``/chat``, ``/oncall``
``tier``                                    annotation ``service-topology.io/tier``: an integer 0 (most
                                            critical) to 9
``domain``                                  annotation ``service-topology.io/domain``, else ``spec.domain``,
                                            else the name part of ``spec.system``
``links``                                   ``metadata.links`` entries whose ``type`` is ``logs``, ``traces``
                                            or ``metrics``
==========================================  =================================================================

Backstage's own rules are checked first (its ``apiVersion``, names as :data:`ENTITY_NAME`, a
Component's required ``spec.type``, ``spec.lifecycle`` and ``spec.owner``); ``spec.lifecycle`` and
``spec.type`` are checked and reported but not kept (the catalog has no field for them). Entities of
Backstage's other kinds (``System``, ``API``, ``Resource``, ``Group``, ...) are skipped with a note;
an unknown kind, another ``apiVersion``, a missing name or an owner that is not an entity reference
is rejected with the reason. Two entities naming the same service are a rejection too (which would
win is not for us to guess).

Export (:func:`depends_on_patches`): the edges of our map (the ``service-topology/v1`` JSON of
``GET /export``) become ``spec.dependsOn`` suggestions per component: ``component:<name>`` for a call
to a service (or an uninstrumented peer), ``resource:<name>`` for a database or a message broker;
external hosts and the outside world (``user``) are left out. Given the components' own entities, the
names are theirs (the ``service-topology.io/name`` annotation read backwards), only those components
get a patch, and a patch lists what the entity declares plus what was observed (a merge replaces
lists), written only when it adds something.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from topology.admit import admit_catalog
from topology.catalog import ServiceInfo

__all__ = ["ANNOTATIONS", "API_VERSION", "API_VERSIONS", "ENTITY_NAME", "Outcome", "Verdict",
           "depends_on_patches", "entity_ref", "import_entities"]

API_VERSION = "backstage.io/v1alpha1"
API_VERSIONS = (API_VERSION, "backstage.io/v1beta1")  # the versions of Backstage's own kinds
PREFIX = "service-topology.io/"
ANNOTATIONS = {k: PREFIX + k for k in ("name", "tier", "domain", "email", "chat", "oncall")}
#: Backstage's entity name: 1-63 characters, letters and digits in runs separated by one of - _ .
ENTITY_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*")
NAME_MAX = 63
#: Backstage's namespace: lower-case letters and digits in runs separated by -, at most 62.
NAMESPACE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
NAMESPACE_MAX = 62
#: The kinds Backstage defines (lower case) that are not imported: skipped, not rejected.
OTHER_KINDS = frozenset({"api", "system", "domain", "resource", "group", "user", "location", "template"})
OWNER_KINDS = ("group", "user")
LINK_TYPES = ("logs", "traces", "metrics")
#: Our node kinds -> the Backstage kind a dependency on them is (None: not a dependency to suggest).
DEPENDENCY_KIND = {"SERVICE": "component", "UNINSTRUMENTED": "component", "DATABASE": "resource",
                   "MESSAGING": "resource", "EXTERNAL": None, "USER": None}


class Verdict:
    IMPORTED = "imported"
    SKIPPED = "skipped"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one entity: ``where`` is ``file#document`` (1-based), ``reason`` says why (for
    an imported one: its type and lifecycle), ``info`` is the admitted catalog record."""

    where: str
    entity: str | None
    verdict: str
    reason: str
    info: ServiceInfo | None = None

    def line(self) -> str:
        name = f" {self.entity}" if self.entity else ""
        return f"{self.where}{name}: {self.verdict}: {self.reason}"


class _Bad(ValueError):
    pass


def import_entities(documents: Iterable[tuple[str, Any]]) -> list[Outcome]:
    """One :class:`Outcome` per entity of ``(where, parsed YAML document)`` pairs (empty documents are
    not entities)."""
    out: list[Outcome] = []
    seen: dict[str, str] = {}  # service name -> where
    for where, doc in documents:
        if doc is None:
            continue
        name = _entity_name(doc)
        try:
            kind = _kind(doc)
            if kind != "component":
                out.append(Outcome(where, name, Verdict.SKIPPED, f"kind {doc['kind']} is not imported "
                                                                 "(only Component)"))
                continue
            record, note = _record(doc)
        except _Bad as e:
            out.append(Outcome(where, name, Verdict.REJECTED, str(e)))
            continue
        adm = admit_catalog(json.dumps(record).encode(), None)
        if adm.kept is None:
            out.append(Outcome(where, name, Verdict.REJECTED, f"the catalog refuses it: {adm.reason}"))
            continue
        info = adm.kept[0]
        if info.name in seen:
            out.append(Outcome(where, name, Verdict.REJECTED,
                               f"service {info.name!r} is also described by {seen[info.name]}"))
            continue
        seen[info.name] = where
        out.append(Outcome(where, name, Verdict.IMPORTED, note, info))
    return out


def _entity_name(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name[:NAME_MAX + 1] if isinstance(name, str) and name else None


def _kind(doc: Any) -> str:
    if not isinstance(doc, dict):
        raise _Bad(f"an entity is a mapping (apiVersion, kind, metadata, spec), got {type(doc).__name__}")
    api = doc.get("apiVersion")
    if api not in API_VERSIONS:
        raise _Bad(f"apiVersion {api!r:.60} is not Backstage's ({' or '.join(API_VERSIONS)})")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise _Bad("kind is missing (Component is imported)")
    if kind.lower() != "component" and kind.lower() not in OTHER_KINDS:
        raise _Bad(f"kind {kind!r:.60} is not a Backstage kind (Component is imported)")
    return kind.lower()


def _record(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The catalog record of a Component entity, and the note on what was not kept."""
    meta = _mapping(doc.get("metadata"), "metadata")
    name = meta.get("name")
    if name is None:
        raise _Bad("metadata.name is missing")
    _check_entity_name(name, "metadata.name")
    ann = _mapping(meta.get("annotations"), "metadata.annotations")
    for k, v in ann.items():
        if not isinstance(v, str):
            raise _Bad(f"annotation {k!r:.80} must be a string, got {type(v).__name__}")
    spec = _mapping(doc.get("spec"), "spec")
    for field in ("type", "lifecycle", "owner"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise _Bad(f"spec.{field} is missing (a Component has a type, a lifecycle and an owner)")
    _, _, team = entity_ref(spec["owner"], OWNER_KINDS, "spec.owner")
    owner = {"team": team, **{k: ann.get(ANNOTATIONS[k]) for k in ("email", "chat", "oncall")}}
    record: dict[str, Any] = {"name": ann.get(ANNOTATIONS["name"], name), "owner": owner}
    tier = ann.get(ANNOTATIONS["tier"])
    if tier is not None:
        record["tier"] = int(tier) if tier.strip().isdigit() else tier  # admission says what is wrong
    domain = ann.get(ANNOTATIONS["domain"]) or spec.get("domain")
    if domain is None and spec.get("system") is not None:
        domain = entity_ref(spec["system"], ("system",), "spec.system")[2]
    if domain is not None:
        record["domain"] = domain
    links = _links(meta.get("links"))
    if links:
        record["links"] = links
    return record, f"type {spec['type']}, lifecycle {spec['lifecycle']} (not kept)"


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _check_entity_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or len(name) > NAME_MAX or not ENTITY_NAME.fullmatch(name):
        raise _Bad(f"{what} {name!r:.80} is not a Backstage name (1-{NAME_MAX} letters and digits, "
                   "separated by single - _ or .)")
    return name


def entity_ref(ref: Any, kinds: tuple[str, ...], what: str) -> tuple[str | None, str | None, str]:
    """``(kind, namespace, name)`` of an entity reference ``[kind:][namespace/]name`` whose kind, if
    given, is one of ``kinds`` (compared in lower case)."""
    if not isinstance(ref, str) or not ref:
        raise _Bad(f"{what} must be an entity reference string")
    shape = f"[{'|'.join(k + ':' for k in kinds)}][namespace/]name"
    kind, sep, rest = ref.partition(":")
    if not sep:
        kind, rest = "", ref
    if sep and kind.lower() not in kinds:
        raise _Bad(f"{what} {ref!r:.80} is not an entity reference {shape}")
    namespace, slash, name = rest.rpartition("/")
    if slash and (len(namespace) > NAMESPACE_MAX or not NAMESPACE.fullmatch(namespace)):
        raise _Bad(f"{what} {ref!r:.80} is not an entity reference {shape}")
    if len(name) > NAME_MAX or not ENTITY_NAME.fullmatch(name):
        raise _Bad(f"{what} {ref!r:.80} is not an entity reference {shape}")
    return (kind.lower() or None, namespace or None, name)


def _links(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise _Bad(f"metadata.links must be a list, got {type(value).__name__}")
    out: dict[str, str] = {}
    for link in value:
        if not isinstance(link, dict) or not isinstance(link.get("url"), str):
            raise _Bad("a metadata.links entry is a mapping with a url")
        kind = link.get("type")
        if isinstance(kind, str) and kind.lower() in LINK_TYPES:
            out[kind.lower()] = link["url"]
    return out


# -- export -------------------------------------------------------------------------------------------
def depends_on_patches(graph: Mapping[str, Any], entities: Iterable[Any] | None = None,
                       ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``({entity name: patch}, notes)``: a ``spec.dependsOn`` patch per component that calls something
    (see the module docstring) from a ``service-topology/v1`` export, and a note per name left out.

    ``entities``: the parsed documents of the components' ``catalog-info.yaml`` files (none: every
    calling service, under its own name)."""
    if not isinstance(graph, Mapping) or graph.get("format") != "service-topology/v1":
        raise ValueError("the graph is not a service-topology/v1 export (GET /export?format=json)")
    kinds = {n.get("name"): n.get("kind") for n in graph.get("nodes") or () if isinstance(n, Mapping)}
    declared: dict[str, set[str]] | None = None  # entity -> refs it declares
    entity_of: dict[str, str] = {}  # service name -> entity name
    if entities is not None:
        declared = {}
        for doc in entities:
            if not isinstance(doc, dict) or str(doc.get("kind", "")).lower() != "component":
                continue
            name = _entity_name(doc)
            if name is None:
                continue
            ann = (doc.get("metadata") or {}).get("annotations") or {}
            entity_of[str(ann.get(ANNOTATIONS["name"], name))] = name
            deps = (doc.get("spec") or {}).get("dependsOn") or []
            declared[name] = {str(d) for d in deps if isinstance(d, str)}
    notes: list[str] = []
    found: dict[str, set[str]] = {}
    for e in graph.get("edges") or ():
        source, target = e.get("source"), e.get("target")
        if kinds.get(source) != "SERVICE":
            continue
        ref_kind = DEPENDENCY_KIND.get(str(kinds.get(target)))
        if ref_kind is None:
            continue
        component = entity_of.get(source, source) if declared is None or source in entity_of else None
        if component is None:
            continue
        name = entity_of.get(target, target)
        if not (isinstance(name, str) and len(name) <= NAME_MAX and ENTITY_NAME.fullmatch(name)):
            notes.append(f"{source} -> {target}: {name!r:.80} is not a Backstage name, not suggested")
            continue
        if not (len(component) <= NAME_MAX and ENTITY_NAME.fullmatch(component)):
            notes.append(f"{source}: not a Backstage name, no patch")
            continue
        found.setdefault(component, set()).add(f"{ref_kind}:{name}")
    patches: dict[str, dict[str, Any]] = {}
    for component, refs in sorted(found.items()):
        have = (declared or {}).get(component, set())
        normal = {_normal(r) for r in have}
        new = {r for r in refs if _normal(r) not in normal}
        if not new:
            continue
        patches[component] = {"apiVersion": API_VERSION, "kind": "Component", "metadata": {"name": component},
                              "spec": {"dependsOn": sorted(have) + sorted(new)}}
    return patches, sorted(set(notes))


def _normal(ref: str) -> str:
    """A reference compared as Backstage resolves it: kind in lower case, the default namespace implied."""
    kind, sep, rest = ref.partition(":")
    if not sep:
        kind, rest = "component", ref
    namespace, _, name = rest.rpartition("/")
    return f"{kind.lower()}:{(namespace or 'default').lower()}/{name.lower()}"
