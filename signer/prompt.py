"""Reading secrets from an operator: a no-echo prompt on a terminal, one line per secret on a pipe.

Secrets never come from argv or the environment (both are visible to other processes and end
up in shell history and crash reports). On a terminal, getpass turns echo off; on a pipe (a
deployment script, `pass show ... |`) exactly one line is read per secret, so several secrets
can be fed in order. Nothing read here is ever printed or put into an exception message.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from signer.errors import ConfigError


def _label(prompt: str) -> str:
    return prompt.strip().rstrip(":").strip() or "secret"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def read_secret(prompt: str, *, stdin: TextIO | None = None) -> str:
    """Read one secret: getpass on a terminal, else exactly one line. Empty is refused."""
    stream = sys.stdin if stdin is None else stdin
    if _is_tty(stream):
        try:
            value = getpass.getpass(prompt)
        except EOFError:
            raise ConfigError(f"{_label(prompt)}: no input") from None
    else:
        line = stream.readline()
        if line == "":
            raise ConfigError(f"{_label(prompt)}: no input (standard input is at its end)")
        value = line[:-1] if line.endswith("\n") else line
        if value.endswith("\r"):
            value = value[:-1]
    if not value:
        raise ConfigError(f"{_label(prompt)}: an empty secret is refused")
    return value


def read_secret_lines(
    n: int, *, prompts: Sequence[str] | None = None, stdin: TextIO | None = None
) -> list[str]:
    """Read `n` secrets in order (e.g. API secret then exchange passphrase), one per line."""
    if n < 1:
        raise ConfigError(f"read_secret_lines: n must be >= 1 (got {n})")
    if prompts is not None and len(prompts) != n:
        raise ConfigError(f"read_secret_lines: {len(prompts)} prompts for {n} secrets")
    labels = list(prompts) if prompts is not None else [f"Secret {i + 1}: " for i in range(n)]
    return [read_secret(label, stdin=stdin) for label in labels]


def read_new_secret(prompt: str, *, stdin: TextIO | None = None) -> str:
    """Read a new secret (e.g. a passphrase at init); on a terminal ask twice and compare."""
    stream = sys.stdin if stdin is None else stdin
    first = read_secret(prompt, stdin=stream)
    if _is_tty(stream):
        again = read_secret(f"{_label(prompt)} (again): ", stdin=stream)
        if again != first:
            raise ConfigError(f"{_label(prompt)}: the two entries differ")
    return first
