"""Bearer tokens from a file that holds only their hashes, re-read when it changes.

The file (``TOPOLOGY_TOKENS_FILE``) has one JSON object per line; blank lines and lines starting with
``#`` are skipped::

    {"name": "otel-collector", "sha256": "9f86d081884c7d65...", "scopes": ["ingest"]}

``sha256`` is the hex SHA-256 of the token. A token is 32 random bytes (``tpt_`` + 43 URL-safe
characters), so a fast unsalted hash is enough: nobody can search 2**256 candidates, and a slow
password hash would cost every request its CPU time. Make a token and its line with::

    python -m service.tokens --name otel-collector --scopes ingest >> tokens.jsonl

which prints the token once on stderr (hand it to the client) and the line on stdout.

The file is checked (one ``stat``) on every lookup and re-read when its inode, size or modification
time changed: add or revoke a token by rewriting the file (``mv new tokens.jsonl`` is atomic). A file
that became malformed keeps the previous tokens and logs why, a file that is gone accepts no token
(:mod:`service.watched`); at start-up either is an error (:class:`TokenFileError`), so a typo is seen
before the server listens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

from service.identity import Identity, parse_scopes
from service.watched import WatchedFile

__all__ = ["TokenFile", "TokenFileError", "hash_token", "new_token", "token_line"]

PREFIX = "tpt_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TokenFileError(ValueError):
    """The token file cannot be read or a line is malformed; the message names the file and line."""


def new_token() -> str:
    """A fresh bearer token: 256 random bits, prefixed so secret scanners can recognise it."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_line(name: str, scopes: Iterable[str], token: str) -> str:
    """The file line for ``token`` (its hash only)."""
    checked = parse_scopes(scopes, f"token {name!r}")
    return json.dumps({"name": name, "sha256": hash_token(token), "scopes": sorted(checked)})


def _parse(path: Path, data: bytes) -> dict[str, Identity]:
    by_hash: dict[str, Identity] = {}
    for number, raw in enumerate(data.decode("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except ValueError as e:
            raise TokenFileError(f"{where}: not a JSON object: {e}") from None
        if not isinstance(entry, dict):
            raise TokenFileError(f"{where}: not a JSON object")
        name, digest, scopes = entry.get("name"), entry.get("sha256"), entry.get("scopes")
        if not isinstance(name, str) or not name.strip():
            raise TokenFileError(f"{where}: \"name\" must be a non-empty string")
        if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise TokenFileError(f"{where}: \"sha256\" must be 64 hex digits (the token's SHA-256)")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise TokenFileError(f"{where}: \"scopes\" must be a list of strings")
        granted = parse_scopes(scopes, where)
        if digest.lower() in by_hash:
            raise TokenFileError(f"{where}: the same token hash is listed twice")
        by_hash[digest.lower()] = Identity(name.strip(), granted, "token")
    return by_hash


class TokenFile:
    """The tokens of one file; :meth:`lookup` answers the identity of a presented token.

    Raises :class:`TokenFileError` if the file cannot be read or is malformed at start-up."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            empty: dict[str, Identity] = {}
            self._file = WatchedFile(path, _parse, empty, "TOPOLOGY_TOKENS_FILE")
        except ValueError as e:
            raise TokenFileError(str(e)) from None

    def __len__(self) -> int:
        return len(self._file.current)

    def lookup(self, token: str) -> Identity | None:
        # Found by the hash of the token: how long the lookup takes tells nothing about the token.
        return self._file.current.get(hash_token(token))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tokens",
        description="Make a bearer token: the token goes to stderr (give it to the client), "
        "the line for TOPOLOGY_TOKENS_FILE to stdout.",
    )
    parser.add_argument("--name", required=True, help="who holds the token (shown in logs)")
    parser.add_argument("--scopes", required=True, help="comma-separated: read, ingest, admin")
    args = parser.parse_args(argv)
    token = new_token()
    try:
        line = token_line(args.name, args.scopes.split(","), token)
    except ValueError as e:
        parser.error(str(e))
    print(token, file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
