"""Where the agent's messages go: the HTTP ingest of ``topology serve`` / ``topology demo``, or Kafka.

* HTTP (``--http URL``): ``POST URL/ingest/flows`` (``application/x-topology-flows``) and
  ``POST URL/ingest/addresses`` (a JSON array of leases), with ``Authorization: Bearer <token>`` when
  a token is configured (it needs the ``ingest`` and ``admin`` scopes). A 4xx answer is a rejection
  (the batch is dropped and counted, retrying cannot help), except 401, 403, 408 and 429, which say
  the credentials or the server's load must change: those are retried, like anything else that is
  not a 2xx.
* Kafka (``--kafka BOOTSTRAP``): ``topology.flows`` (one batch per message, keyed by host) and
  ``topology.addresses`` (one lease per message, keyed ``ip@start`` as every producer keys it),
  under ``--topic-prefix``. The producer is idempotent with ``acks=all``; a failed send drops the
  producer and the next attempt starts a new one.

Both raise :class:`agent.outbox.SinkError` for what is worth retrying.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from agent.outbox import FLOWS, Message, Rejected, SinkError
from ingest.publisher import lease_key
from ingest.security import Kafka, client_options, explain, servers
from ingest.topics import Topics
from topology.catalog import AddressLease

FLOWS_TYPE = "application/x-topology-flows"


def lease_payload(leases: list[AddressLease]) -> bytes:
    return json.dumps([lease.to_dict() for lease in leases]).encode()


class HttpSink:
    def __init__(self, base_url: str, timeout: float = 10.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    async def __call__(self, msg: Message) -> None:
        path, ctype = ("/ingest/flows", FLOWS_TYPE) if msg.kind == FLOWS else ("/ingest/addresses",
                                                                              "application/json")
        await asyncio.to_thread(self._post, self.base_url + path, msg.payload, ctype)

    def _post(self, url: str, body: bytes, ctype: str) -> None:
        headers = {"Content-Type": ctype}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode("utf-8", "replace")
            if e.code in (401, 403):
                hint = "the token (TOPOLOGY_AGENT_TOKEN or --token-file) needs the ingest and admin scopes"
                raise SinkError(f"HTTP {e.code} from {url}: {detail} ({hint})") from e
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise Rejected(f"HTTP {e.code} from {url}: {detail}") from e
            raise SinkError(f"HTTP {e.code} from {url}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SinkError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from e

    async def close(self) -> None:
        return None


class KafkaSink:
    def __init__(self, kafka: Kafka, topics: Topics, host: str, timeout: float = 15.0) -> None:
        self.kafka = kafka
        self.topics = topics
        self.host = host
        self.timeout = timeout
        self._producer: Any = None

    async def _started(self) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            p = AIOKafkaProducer(**client_options(self.kafka), acks="all", enable_idempotence=True,
                                 linger_ms=5, max_request_size=8 * 1024 * 1024,
                                 request_timeout_ms=int(self.timeout * 1000))
            try:
                await asyncio.wait_for(p.start(), self.timeout)
            except BaseException:
                await _quietly(p.stop())
                raise
            self._producer = p
        return self._producer

    async def __call__(self, msg: Message) -> None:
        from aiokafka.errors import KafkaError

        try:
            p = await self._started()
            if msg.kind == FLOWS:
                futs = [await p.send(self.topics.flows, value=msg.payload, key=self.host.encode() or None)]
            else:
                futs = []
                for d in json.loads(msg.payload):
                    key = lease_key(AddressLease.from_dict(d))
                    futs.append(await p.send(self.topics.addresses, value=json.dumps(d).encode(), key=key))
            await asyncio.wait_for(asyncio.gather(*futs), self.timeout)
        except (TimeoutError, KafkaError, OSError) as e:
            await self.close()
            raise SinkError(f"Kafka at {servers(self.kafka)}: {await explain(self.kafka, e)}") from e

    async def close(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            await _quietly(p.stop())


async def _quietly(aw: Any) -> None:
    try:
        await asyncio.wait_for(aw, 5.0)
    except Exception:  # closing a broken producer: nothing more to do
        return
