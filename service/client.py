"""The command line's HTTP client of a running ``topology serve`` (``topology export``,
``topology backstage import|export``): one place for the URL, the bearer token, the timeout, and
the one-line :class:`service.simulate.Unreachable` when the server cannot be reached. Each caller
judges the answer's status itself (what a refusal means depends on what was asked)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["RETRY_FOR", "request", "retry_wait"]

TIMEOUT = 120.0  # seconds: an export of a large map, or a large catalog, takes a while
RETRY_FOR = 300.0  # seconds of waiting after which a POST answered 429/503 gives up


def retry_wait(status: int, headers: Mapping[str, str], waited: float) -> float | None:
    """Seconds to wait before sending a POST again that was answered ``status`` after ``waited`` seconds
    of waiting so far, as the OpenTelemetry exporters do: on 429 or 503 its ``Retry-After`` (1 s if
    absent or unreadable, within 0.1-30 s); None when it is not sent again (another status, or
    :data:`RETRY_FOR` seconds waited)."""
    if status not in (429, 503) or waited >= RETRY_FOR:
        return None
    try:
        return min(max(float(headers.get("retry-after", "1")), 0.1), 30.0)
    except ValueError:
        return 1.0


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
