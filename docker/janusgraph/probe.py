"""Exit 0 when a JanusGraph Server answers a Gremlin request on every topology traversal source.

Used by dev.sh while it waits for the server: ``probe.py ws://127.0.0.1:18182/gremlin``. It connects
as the project does (``topology.store.janusgraph_endpoint``): a ``wss://`` URL with
``JANUSGRAPH_CA_FILE`` (and a client certificate), and ``JANUSGRAPH_USERNAME`` with
``JANUSGRAPH_PASSWORD_FILE`` (or ``JANUSGRAPH_PASSWORD``) when the server asks for credentials.
"""

from __future__ import annotations

import os
import sys

SOURCES = ("g_network", "g_ipc", "g_trace", "g_catalog")


def main(url: str) -> int:
    from topology.settings import ConfigError, StoreSettings, from_env
    from topology.store.janusgraph_endpoint import endpoint_from

    try:
        settings = from_env(StoreSettings, os.environ, backend="janusgraph", janusgraph_url=url)
        endpoint = endpoint_from(settings)
    except ConfigError as e:
        print(f"probe: {e}", file=sys.stderr)
        return 2
    client = None
    try:
        client = endpoint.client("g_network")
        for source in SOURCES:
            # A script referring to the source by name: fails if the init script did not bind it.
            got = client.submit(f"{source}.inject(1).count()").all().result(timeout=10)
            if got != [1]:
                print(f"{source} answered {got!r}", file=sys.stderr)
                return 1
    except Exception as e:  # any failure means "not ready yet"
        print(f"not answering: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:18182/gremlin"))
