"""Settings: read once from the environment (flags first), typed, validated with messages naming the
variable or flag; the README's configuration table equals the code's settings."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from ingest.main import WORKER_DEFAULTS, IngestSettings, WorkerSettings, worker_options
from ingest.metrics import DEFAULT_METRICS_PORT
from ingest.worker import WorkerOptions
from service.cli import DEMO_STORE, build_parser
from service.config import ConfigError, ServiceConfig, parse_duration
from service.settings import DemoSettings, FleetSettings, ServeSettings, SimulateSettings, documented
from topology.settings import KafkaSettings, LogSettings, StoreSettings, from_env, resolve, rows


def test_defaults_without_environment() -> None:
    c = ServiceConfig.from_env({})
    assert c == ServiceConfig()
    assert (c.live_window, c.max_depth, c.max_page, c.port) == (900.0, 10, 1000, 8080)
    assert c.logs_url is None and c.otlp_endpoint is None and c.graphiql


def test_every_variable_is_read() -> None:
    c = ServiceConfig.from_env({
        "TOPOLOGY_HOST": "0.0.0.0", "TOPOLOGY_PORT": "9000", "TOPOLOGY_LIVE_WINDOW": "5m",
        "TOPOLOGY_MAX_WINDOW": "30d", "TOPOLOGY_MAX_DEPTH": "6", "TOPOLOGY_MAX_PAGE": "200",
        "TOPOLOGY_DEFAULT_PAGE": "20", "TOPOLOGY_MAX_QUERY_DEPTH": "20", "TOPOLOGY_MAX_ALIASES": "10",
        "TOPOLOGY_MAX_TOKENS": "900", "TOPOLOGY_LOGS_URL": "https://logs.example/?q={service}",
        "TOPOLOGY_TRACES_URL": "/traces?service={service}", "TOPOLOGY_METRICS_URL": "http://m.example/{service}",
        "TOPOLOGY_GRAPHIQL": "off", "TOPOLOGY_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "topo",
    })
    assert c == ServiceConfig(
        host="0.0.0.0", port=9000, live_window=300.0, max_window=30 * 86400.0, max_depth=6, max_page=200,
        default_page=20, max_query_depth=20, max_aliases=10, max_tokens=900,
        logs_url="https://logs.example/?q={service}", traces_url="/traces?service={service}",
        metrics_url="http://m.example/{service}", graphiql=False,
        allowed_origins=("https://a.example", "https://b.example"), otlp_endpoint="http://127.0.0.1:4318",
        otel_service_name="topo",
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TOPOLOGY_PORT": "eighty"}, "TOPOLOGY_PORT"),
        ({"TOPOLOGY_PORT": "70000"}, "TOPOLOGY_PORT"),
        ({"TOPOLOGY_LIVE_WINDOW": "soon"}, "TOPOLOGY_LIVE_WINDOW"),
        ({"TOPOLOGY_LIVE_WINDOW": "500d"}, "TOPOLOGY_LIVE_WINDOW"),
        ({"TOPOLOGY_MAX_DEPTH": "0"}, "TOPOLOGY_MAX_DEPTH"),
        ({"TOPOLOGY_DEFAULT_PAGE": "5000"}, "TOPOLOGY_DEFAULT_PAGE"),
        ({"TOPOLOGY_LOGS_URL": "https://logs.example/?q={app}"}, "TOPOLOGY_LOGS_URL"),
        ({"TOPOLOGY_METRICS_URL": "ftp://m.example/{service}"}, "TOPOLOGY_METRICS_URL"),
        ({"TOPOLOGY_TRACES_URL": "https://t.example/{service"}, "TOPOLOGY_TRACES_URL"),
        ({"TOPOLOGY_GRAPHIQL": "maybe"}, "TOPOLOGY_GRAPHIQL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        ServiceConfig.from_env(env)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900.0), ("1.5", 1.5), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("7d", 604800.0),
     ("1w", 604800.0), ("1h30m", 5400.0), ("PT15M", 900.0), ("P1D", 86400.0), ("PT1H30M", 5400.0),
     ("pt10s", 10.0), ("P1DT1H", 90000.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "P", "PT", "P1DT", "1h-5m", "PT-5M"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- every process's settings: flags, variables, defaults, the README table ----------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    args = _parse("serve", "--embedded", "d", "--port", "9001")
    env = {"TOPOLOGY_PORT": "18412", "TOPOLOGY_HOST": "0.0.0.0"}
    config = resolve(ServiceConfig, args, env)
    assert (config.host, config.port) == ("0.0.0.0", 9001)
    assert resolve(ServiceConfig, _parse("serve"), env).port == 18412
    assert resolve(ServiceConfig, _parse("serve"), {}).port == 8080


def test_topology_port_applies_to_serve_and_demo() -> None:
    env = {"TOPOLOGY_PORT": "18412"}
    for command in ("serve", "demo"):
        assert resolve(ServiceConfig, _parse(command), env).port == 18412


def test_command_defaults_and_the_embedded_alias() -> None:
    assert resolve(StoreSettings, _parse("demo"), {}, defaults=DEMO_STORE).data_dir == "var/demo"
    assert resolve(StoreSettings, _parse("serve", "--embedded", "x"), {}).data_dir == "x"
    assert resolve(StoreSettings, _parse("serve"), {"TOPOLOGY_DATA_DIR": "y"}).data_dir == "y"
    with pytest.raises(ConfigError, match="TOPOLOGY_DATA_DIR"):
        resolve(StoreSettings, _parse("serve"), {})
    jg = resolve(StoreSettings, _parse("serve"), {"TOPOLOGY_STORE": "janusgraph"})
    assert (jg.backend, jg.janusgraph_url) == ("janusgraph", "ws://127.0.0.1:18182/gremlin")


@pytest.mark.parametrize("argv", [["--log-level", "debug", "schema"], ["schema", "--log-level", "debug"]])
def test_log_level_before_or_after_the_command(argv: list[str]) -> None:
    assert resolve(LogSettings, _parse(*argv), {"LOG_LEVEL": "ERROR"}).level == "DEBUG"


def test_kafka_bootstrap_applies_to_serve_simulate_and_ingest() -> None:
    env = {"KAFKA_BOOTSTRAP": "broker:9092", "TOPOLOGY_TOPIC_PREFIX": "t."}
    for argv in (["serve", "--kafka"], ["simulate", "--kafka"], ["ingest", "--stage", "1", "--layer", "ipc"]):
        assert resolve(KafkaSettings, _parse(*argv), env) == KafkaSettings("broker:9092", "t."), argv
    # --kafka BOOTSTRAP names the servers itself; TOPOLOGY_SERVE_KAFKA turns the workers on
    assert resolve(ServeSettings, _parse("serve", "--kafka", "other:1"), env).kafka == "other:1"
    assert resolve(ServeSettings, _parse("serve"), {"TOPOLOGY_SERVE_KAFKA": "true"}).kafka is True
    assert resolve(ServeSettings, _parse("serve"), {}).kafka is False


def test_ingest_settings_reach_the_worker_options() -> None:
    args = _parse("ingest", "--stage", "2", "--layer", "trace", "--idle-seconds", "3", "--trace-wait", "7")
    env = {"TOPOLOGY_MAX_RECORDS": "50", "TOPOLOGY_INSTANCE": "w1", "TOPOLOGY_METRICS_PORT": "none"}
    ingest = resolve(IngestSettings, args, env)
    assert (ingest.stage, ingest.layer, ingest.tuning()["trace_wait"]) == (2, "trace", 7.0)
    options = worker_options(resolve(WorkerSettings, args, env, defaults=WORKER_DEFAULTS), "b:1")
    got = (options.bootstrap, options.idle_seconds, options.max_records, options.instance)
    assert got == ("b:1", 3.0, 50, "w1")
    assert options.metrics_port is None  # "none": no endpoint
    defaults = worker_options(resolve(WorkerSettings, _parse("ingest"), {}, defaults=WORKER_DEFAULTS), "b:1")
    assert defaults.metrics_port == DEFAULT_METRICS_PORT  # a fixed port Prometheus can be told
    assert defaults.poll_ms == WorkerOptions(bootstrap="b:1").poll_ms


def test_every_worker_option_is_a_flag_and_a_variable() -> None:
    """A field added to WorkerOptions shows up in ``topology ingest`` by itself."""
    flags = {row.flag for row in rows(WorkerSettings)}
    for f in dataclasses.fields(WorkerOptions):
        if f.name in ("bootstrap", "wall"):
            continue
        assert "--" + f.name.replace("_", "-") in flags, f.name


@pytest.mark.parametrize(
    ("group", "env", "variable"),
    [
        (LogSettings, {"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        (KafkaSettings, {}, None),
        (StoreSettings, {"TOPOLOGY_STORE": "cassandra", "TOPOLOGY_DATA_DIR": "d"}, "TOPOLOGY_STORE"),
        (StoreSettings, {"TOPOLOGY_STORE": "janusgraph", "JANUSGRAPH_URL": "http://x"}, "JANUSGRAPH_URL"),
        (FleetSettings, {"TOPOLOGY_SERVICES": "5"}, "TOPOLOGY_SERVICES"),
        (DemoSettings, {"TOPOLOGY_DEMO_BACKFILL": "soon"}, "TOPOLOGY_DEMO_BACKFILL"),
        (SimulateSettings, {"TOPOLOGY_SIMULATE_OUT": "d", "TOPOLOGY_SIMULATE_RATE": "-1"},
         "TOPOLOGY_SIMULATE_RATE"),
        (SimulateSettings, {"TOPOLOGY_SIMULATE_HTTP": "localhost:8080"}, "TOPOLOGY_SIMULATE_HTTP"),
        (IngestSettings, {"TOPOLOGY_INGEST_STAGE": "4", "TOPOLOGY_INGEST_LAYER": "ipc"},
         "TOPOLOGY_INGEST_STAGE"),
        (IngestSettings, {"TOPOLOGY_INGEST_STAGE": "2", "TOPOLOGY_INGEST_LAYER": "meta"},
         "TOPOLOGY_INGEST_STAGE"),
        (WorkerSettings, {"TOPOLOGY_POLL_MS": "fast"}, "TOPOLOGY_POLL_MS"),
    ],
)
def test_bad_settings_name_their_variable(group: type, env: dict[str, str], variable: str | None) -> None:
    if variable is None:
        from_env(group, env)  # nothing required
        return
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        from_env(group, env)


def test_a_bad_flag_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _parse("demo", "--services", "5")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --services: the simulated fleet needs at least 20" in err


def test_simulate_needs_a_sink() -> None:
    with pytest.raises(ConfigError, match="--out DIR, --http URL or --kafka"):
        resolve(SimulateSettings, _parse("simulate"), {})
    assert resolve(SimulateSettings, _parse("simulate"), {"TOPOLOGY_SIMULATE_KAFKA": "yes"}).kafka is True


def test_help_shows_every_flag_with_its_variable_and_default() -> None:
    """Every flag of every command is a documented setting; its help names the variable and default."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    by_env = {r.env: r for r in documented()}
    seen = 0
    for name, sub in [("topology", parser), *commands.items()]:
        for action in sub._actions:
            if not action.option_strings or action.option_strings == ["-h", "--help"]:
                continue
            m = re.search(r"\[env (\w+); default: ([^\]]+)\]$", action.help or "")
            assert m is not None, f"{name} {action.option_strings}: no variable and default in the help"
            row = by_env.get(m.group(1))
            assert row is not None and row.flag is not None, f"{name}: {m.group(1)} is not documented"
            assert row.flag.split(" ")[0] == action.option_strings[0], (name, row, action.option_strings)
            seen += 1
        assert "default: " in sub.format_help()
    assert seen > sum(1 for r in by_env.values() if r.flag)  # shared settings are flags of several commands


def _readme_rows() -> dict[str, tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):]
    section = section[:section.index("\n## ", 5)]
    out: dict[str, tuple[str, str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        env, flag, default, meaning = cells
        out[env.strip("`")] = (flag.strip("`"), default.strip("`"), meaning)
    return out


def test_the_readme_lists_every_setting_and_only_those() -> None:
    readme = _readme_rows()
    code = {r.env: (r.flag or "", r.default, r.meaning) for r in documented()}
    missing = sorted(set(code) - set(readme))
    unknown = sorted(set(readme) - set(code))
    hint = "python -m service.settings prints the table"
    assert not missing, f"settings missing from the README ({hint}): {missing}"
    assert not unknown, f"README rows that are no setting: {unknown}"
    differ = {k: (readme[k], code[k]) for k in code if readme[k] != code[k]}
    assert not differ, f"README rows that differ from the code (README, code): {differ}"
    assert len(code) == len(documented()), "a variable is declared twice"
