"""Fleet generation: :func:`generate_fleet` builds a :class:`~topology.sim.fleet.Fleet` from a seed.

Shape (``shared/design/facts.md``, "Shape of real fleets"): entry/middle/leaf roles 13/48/39 %, edge
gateways as the only entry points, a mostly acyclic call graph in levels (gateways 0, entry apps 1,
middle apps 2-6, leaves 7) with heavy-tailed out-degree (median ~3, a few hubs) and fan-in
(preferential attachment, mostly within a domain), a few back edges (cycles), ~7 % databases and
caches shared by many callers, Kafka-like brokers with producers and consumers, a few external hosts,
load balancers / API gateways / proxies fronting one app each, NAT gateways on some paths, and
request rates propagated from the gateways down the graph.
"""

from __future__ import annotations

import itertools
import math
import random

from topology.catalog import AddressKind
from topology.sim import names
from topology.sim.fleet import (
    EXTERNAL_BASE,
    INTERMEDIARY_BASE,
    NAT_BASE,
    SINK_BASE,
    WORKLOAD_BASE,
    App,
    CallKind,
    Cluster,
    Edge,
    Fleet,
    Instance,
    Intermediary,
    Naming,
    Role,
    Sink,
    Style,
    Team,
    next_workload_ip,
)

MIN_SERVICES = 20


def generate_fleet(services: int = 1000, seed: int = 42, *, user_rate_per_service: float = 1.0) -> Fleet:
    """A fleet of ``services`` apps (fleet apps incl. gateways and broker apps; sinks come on top).

    Deterministic: the same arguments give the same fleet. ``user_rate_per_service`` sets the total
    external request rate (requests/s = services x this) that the edge gateways receive.
    """
    if services < MIN_SERVICES:
        raise ValueError(f"a fleet needs at least {MIN_SERVICES} services, got {services}")
    return _Generator(services, seed, user_rate_per_service).build()


_MIDDLE_LEVEL_WEIGHTS = (35, 30, 20, 10, 5)  # levels 2..6
LEAF_LEVEL = 7


