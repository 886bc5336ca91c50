"""Process hardening takes effect inside the process, and insecure storage stops the signer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from signer.db import DB_FILENAME
from signer.errors import ConfigError, InsecureStorage
from signer.hardening import HardeningReport, check_data_dir, create_data_dir

ROOT = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")

# Runs in a fresh interpreter: observes the process state before and after harden_process(),
# with its own prctl/getrlimit calls rather than the module's, so the module is not grading itself.
_PROBE = r"""
import ctypes, json, os, resource, sys
from pathlib import Path

def observe():
    mask = os.umask(0)
    os.umask(mask)
    state = {"umask": mask, "core": list(resource.getrlimit(resource.RLIMIT_CORE))}
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        state["dumpable"] = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                state["proc_umask"] = int(line.split()[1], 8)
    return state

before = observe()
from signer.hardening import harden_process
report = harden_process()
after = observe()
probe = Path(sys.argv[1])
probe.write_text("x")
print(json.dumps({
    "before": before,
    "after": after,
    "file_mode": probe.stat().st_mode & 0o777,
    "report": {
        "umask": report.umask,
        "core_dumps_disabled": report.core_dumps_disabled,
        "dumpable_cleared": report.dumpable_cleared,
        "fully_hardened": report.fully_hardened,
        "summary": report.summary(),
    },
}))
"""


def _run_probe(tmp_path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "created-after-hardening")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),  # start from a typical, too-open umask
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_harden_process_sets_umask_and_disables_core_dumps(tmp_path: Path) -> None:
    out = _run_probe(tmp_path)
    assert out["before"]["umask"] == 0o022
    assert out["after"]["umask"] == 0o077
    assert out["after"]["core"] == [0, 0]  # hard limit too: it cannot be raised again
    assert out["file_mode"] == 0o600  # a file the signer creates is private
    assert out["report"]["umask"] == 0o077 and out["report"]["core_dumps_disabled"] is True


@pytest.mark.skipif(not LINUX, reason="PR_SET_DUMPABLE and /proc are Linux-only")
def test_harden_process_clears_dumpable_on_linux(tmp_path: Path) -> None:
    """Non-dumpable: no core, and no ptrace attach or /proc/<pid>/mem by same-uid processes."""
    out = _run_probe(tmp_path)
    assert out["before"]["dumpable"] == 1
    assert out["after"]["dumpable"] == 0
    assert out["after"]["proc_umask"] == 0o077
    assert out["report"]["dumpable_cleared"] is True and out["report"]["fully_hardened"] is True
    assert out["report"]["summary"] == "umask 077; core dumps off; ptrace/dumpable off"


def test_report_summary_names_what_failed() -> None:
    report = HardeningReport(
        umask=0o077,
        previous_umask=0o022,
        core_dumps_disabled=False,
        dumpable_cleared=None,
        notes=("RLIMIT_CORE not lowered: denied",),
    )
    assert not report.fully_hardened
    assert report.summary() == (
        "umask 077; core dumps FAILED; ptrace/dumpable n/a; RLIMIT_CORE not lowered: denied"
    )


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def test_private_data_dir_and_db_file_are_accepted(tmp_path: Path) -> None:
    data = _private_dir(tmp_path / "data")
    check_data_dir(data)  # first run: no DB yet
    for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
        (data / name).write_bytes(b"")
        (data / name).chmod(0o600)
    check_data_dir(data)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770])
def test_data_dir_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    data = _private_dir(tmp_path / "data")
    data.chmod(mode)
    with pytest.raises(InsecureStorage, match=f"mode {mode:04o}.*chmod 700"):
        check_data_dir(data)


@pytest.mark.parametrize("name", [DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"])
def test_db_file_readable_by_others_is_refused(tmp_path: Path, name: str) -> None:
    data = _private_dir(tmp_path / "data")
    (data / name).write_bytes(b"")
    (data / name).chmod(0o644)
    with pytest.raises(InsecureStorage, match=f"{name} has mode 0644.*chmod 600"):
        check_data_dir(data)


def test_missing_data_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_data_dir(tmp_path / "absent")


def test_create_data_dir_is_private_even_under_an_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        created = create_data_dir(tmp_path / "fresh" / "data")
    finally:
        os.umask(previous)
    assert created.stat().st_mode & 0o777 == 0o700
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(InsecureStorage):
        create_data_dir(tmp_path / "open")
