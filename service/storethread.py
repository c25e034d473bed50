"""The stores' own thread: an event loop beside the server's that owns the stores and executes GraphQL.

Why: graphql-core spends most of a query's CPU walking fields, in stretches that do not yield, and
with many clients the server's event loop ran those stretches back to back, so ``/healthz`` (and
every connection's I/O) waited behind them. With ``topology serve`` and ``topology demo``, the stores
are opened on this thread's loop and GraphQL operations over HTTP execute there (the request is read
and the answer written on the server's loop); the server's loop keeps the I/O, the health probes and
the ingest runtime, and reaches the stores through :meth:`StoreThread.bind`, whose calls run on this
loop. The interpreter lock changes hands every millisecond (:data:`service.server.SWITCH_INTERVAL`),
so the server's loop waits at most about that long for it at each turn.

Every store object is used on one loop only (this one), as it was before with a single loop: the
stores need no locks of their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from topology.store.base import CatalogStore, LayerStore, StoreProxy, Stores

__all__ = ["StoreThread"]

T = TypeVar("T")


class StoreThread:
    def __init__(self, name: str = "topology-stores") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this thread's loop and wait for it from the caller's loop (cancelling the
        wait cancels it there)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def bind(self, stores: Stores) -> Stores:
        """``stores`` as the server's loop uses them: every method call runs on this thread's loop."""
        layers = {layer: cast(LayerStore, _Hop(s, self)) for layer, s in stores.layers.items()}
        return Stores(layers=layers, catalog=cast(CatalogStore, _Hop(stores.catalog, self)),
                      on_close=stores.on_close)

    def stop(self) -> None:
        """Stop the loop (once nothing runs on it any more) and the thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        if not self._thread.is_alive():
            self.loop.close()


class _Hop(StoreProxy):
    """Delegates to a store, running each coroutine method call on the store thread's loop."""

    def __init__(self, inner: Any, thread: StoreThread) -> None:
        super().__init__(inner)
        self._thread = thread

    def _wrap(self, name: str, method: Callable[..., Coroutine[Any, Any, Any]]
              ) -> Callable[..., Coroutine[Any, Any, Any]]:
        thread = self._thread

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await thread.run(method(*args, **kwargs))

        return call
