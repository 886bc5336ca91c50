"""Reading systemd unit files and asking `systemd-analyze` about them (helpers for the tests)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
INFRA = Path(__file__).resolve().parents[2] / "infra"
UNITS = INFRA / "systemd"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, value)] in file order (keys repeat; `\\` continues a line)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    logical = re.sub(r"\\\n\s*", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, f"{key}= set {len(found)} times"
    return found[0]


def exposure(unit_file: Path) -> tuple[float, str]:
    """`systemd-analyze security --offline=true`: the overall exposure figure and the report."""
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert done.returncode == 0 and m, (done.returncode, done.stdout, done.stderr)
    return float(m.group(1)), done.stdout


@functools.cache
def syscall_set(name: str) -> frozenset[str]:
    """A `@group` expanded recursively to system call names, as systemd knows it."""
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "--no-pager", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out: set[str] = set()
    for line in done.stdout.splitlines()[1:]:  # first line is the group's own name
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        out |= syscall_set(item) if item.startswith("@") else {item}
    return frozenset(out)


def allowed_syscalls(unit: dict[str, list[tuple[str, str]]]) -> frozenset[str]:
    """What `SystemCallFilter=` lines leave allowed: the first allow list minus every `~` list."""
    allowed: set[str] | None = None
    for spec in values(unit, "SystemCallFilter"):
        deny = spec.startswith("~")
        names: set[str] = set()
        for item in spec.removeprefix("~").split():
            names |= syscall_set(item) if item.startswith("@") else {item}
        if deny:
            assert allowed is not None, "a deny list without an allow list allows everything"
            allowed -= names
        else:
            allowed = names if allowed is None else allowed | names
    assert allowed is not None, "no SystemCallFilter= allow list"
    return frozenset(allowed)