class _Generator:
    def __init__(self, n: int, seed: int, user_rate_per_service: float) -> None:
        self.n = n
        self.seed = seed
        self.rng = random.Random(seed)
        self.user_rate = user_rate_per_service * n
        self.apps: dict[str, App] = {}
        self.sinks: dict[str, Sink] = {}
        self.inter: dict[str, Intermediary] = {}
        self.edges: list[Edge] = []
        self.teams: dict[str, Team] = {}
        self.hosts: list[str] = []
        self.next_ip = WORKLOAD_BASE + 255
        self.taken: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()
        self.popularity: dict[str, float] = {}

    # -- top level ---------------------------------------------------------------------------------
    def build(self) -> Fleet:
        r = self.rng
        n_domains = max(15, min(25, 15 + self.n // 1000))
        domains = [*r.sample([d for d in names.DOMAINS if d != "platform"], n_domains - 1), "platform"]
        self.domains = domains
        # Zipf-like domain sizes: a few big domains, many small ones.
        self.domain_weights = [1.0 / (i + 1) ** 0.7 for i in range(len(domains))]
        r.shuffle(self.domain_weights)
        self.domain_cum = list(itertools.accumulate(self.domain_weights))
        self._make_apps()
        self._make_teams()
        self._make_sinks()
        self._make_call_graph()
        self._make_brokers_edges()
        self._make_intermediaries()
        self._compute_rates()
        self._make_clusters()
        return Fleet(
            seed=self.seed,
            domains=domains,
            teams=self.teams,
            apps=self.apps,
            sinks=self.sinks,
            intermediaries=self.inter,
            edges=self.edges,
            hosts=self.hosts,
            next_ip=self.next_ip,
        )

    # -- apps --------------------------------------------------------------------------------------
    def _unique(self, base: str, domain: str, role_words: tuple[str, ...]) -> str:
        r = self.rng
        name = base
        tries = 0
        while name in self.taken:
            tries += 1
            noun = r.choice(names.DOMAIN_NOUNS[domain])
            if tries < 4:
                name = f"{domain}-{noun}-{r.choice(role_words)}"
            elif tries < 12:
                name = f"{domain}-{noun}-{r.choice(names.QUALIFIERS)}-{r.choice(role_words)}"
            else:
                name = f"{domain}-{noun}-{r.choice(role_words)}-{tries}"
        self.taken.add(name)
        return name

    def _make_apps(self) -> None:
        r, n = self.rng, self.n
        n_gw = min(len(names.GATEWAY_SUFFIXES), 2 + n // 1000)
        n_brokers = min(len(names.BROKER_APPS), 2 + n // 5000)
        n_entry = max(n_gw + 2, round(0.13 * n))
        n_leaf = max(n_brokers + 2, round(0.39 * n))
        n_middle = n - n_entry - n_leaf
        for i in range(n_gw):
            suffix = names.GATEWAY_SUFFIXES[i]
            name = "edge-gateway" + (f"-{suffix}" if suffix else "")
            self.taken.add(name)
            self._add_app(name, Role.ENTRY, 0, "platform", gateway=True)
        for name in names.BROKER_APPS[:n_brokers]:
            self.taken.add(name)
            self._add_app(name, Role.LEAF, LEAF_LEVEL, "platform", broker=True)
        levels = list(range(2, 2 + len(_MIDDLE_LEVEL_WEIGHTS)))
        specs: list[tuple[Role, int]] = [(Role.ENTRY, 1)] * (n_entry - n_gw)
        specs += [(Role.MIDDLE, lv) for lv in r.choices(levels, _MIDDLE_LEVEL_WEIGHTS, k=n_middle)]
        specs += [(Role.LEAF, LEAF_LEVEL)] * (n_leaf - n_brokers)
        for role, level in specs:
            domain = r.choices(self.domains, cum_weights=self.domain_cum)[0]
            words = {
                Role.ENTRY: names.ENTRY_ROLES,
                Role.MIDDLE: names.MIDDLE_ROLES,
                Role.LEAF: names.LEAF_ROLES,
            }[role]
            base = f"{domain}-{r.choice(names.DOMAIN_NOUNS[domain])}-{r.choice(words)}"
            self._add_app(self._unique(base, domain, words), role, level, domain)

    def _add_app(
        self, name: str, role: Role, level: int, domain: str, *, gateway: bool = False, broker: bool = False
    ) -> None:
        r = self.rng
        if broker:
            style = Style.NONE
        elif gateway:
            style = Style.OTEL_NEW
        elif r.random() < 0.30:
            style = Style.NONE
        else:
            style = r.choices((Style.SPECTATOR, Style.OTEL_OLD, Style.OTEL_NEW), (30, 30, 40))[0]
        protocol = "grpc" if (not gateway and not broker and r.random() < 0.4) else "http"
        port = 9092 if broker else (8443 if gateway else (9090 if protocol == "grpc" else 8080))
        spectator_server = style is Style.SPECTATOR and r.random() < 0.6
        statistic = style is Style.SPECTATOR and r.random() < 0.5
        delta = statistic or (style is Style.OTEL_NEW and r.random() < 0.1)
        tier = 0 if gateway or broker else r.choices((0, 1, 2, 3), (4, 14, 37, 45))[0]
        app = App(
            name=name,
            role=role,
            level=level,
            domain=domain,
            team="",
            tier=tier,
            style=style,
            protocol=protocol,
            port=port,
            endpoints=self._endpoints(name, protocol, gateway, broker),
            gateway=gateway,
            broker=broker,
            spectator_server=spectator_server,
            statistic=statistic,
            delta=delta,
            export_interval=r.choices((10.0, 30.0, 60.0), (2, 3, 5))[0],
            k8s=r.random() < 0.85,
            new_spans=style is Style.OTEL_NEW or (style is Style.SPECTATOR and r.random() < 0.5),
            fanout=min(4.0, r.lognormvariate(0.0, 0.45)),
        )
        app.export_phase = round(r.uniform(0, app.export_interval), 3)
        if r.random() < 0.05:
            app.links = {"logs": f"https://logs.example/{name}"}  # a per-service override
        self.apps[name] = app
        # Heavy-tailed popularity drives fan-in (a few apps called by very many).
        self.popularity[name] = min(r.paretovariate(1.1), 500.0)

    def _endpoints(self, app: str, protocol: str, gateway: bool, broker: bool) -> tuple[str, ...]:
        if broker:
            return ()
        r = self.rng
        # Endpoints per service follow a power law (alpha ~2.2): mostly a few, some with dozens.
        count = min(40, int(r.paretovariate(1.2)))
        noun = app.split("-")[1] if "-" in app else app
        verbs = ("get", "list", "create", "update", "delete", "search", "batch", "sync", "validate", "watch")
        out: list[str] = []
        for i in range(count):
            v = verbs[i % len(verbs)]
            suffix = "" if i < len(verbs) else str(i // len(verbs) + 1)
            if gateway:
                out.append(f"/{noun}/{v}{suffix}")
            elif protocol == "grpc":
                cls = "".join(p.title() for p in app.split("-")[1:3])
                out.append(f"{cls}Service/{v.title()}{noun.title()}{suffix}")
            else:
                out.append(f"/v1/{noun}s/{v}{suffix}")
        return tuple(out)

    def _make_teams(self) -> None:
        r = self.rng
        by_domain: dict[str, list[App]] = {d: [] for d in self.domains}
        for a in self.apps.values():
            by_domain[a.domain].append(a)
        for domain, apps in by_domain.items():
            if not apps:
                continue
            n_teams = max(1, math.ceil(len(apps) / 7))
            teams: list[Team] = []
            for i in range(n_teams):
                suffix = names.TEAM_SUFFIXES[i % len(names.TEAM_SUFFIXES)]
                tname = f"{domain}-{suffix}" + (
                    f"-{i // len(names.TEAM_SUFFIXES) + 1}" if i >= len(names.TEAM_SUFFIXES) else ""
                )
                t = Team(tname, domain, f"{tname}@example.com", f"#{tname}", f"{tname}-primary")
                self.teams[tname] = t
                teams.append(t)
            weights = [r.paretovariate(1.5) for _ in teams]
            for a in apps:
                a.team = r.choices(teams, weights)[0].name

    # -- sinks -------------------------------------------------------------------------------------
    def _make_sinks(self) -> None:
        r = self.rng
        n_db = max(3, round(0.07 * self.n))
        sink_ip = SINK_BASE + 10
        systems = names.SINK_SYSTEMS
        sys_weights = (30, 10, 25, 5, 15, 8)
        for _ in range(n_db):
            domain = r.choices(self.domains, cum_weights=self.domain_cum)[0]
            suffix, system, port = r.choices(systems, sys_weights)[0]
            base = f"{_plural(r.choice(names.DOMAIN_NOUNS[domain]))}-{suffix}"
            name = base
            i = 2
            while name in self.taken:
                name = f"{_plural(r.choice(names.DOMAIN_NOUNS[domain]))}-{suffix}" if i < 5 else f"{base}-{i}"
                i += 1
            self.taken.add(name)
            n_ips = r.choice((1, 1, 2, 3))
            ips = list(range(sink_ip, sink_ip + n_ips))
            sink_ip += 4
            self.sinks[name] = Sink(name, AddressKind.DATABASE, system, port, ips, domain)
            self.popularity[name] = min(r.paretovariate(0.9), 2000.0)
        n_managed = min(len(names.MANAGED_BROKERS), 1 + self.n // 5000)
        for name in names.MANAGED_BROKERS[:n_managed]:
            self.taken.add(name)
            self.sinks[name] = Sink(
                name, AddressKind.MESSAGING, "kafka", 9094, list(range(sink_ip, sink_ip + 3)), "platform"
            )
            sink_ip += 4
        n_ext = min(len(names.EXTERNAL_HOSTS), 4 + self.n // 2000)
        for i, name in enumerate(names.EXTERNAL_HOSTS[:n_ext]):
            self.taken.add(name)
            self.sinks[name] = Sink(
                name, AddressKind.EXTERNAL, "https", 443, [EXTERNAL_BASE + 10 + 2 * i], None
            )

    # -- call graph --------------------------------------------------------------------------------
    def _make_call_graph(self) -> None:
        r = self.rng
        apps = list(self.apps.values())
        by_level: dict[int, list[App]] = {}
        for a in apps:
            if not a.broker and not a.gateway:
                by_level.setdefault(a.level, []).append(a)
        self.by_level = by_level
        self.by_level_domain: dict[tuple[int, str], list[App]] = {}
        for lv, lst in by_level.items():
            for a in lst:
                self.by_level_domain.setdefault((lv, a.domain), []).append(a)
        self.cum: dict[object, tuple[list[App], list[float]]] = {}

        gateways = [a for a in apps if a.gateway]
        gw_weights = [1.0 / (i + 1) for i in range(len(gateways))]
        total = sum(gw_weights)
        for g, w in zip(gateways, gw_weights, strict=True):
            g.user_rate = self.user_rate * w / total
        # Every entry app is reached from one gateway, some from two: gateways are large fan-out hubs.
        for a in by_level.get(1, []):
            g = r.choices(gateways, gw_weights)[0]
            self._edge(g.name, a.name, CallKind.RPC, calls=r.paretovariate(1.3))
            if len(gateways) > 1 and r.random() < 0.3:
                other = r.choice([x for x in gateways if x is not g])
                self._edge(other.name, a.name, CallKind.RPC, calls=r.paretovariate(1.3))
        for a in apps:
            if a.gateway or a.broker or a.level == LEAF_LEVEL:
                continue
            # Heavy-tailed out-degree: median ~3, a few hubs with dozens of callees.
            d = max(1, round(r.lognormvariate(math.log(3.0), 0.7)))
            if r.random() < 0.006:
                d = r.randint(25, 80)
            for _ in range(d):
                t = self._pick_target(a)
                if t is not None:
                    self._edge(a.name, t.name, CallKind.RPC, calls=r.lognormvariate(0, 1.0))
        # Stateful sinks, mostly used by middle and leaf apps, shared by many callers.
        dbs = [s for s in self.sinks.values() if s.kind is AddressKind.DATABASE]
        db_w = [self.popularity[s.name] for s in dbs]
        db_by_domain: dict[str, tuple[list[Sink], list[float]]] = {}
        for s, w in zip(dbs, db_w, strict=True):
            dlst, ws = db_by_domain.setdefault(s.domain or "", ([], []))
            dlst.append(s)
            ws.append(w)
        for a in apps:
            if a.gateway or a.broker:
                continue
            p = {Role.ENTRY: 0.15, Role.MIDDLE: 0.45, Role.LEAF: 0.85}[a.role]
            k = 0
            while r.random() < p and k < 4:
                k += 1
                p *= 0.45
                pool = db_by_domain.get(a.domain)
                s = r.choices(pool[0], pool[1])[0] if pool and r.random() < 0.7 else r.choices(dbs, db_w)[0]
                self._edge(a.name, s.name, CallKind.DATABASE, calls=r.lognormvariate(0, 0.8))
        exts = [s for s in self.sinks.values() if s.kind is AddressKind.EXTERNAL]
        candidates = [a for a in apps if not a.gateway and not a.broker and a.level >= 2]
        for s in exts:
            for _ in range(max(1, round(r.lognormvariate(math.log(2 + self.n / 400), 0.6)))):
                self._edge(
                    r.choice(candidates).name,
                    s.name,
                    CallKind.EXTERNAL,
                    calls=r.lognormvariate(math.log(0.1), 0.8),
                )
        # A few back edges (cycles): the graph is DAG-ish, not a DAG.
        n_back = max(1, round(0.01 * len(self.edges)))
        deep = [a for a in apps if 3 <= a.level < LEAF_LEVEL]
        for _ in range(n_back):
            if not deep:
                break
            a = r.choice(deep)
            shallower = [x for x in by_level.get(r.randint(2, a.level - 1), []) if x is not a]
            if shallower:
                self._edge(
                    a.name,
                    r.choice(shallower).name,
                    CallKind.RPC,
                    calls=r.lognormvariate(math.log(0.05), 0.8),
                    back=True,
                )
        # Every app is called by someone; every database has a client.
        called = {e.dst for e in self.edges if not e.back and e.kind is not CallKind.CONSUME}
        for a in apps:
            if a.gateway or a.broker or a.name in called:
                continue
            if a.level == 1:
                self._edge(
                    r.choices(gateways, gw_weights)[0].name, a.name, CallKind.RPC, calls=r.paretovariate(1.3)
                )
                continue
            lv = a.level - 1 if a.level < LEAF_LEVEL else r.randint(2, 6)
            pool_apps = self.by_level_domain.get((lv, a.domain)) or by_level.get(lv) or by_level[1]
            self._edge(r.choice(pool_apps).name, a.name, CallKind.RPC, calls=r.lognormvariate(0, 1.0))
        middle_leaf = [a for a in apps if a.level >= 2 and not a.broker]
        for s in dbs:
            if s.name not in called:
                self._edge(
                    r.choice(middle_leaf).name, s.name, CallKind.DATABASE, calls=r.lognormvariate(0, 0.8)
                )

    def _pick_target(self, a: App) -> App | None:
        """A callee for ``a``: a deeper level (mostly the next), the same domain mostly, popular apps more."""
        r = self.rng
        levels = [lv for lv in range(a.level + 1, LEAF_LEVEL + 1) if self.by_level.get(lv)]
        if not levels:
            return None
        weights = [
            4.0 if lv == LEAF_LEVEL else (5.0 if lv == a.level + 1 else (2.0 if lv == a.level + 2 else 1.0))
            for lv in levels
        ]
        for _ in range(6):
            lv = r.choices(levels, weights)[0]
            key: object = (lv, a.domain)
            if r.random() < 0.7 and (lv, a.domain) in self.by_level_domain:
                pool, cum = self._cum(key, self.by_level_domain[(lv, a.domain)])
            else:
                pool, cum = self._cum(lv, self.by_level[lv])
            t = r.choices(pool, cum_weights=cum)[0]
            if t is not a and (a.name, t.name) not in self.pairs:
                return t
        return None

    def _cum(self, key: object, pool: list[App]) -> tuple[list[App], list[float]]:
        hit = self.cum.get(key)
        if hit is None:
            acc = 0.0
            cum: list[float] = []
            for x in pool:
                acc += self.popularity[x.name]
                cum.append(acc)
            hit = self.cum[key] = (pool, cum)
        return hit

    def _edge(
        self,
        src: str,
        dst: str,
        kind: CallKind,
        *,
        calls: float,
        back: bool = False,
        topic: str | None = None,
    ) -> Edge | None:
        if (src, dst) in self.pairs or src == dst:
            return None
        self.pairs.add((src, dst))
        e = make_edge(
            self.rng,
            len(self.edges),
            self.apps,
            self.sinks,
            src,
            dst,
            kind,
            calls=calls,
            back=back,
            topic=topic,
        )
        self.edges.append(e)
        return e

    def _make_brokers_edges(self) -> None:
        r = self.rng
        brokers = [a.name for a in self.apps.values() if a.broker]
        brokers += [s.name for s in self.sinks.values() if s.kind is AddressKind.MESSAGING]
        producers = [a for a in self.apps.values() if a.role in (Role.ENTRY, Role.MIDDLE) and not a.gateway]
        consumers = [a for a in self.apps.values() if a.level >= 3 and not a.broker]
        scale = max(1, self.n // 300)
        for b in brokers:
            for i in range(r.randint(3, 5) + scale):
                p = r.choice(producers)
                topic = f"{p.domain}.{p.name.split('-')[1]}-events"
                self._edge(
                    p.name, b, CallKind.PRODUCE, calls=r.lognormvariate(math.log(0.3), 0.8), topic=topic
                )
                if i == 0 or r.random() < 0.8:
                    c = r.choice(consumers)
                    self._edge(c.name, b, CallKind.CONSUME, calls=1.0, topic=topic)

    # -- intermediaries ----------------------------------------------------------------------------
    def _make_intermediaries(self) -> None:
        r = self.rng
        callers: dict[str, list[Edge]] = {}
        for e in self.edges:
            if e.kind is CallKind.RPC:
                callers.setdefault(e.dst, []).append(e)
        fronted = [a for a in self.apps.values() if not a.broker and len(callers.get(a.name, ())) >= 2]
        lb_ip = INTERMEDIARY_BASE + 10
        n_apigw = min(3, 1 + self.n // 3000)
        n_proxy = min(4, 2 + self.n // 3000)
        entries = [a for a in fronted if a.level == 1]
        others = [a for a in fronted if a.level >= 2]
        chosen: list[tuple[App, AddressKind]] = []
        for a in r.sample(entries, min(n_apigw, len(entries))):
            chosen.append((a, AddressKind.API_GATEWAY))
        picked = {a.name for a, _ in chosen}
        rest = [a for a in others if a.name not in picked]
        for a in r.sample(rest, min(n_proxy, len(rest))):
            chosen.append((a, AddressKind.PROXY))
            picked.add(a.name)
        for a in fronted:
            if a.name not in picked and r.random() < 0.25:
                chosen.append((a, AddressKind.LOAD_BALANCER))
        prefix = {
            AddressKind.API_GATEWAY: "apigw",
            AddressKind.PROXY: "proxy",
            AddressKind.LOAD_BALANCER: "lb",
        }
        for a, kind in chosen:
            name = f"{prefix[kind]}-{a.name}"
            self.inter[name] = Intermediary(
                name, kind, lb_ip, a.name, 443 if kind is not AddressKind.PROXY else 15001
            )
            lb_ip += 1
            edges = callers[a.name]
            routed = [e for e in edges if r.random() < 0.7] or [r.choice(edges)]
            for e in routed:
                e.via = name
                if e.naming is Naming.IP:
                    e.naming = Naming.DNS
        n_nat = min(4, 2 + self.n // 4000)
        nats = []
        for i in range(n_nat):
            name = f"nat-gw-{chr(ord('a') + i)}"
            self.inter[name] = Intermediary(name, AddressKind.NAT_GATEWAY, NAT_BASE + 10 + i, None, 0)
            nats.append(name)
        for e in self.edges:
            if (
                e.kind is CallKind.RPC
                and e.via is None
                and not self.apps[e.src].gateway
                and r.random() < 0.06
            ):
                e.nat = r.choice(nats)

    # -- rates ---------------------------------------------------------------------------------------
    def _compute_rates(self) -> None:
        compute_rates(self.apps, self.edges)

    # -- clusters and instances ----------------------------------------------------------------------
    def _make_clusters(self) -> None:
        r = self.rng
        n_inst = 0
        plans: list[tuple[App, list[tuple[str, int, int]]]] = []
        for a in self.apps.values():
            k = 1 if r.random() < 0.55 else (2 if r.random() < 0.7 else 3)
            stacks = [names.STACKS[0], *r.sample(names.STACKS[1:], k - 1)]
            base = 3 if a.broker else max(1, round(r.lognormvariate(math.log(2.5), 0.6)))
            if a.gateway or a.tier == 0:
                base += 3
            plan = []
            for i, stack in enumerate(stacks):
                count = base if i == 0 else max(1, base // 3)
                plan.append((stack, r.randint(1, 120), count))
                n_inst += count
            plans.append((a, plan))
        n_hosts = max(2, math.ceil(n_inst / 4))
        self.hosts = [f"node-{i:05d}.fleet.internal" for i in range(n_hosts)]
        for a, plan in plans:
            for stack, version, count in plan:
                c = Cluster(f"{a.name}-{stack}-v{version:03d}", a.name, stack, version)
                for _ in range(count):
                    c.instances.append(self.new_instance(c))
                a.clusters.append(c)

    def new_instance(self, c: Cluster) -> Instance:
        ip = self.next_ip = next_workload_ip(self.next_ip)
        return make_instance(self.rng, c, ip, len(self.hosts))


def _plural(noun: str) -> str:
    if noun.endswith("s"):
        return noun
    if noun.endswith(("x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def make_instance(rng: random.Random, c: Cluster, ip: int, n_hosts: int) -> Instance:
    pod = f"{c.name}-{rng.getrandbits(40):010x}"[: len(c.name) + 11]
    return Instance(pod, ip, rng.randrange(n_hosts), rng.randint(100, 65000))


def make_edge(
    rng: random.Random,
    edge_id: int,
    apps: dict[str, App],
    sinks: dict[str, Sink],
    src: str,
    dst: str,
    kind: CallKind,
    *,
    calls: float,
    back: bool = False,
    topic: str | None = None,
    active_from: float | None = None,
) -> Edge:
    """One new edge with its traffic parameters (rates are filled in by :func:`compute_rates`)."""
    r = rng
    s = apps[src]
    naming = Naming.DNS
    endpoints: tuple[str, ...] = ()
    if kind is CallKind.RPC:
        d = apps[dst]
        if d.endpoints:
            k = min(len(d.endpoints), max(1, int(r.paretovariate(1.8))))
            endpoints = tuple(sorted(r.sample(d.endpoints, k)))
        if s.style is Style.SPECTATOR:
            naming = Naming.APP
        elif s.style is Style.OTEL_OLD:
            naming = Naming.PEER if r.random() < 0.4 else Naming.DNS
        else:
            naming = r.choices((Naming.PEER, Naming.DNS, Naming.IP), (30, 50, 20))[0]
        latency = r.lognormvariate(math.log(0.012), 0.7)
        conn = r.lognormvariate(math.log(0.03 if s.protocol == "http" else 0.01), 0.8)
        keepalive = r.uniform(0.02, 0.1)
    elif kind is CallKind.DATABASE:
        latency = r.lognormvariate(math.log(0.002), 0.6)
        conn = r.lognormvariate(math.log(0.005), 0.8)
        keepalive = r.uniform(0.05, 0.2)
    elif kind is CallKind.EXTERNAL:
        latency = r.lognormvariate(math.log(0.12), 0.5)
        conn = r.lognormvariate(math.log(0.3), 0.5)
        keepalive = r.uniform(0.01, 0.05)
    else:  # PRODUCE / CONSUME: long-lived connections
        latency = r.lognormvariate(math.log(0.004), 0.5)
        conn = r.lognormvariate(math.log(0.002), 0.5)
        keepalive = r.uniform(0.1, 0.3)
    error = 0.0 if r.random() < 0.85 else min(0.05, r.lognormvariate(math.log(0.005), 0.8))
    return Edge(
        id=edge_id,
        src=src,
        dst=dst,
        kind=kind,
        calls=min(calls, 20.0),
        rate=0.0,
        conn_factor=min(conn, 1.0),
        keepalive=keepalive,
        latency=min(latency, 5.0),
        error_rate=error,
        endpoints=endpoints,
        naming=naming,
        topic=topic,
        back=back,
        active_from=active_from,
    )


def compute_rates(apps: dict[str, App], edges: list[Edge]) -> None:
    """Requests/s per app and per edge, propagated from the gateways down the call graph.

    Each app splits ``fanout`` calls per received request over its out-edges (weighted by ``calls``),
    so traffic neither vanishes nor explodes with depth. Back edges carry traffic but do not
    propagate it (no feedback loops); consumers receive what their broker's producers send.
    """
    out: dict[str, list[Edge]] = {a: [] for a in apps}
    for e in edges:
        if e.active_until is None:
            out[e.src].append(e)
    order = sorted(apps.values(), key=lambda a: (a.level, a.name))
    broker_in: dict[str, float] = {}
    consumers: dict[str, list[Edge]] = {}
    for e in edges:
        if e.kind is CallKind.CONSUME and e.active_until is None:
            consumers.setdefault(e.dst, []).append(e)
    for _round in range(2):
        for a in apps.values():
            a.rate_in = a.user_rate
        for b, ces in consumers.items():
            for ce in ces:
                ce.rate = broker_in.get(b, 0.0) / max(1, len(ces)) * 2.0
                apps[ce.src].rate_in += ce.rate
        broker_in = {}
        for a in order:
            es = out[a.name]
            calls = [e for e in es if e.kind is not CallKind.CONSUME]
            total = sum(e.calls for e in calls) or 1.0
            # Gateways route each request to one entry app; others make ~fanout*sqrt(d) calls.
            budget = 1.0 if a.gateway else a.fanout * math.sqrt(len(calls))
            for e in calls:
                e.rate = a.rate_in * budget * e.calls / total
                if e.kind is CallKind.RPC and not e.back:
                    apps[e.dst].rate_in += e.rate
                elif e.kind is CallKind.PRODUCE:
                    broker_in[e.dst] = broker_in.get(e.dst, 0.0) + e.rate
