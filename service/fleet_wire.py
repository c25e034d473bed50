"""The messages between the demo's server and its fleet process (:mod:`service.demo_fleet`), as bytes
that cannot run code where they are read.

A :class:`multiprocessing.connection.Connection`'s ``send``/``recv`` pickle, and nothing that crosses a
process boundary is unpickled here. A message is a tuple ``(kind, *args)`` written with the checkpoint
codec (:mod:`ingest.state`: msgpack through a closed list of types, :class:`~ingest.state.StateError`
for anything else): windows and trace summaries as the codec's own types, the catalog's records as
their ``to_dict`` and the job as plain fields. An output's nodes are not sent: the reader derives them
from its windows (:func:`topology.store.persist.nodes_of`), once.
"""

from __future__ import annotations

import dataclasses
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ingest import state
from topology.catalog import AddressLease, HealthEvent, ServiceInfo
from topology.change import ChangeEvent
from topology.model import Layer
from topology.pipeline import PipelineConfig, PipelineOutput
from topology.store.persist import nodes_of

if TYPE_CHECKING:
    from service.demo_fleet import FleetJob

__all__ = ["decode", "encode", "recv", "send"]


def send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(encode(message))


def recv(conn: Connection) -> tuple[Any, ...]:
    return decode(conn.recv_bytes())


def encode(message: tuple[Any, ...]) -> bytes:
    kind, *args = message
    if kind == "out":
        args = [_plain_output(args[0])]
    elif kind == "meta":
        args = [[x.to_dict() for x in records] for records in args]
    elif kind == "job":
        args = [dataclasses.asdict(args[0])]
    return state.dumps((kind, *args))


def decode(data: bytes) -> tuple[Any, ...]:
    """The message in ``data``; :class:`~ingest.state.StateError` if it is not one."""
    message = state.loads(data)
    if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
        raise state.StateError("not a fleet message")
    kind, *args = message
    if kind == "out":
        args = [_output(args[0])]
    elif kind == "meta":
        catalog, health, changes, leases = args
        args = [[ServiceInfo.from_dict(d) for d in catalog], [HealthEvent.from_dict(d) for d in health],
                [ChangeEvent.from_dict(d) for d in changes], [AddressLease.from_dict(d) for d in leases]]
    elif kind == "job":
        args = [_job(args[0])]
    return (kind, *args)


def _plain_output(out: PipelineOutput) -> tuple[Any, ...]:
    return ([(layer.value, ws) for layer, ws in out.windows.items()],
            [(layer.value, ws) for layer, ws in out.late.items()],
            out.traces, out.watermark, [lease.to_dict() for lease in out.peer_leases])


def _output(plain: tuple[Any, ...]) -> PipelineOutput:
    windows, late, traces, watermark, leases = plain
    by_layer = {Layer(v): list(ws) for v, ws in windows}
    late_by_layer = {Layer(v): list(ws) for v, ws in late}
    both = {layer: by_layer.get(layer, []) + late_by_layer.get(layer, [])
            for layer in {*by_layer, *late_by_layer}}
    return PipelineOutput(windows=by_layer, late=late_by_layer, nodes=nodes_of(both),
                          traces=list(traces), watermark=watermark,
                          peer_leases=[AddressLease.from_dict(d) for d in leases])


def _job(fields: dict[str, Any]) -> FleetJob:
    from service.demo_fleet import FleetJob

    return FleetJob(**{**fields, "config": PipelineConfig(**fields["config"])})
