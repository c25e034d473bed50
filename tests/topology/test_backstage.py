"""topology.backstage: Backstage catalog-info.yaml Components -> catalog records through the catalog
admission (bad entities rejected with reasons), and observed edges -> spec.dependsOn patches.

The sample files in ``backstage/`` are written from Backstage's descriptor format
(https://backstage.io/docs/features/software-catalog/descriptor-format/ and the ``ComponentEntityV1alpha1``
reference: ``spec: {type, lifecycle, owner, system?, dependsOn?}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from topology.backstage import Verdict, depends_on_patches, entity_ref, import_entities
from topology.catalog import Owner, ServiceInfo

HERE = Path(__file__).parent / "backstage"


def documents(name: str) -> list[tuple[str, Any]]:
    docs = yaml.safe_load_all((HERE / name).read_text(encoding="utf-8"))
    return [(f"{name}#{i}", d) for i, d in enumerate(docs, 1)]


def test_components_become_catalog_records_and_other_kinds_are_skipped() -> None:
    outcomes = import_entities(documents("catalog-info.yaml"))
    got = [(o.where, o.entity, o.verdict) for o in outcomes]
    assert got == [("catalog-info.yaml#1", "payments", Verdict.SKIPPED),
                   ("catalog-info.yaml#2", "checkout", Verdict.IMPORTED),
                   ("catalog-info.yaml#3", "orders", Verdict.IMPORTED),
                   ("catalog-info.yaml#4", "orders-rest", Verdict.SKIPPED),
                   ("catalog-info.yaml#5", "orders-db", Verdict.SKIPPED)]  # the empty 6th is no entity
    infos = [o.info for o in outcomes if o.info is not None]
    assert infos == [
        ServiceInfo("checkout", tier=0, domain="commerce",
                    owner=Owner("payments-team", "payments@example.com", "#payments"),
                    links={"logs": "https://logs.example.com/checkout"}),
        # the service name from the annotation, the domain from spec.system's name, the owner a user
        ServiceInfo("orders-api", tier=2, domain="order-handling", owner=Owner("jdoe")),
    ]
    assert outcomes[1].reason == "type service, lifecycle production (not kept)"
    assert outcomes[0].reason == "kind System is not imported (only Component)"


def test_bad_entities_are_rejected_with_their_reasons() -> None:
    outcomes = import_entities(documents("bad.yaml"))
    got = [(o.entity, o.verdict, o.reason) for o in outcomes]
    assert [v for _, v, _ in got] == [Verdict.REJECTED] * 10 + [Verdict.IMPORTED, Verdict.REJECTED]
    reasons = [r for _, _, r in got]
    expected = [
        "metadata.name is missing",
        "kind 'Service' is not a Backstage kind",
        "spec.owner 'team:payments' is not an entity reference [group:|user:][namespace/]name",
        "spec.owner 'group:Payments Team' is not an entity reference",
        "spec.lifecycle is missing (a Component has a type, a lifecycle and an owner)",
        "the catalog refuses it: schema: catalog record: catalog record 'bad-tier': 'tier' must be an "
        "integer from 0 to 9",
        "apiVersion 'v1' is not Backstage's (backstage.io/v1alpha1 or backstage.io/v1beta1)",
        "metadata.name 'bad name!' is not a Backstage name",
        "an entity is a mapping (apiVersion, kind, metadata, spec), got list",
        "kind is missing",
        "type service, lifecycle production (not kept)",
        "service 'twice' is also described by bad.yaml#11",
    ]
    for reason, start in zip(reasons, expected, strict=True):
        assert reason.startswith(start), (reason, start)
    assert got[0][0] is None and got[1][0] == "wrong-kind"  # the name, when there is one, is reported
    assert outcomes[0].line() == "bad.yaml#1: rejected: metadata.name is missing"


@pytest.mark.parametrize(("ref", "parts"), [
    ("team-a", (None, None, "team-a")),
    ("group:team-a", ("group", None, "team-a")),
    ("Group:default/team-a", ("group", "default", "team-a")),
    ("user:my-ns/j.doe", ("user", "my-ns", "j.doe")),
])
def test_owner_references(ref: str, parts: tuple[str | None, str | None, str]) -> None:
    assert entity_ref(ref, ("group", "user"), "spec.owner") == parts


@pytest.mark.parametrize("ref", ["", "component:x", "group:", "group:Default/x", "a/b/c", "x" * 64, 7,
                                 "group:team a"])
def test_references_of_another_shape_are_refused(ref: Any) -> None:
    with pytest.raises(ValueError, match=r"spec\.owner"):
        entity_ref(ref, ("group", "user"), "spec.owner")


#: A hand-built map, as GET /export?format=json answers it.
GRAPH: dict[str, Any] = {
    "format": "service-topology/v1",
    "nodes": [{"name": n, "kind": k} for n, k in [
        ("user", "USER"), ("checkout", "SERVICE"), ("payments-api", "SERVICE"), ("orders-api", "SERVICE"),
        ("orders-db", "DATABASE"), ("events", "MESSAGING"), ("stripe.com", "EXTERNAL"),
        ("legacy-fx", "UNINSTRUMENTED"), ("db:10.0.0.7", "DATABASE")]],
    "edges": [{"source": s, "target": t, "layers": ["TRACE"]} for s, t in [
        ("user", "checkout"), ("checkout", "payments-api"), ("checkout", "orders-api"),
        ("checkout", "stripe.com"), ("orders-api", "orders-db"), ("orders-api", "events"),
        ("payments-api", "legacy-fx"), ("payments-api", "db:10.0.0.7")]],
}


def test_observed_dependencies_become_depends_on_patches() -> None:
    patches, notes = depends_on_patches(GRAPH)
    assert {name: p["spec"]["dependsOn"] for name, p in patches.items()} == {
        "checkout": ["component:orders-api", "component:payments-api"],  # not stripe.com, not user
        "orders-api": ["resource:events", "resource:orders-db"],
        "payments-api": ["component:legacy-fx"],
    }
    assert notes == ["payments-api -> db:10.0.0.7: 'db:10.0.0.7' is not a Backstage name, not suggested"]
    assert patches["checkout"] == {"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
                                   "metadata": {"name": "checkout"},
                                   "spec": {"dependsOn": ["component:orders-api", "component:payments-api"]}}


def test_patches_for_the_given_entities_use_their_names_and_keep_what_they_declare() -> None:
    entities = [d for _, d in documents("catalog-info.yaml")]
    patches, _ = depends_on_patches(GRAPH, entities)
    # checkout declares component:payments-api: the patch keeps it and adds the one observed call it lacks;
    # orders-api is the entity "orders"; payments-api has no entity here: no patch
    assert {name: p["spec"]["dependsOn"] for name, p in patches.items()} == {
        "checkout": ["component:payments-api", "component:orders"],
        "orders": ["resource:events", "resource:orders-db"],
    }
    def declaring(entity: dict[str, Any], *refs: str) -> dict[str, Any]:
        return {**entity, "spec": {**entity["spec"], "dependsOn": list(refs)}}

    declared = [declaring(entities[1], "Component:default/payments-api", "component:orders"),
                declaring(entities[2], "resource:orders-db", "resource:default/events")]
    assert depends_on_patches(GRAPH, declared)[0] == {}  # everything observed is declared already


def test_an_export_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="service-topology/v1"):
        depends_on_patches({"nodes": [], "edges": []})
