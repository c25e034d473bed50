"""The command line's HTTP client of a running ``topology serve`` (``topology export``,
``topology backstage import|export``): one place for the URL, the bearer token, the timeout, and
the one-line :class:`service.simulate.Unreachable` when the server cannot be reached. Each caller
judges the answer's status itself (what a refusal means depends on what was asked)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["request"]

TIMEOUT = 120.0  # seconds: an export of a large map, or a large catalog, takes a while


def request(method: str, base_url: str, path: str, token: str | None, *,
            headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    """The server's answer (an ``httpx.Response``, any status) to ``method`` ``base_url`` + ``path``,
    with the bearer ``token`` if given; ``kwargs`` go to ``httpx.request`` (``params``, ``content``).
    The environment's proxies are not used."""
    import httpx

    from service.simulate import Unreachable

    sent = {**(headers or {}), **({"authorization": f"Bearer {token}"} if token else {})}
    try:
        return httpx.request(method, base_url.rstrip("/") + path, headers=sent, timeout=TIMEOUT,
                             trust_env=False, **kwargs)
    except httpx.TransportError as e:
        raise Unreachable(f"the server at {base_url} cannot be reached: {type(e).__name__}: {e}") from e
