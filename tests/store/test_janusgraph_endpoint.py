"""The JanusGraph connection settings (``StoreSettings``' ``JANUSGRAPH_*``) and the endpoint made of
them, without a server: inconsistent settings and unreadable files are one-line ConfigErrors naming
the variable, before any connection. Against a real server with TLS and authentication:
tests/janusgraph/test_security.py."""

from __future__ import annotations

import pathlib

import pytest

from topology.settings import ConfigError, StoreSettings, from_env
from topology.store.janusgraph_endpoint import endpoint_from


def _secret_file(path: pathlib.Path, text: str) -> str:
    path.write_text(text + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JANUSGRAPH_PASSWORD": "p"}, "JANUSGRAPH_USERNAME: a JanusGraph password needs its user name"),
        ({"JANUSGRAPH_PASSWORD_FILE": "/nowhere"}, "JANUSGRAPH_USERNAME: a JanusGraph password needs"),
        ({"JANUSGRAPH_USERNAME": "u"}, "JANUSGRAPH_PASSWORD_FILE: the JanusGraph user needs a password"),
        ({"JANUSGRAPH_USERNAME": "u", "JANUSGRAPH_PASSWORD": "p", "JANUSGRAPH_PASSWORD_FILE": "/f"},
         "JANUSGRAPH_PASSWORD_FILE: give the password once"),
        ({"JANUSGRAPH_CA_FILE": "/ca.pem"}, "JANUSGRAPH_CA_FILE: TLS files need a wss:// JANUSGRAPH_URL"),
        ({"JANUSGRAPH_CERT_FILE": "/c.pem"}, "JANUSGRAPH_CERT_FILE: TLS files need a wss://"),
        ({"JANUSGRAPH_URL": "wss://h:1/gremlin", "JANUSGRAPH_KEY_FILE": "/k.pem"},
         "JANUSGRAPH_CERT_FILE: a client key needs its certificate"),
        ({"JANUSGRAPH_URL": "https://h:1/gremlin"}, "JANUSGRAPH_URL: expected a ws:// or wss:// URL"),
    ],
)
def test_inconsistent_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_env(StoreSettings, {"TOPOLOGY_STORE": "janusgraph", **env})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_files_that_cannot_be_read_are_one_line_errors(tmp_path: pathlib.Path) -> None:
    wss = {"TOPOLOGY_STORE": "janusgraph", "JANUSGRAPH_URL": "wss://127.0.0.1:1/gremlin"}
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    empty = tmp_path / "empty.pass"
    empty.write_text("\n")
    cases = [
        ({"JANUSGRAPH_USERNAME": "u", "JANUSGRAPH_PASSWORD_FILE": str(tmp_path / "missing")},
         "JANUSGRAPH_PASSWORD_FILE: cannot read"),
        ({"JANUSGRAPH_USERNAME": "u", "JANUSGRAPH_PASSWORD_FILE": str(empty)}, "JANUSGRAPH_PASSWORD_FILE:"),
        ({"JANUSGRAPH_CA_FILE": str(tmp_path / "missing.pem")}, "JANUSGRAPH_CA_FILE: cannot read"),
        ({"JANUSGRAPH_CA_FILE": str(not_pem)}, "JANUSGRAPH_CA_FILE:"),
        ({"JANUSGRAPH_CERT_FILE": str(not_pem)}, "JANUSGRAPH_CERT_FILE:"),
    ]
    for env, message in cases:
        with pytest.raises(ConfigError) as err:
            endpoint_from(from_env(StoreSettings, {**wss, **env}))
        assert str(err.value).startswith(message) and "\n" not in str(err.value), env


def test_the_password_file_keeps_everything_but_the_final_newline(tmp_path: pathlib.Path) -> None:
    path = _secret_file(tmp_path / "p", " spaced ")
    env = {"TOPOLOGY_STORE": "janusgraph", "JANUSGRAPH_USERNAME": "u", "JANUSGRAPH_PASSWORD_FILE": path}
    endpoint = endpoint_from(from_env(StoreSettings, env))
    assert (endpoint.username, endpoint.password, endpoint.ssl) == ("u", " spaced ", None)
    assert " spaced " not in repr(endpoint)


def test_the_password_stays_out_of_the_settings_repr() -> None:
    env = {"TOPOLOGY_STORE": "janusgraph", "JANUSGRAPH_USERNAME": "u", "JANUSGRAPH_PASSWORD": "hunter2"}
    settings = from_env(StoreSettings, env)
    assert settings.janusgraph_password == "hunter2" and "hunter2" not in repr(settings)
    assert endpoint_from(settings).password == "hunter2"
