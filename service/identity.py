"""Who is calling, and what they may do: an :class:`Identity` holds a name and a set of scopes.

===========  ===========================================================================================
Scope        Grants
===========  ===========================================================================================
``read``     GraphQL over HTTP and WebSocket (queries, subscriptions), ``GET /metrics``
``ingest``   the data routes: ``/v1/traces``, ``/v1/metrics``, ``/ingest/flows`` and every other
             ``/ingest/*`` route that carries observations (vpcflows, changes, ...)
``admin``    the routes that rewrite what the map says about a service: ``/ingest/catalog``,
             ``/ingest/health``, ``/ingest/addresses``
===========  ===========================================================================================

Scopes do not imply one another: a collector's token has ``ingest`` only, a dashboard's ``read`` only.
Identities come from bearer tokens (:mod:`service.tokens`), OIDC/JWT (:mod:`service.oidc`) or client
certificates (:mod:`service.tls`); :mod:`service.auth` decides which scope a request needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ADMIN", "ANONYMOUS", "INGEST", "READ", "SCOPES", "AuthError", "Identity", "parse_scopes"]

READ = "read"
INGEST = "ingest"
ADMIN = "admin"
SCOPES = frozenset({READ, INGEST, ADMIN})


class AuthError(Exception):
    """Credentials were presented but are not valid (bad token, bad signature, expired, wrong audience).

    ``reason`` is safe to show to the caller: it never repeats the credential."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    scopes: frozenset[str]
    method: str  # "token", "jwt", "certificate" or "anonymous" (authentication is off)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Identity("anonymous", SCOPES, "anonymous")


def parse_scopes(values: Iterable[str], where: str) -> frozenset[str]:
    """The known scopes among ``values``; raises ValueError naming ``where`` for an unknown one or none."""
    scopes = frozenset(v.strip() for v in values if v.strip())
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"{where}: unknown scope(s) {sorted(unknown)}; use {sorted(SCOPES)}")
    if not scopes:
        raise ValueError(f"{where}: no scopes; use some of {sorted(SCOPES)}")
    return scopes
