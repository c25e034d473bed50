"""The agent's settings: flags and variables, and the one-line errors for the mistakes people make."""

from __future__ import annotations

import pytest

from agent.cli import build_parser, main, run
from agent.settings import AgentSettings
from topology.settings import KafkaSettings, resolve


def settings(argv: list[str], env: dict[str, str] | None = None) -> AgentSettings:
    return resolve(AgentSettings, build_parser().parse_args(argv), env or {})


def test_flags_win_over_variables_and_kafka_names_its_servers() -> None:
    s = settings(["--interval", "2", "--fold", "false"], {"TOPOLOGY_AGENT_HTTP": "http://h:8080",
                                                        "TOPOLOGY_AGENT_INTERVAL": "5"})
    assert (s.http, s.interval, s.fold, s.poll, s.metrics_port) == ("http://h:8080", 2.0, False, 0.5, None)
    args = build_parser().parse_args(["--kafka", "b1:9092", "--topic-prefix", "t."])
    s = resolve(AgentSettings, args, {})
    assert s.kafka == "b1:9092"
    assert resolve(KafkaSettings, args, {}, bootstrap=s.kafka) == KafkaSettings("b1:9092", "t.")
    assert settings(["--kafka"]).kafka is True  # KAFKA_BOOTSTRAP then


@pytest.mark.parametrize(("argv", "env", "message"), [
    ([], {}, "nowhere to send: give --http URL or --kafka [BOOTSTRAP]"),
    (["--http", "http://h", "--kafka", "b:9092"], {}, "give --http or --kafka, not both"),
    (["--http", "h:8080"], {}, "expected an http(s) URL, got 'h:8080'"),
    (["--http", "http://h", "--ring-mib", "3"], {},
     "--ring-mib (TOPOLOGY_AGENT_RING_MIB): expected a power of two"),
    (["--http", "http://h"], {"TOPOLOGY_AGENT_POLL": "soon"}, "TOPOLOGY_AGENT_POLL: expected a number"),
    (["--http", "http://h", "--workloads", "/nonexistent/w.json"], {},
     "cannot read the workloads file /nonexistent/w.json"),
    (["--http", "http://h", "--token-file", "/nonexistent/t"], {},
     "TOPOLOGY_AGENT_TOKEN_FILE: cannot read /nonexistent/t"),
])
def test_mistakes_are_one_line_and_exit_2(argv: list[str], env: dict[str, str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(build_parser().parse_args(argv), env) == 2
    err = capsys.readouterr().err
    assert err.startswith("topology agent: error: ") and message in err and err.count("\n") == 1


def test_a_bad_flag_value_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--http", "http://h", "--interval", "-1"])
    assert e.value.code == 2 and "expected a positive number" in capsys.readouterr().err
