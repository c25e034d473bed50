"""ServiceConfig: read once from the environment, typed, validated with messages naming the variable."""

from __future__ import annotations

import pytest

from service.config import ConfigError, ServiceConfig, parse_duration


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
