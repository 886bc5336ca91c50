"""The systemd units: exposure as systemd itself scores it, clean parsing, the real CLI, and the
signer really running inside the unit's system call filter and W^X rule.

`systemd-analyze security --offline=true` scores the unit files as shipped (and the signer with
its exchange-egress drop-in). What systemd would enforce at run time cannot be switched on here
(no systemd as PID 1), so the last test runs a real `bulkhead-signer serve` under strace with the
kernel's own W^X switch (PR_SET_MDWE, what MemoryDenyWriteExecute= means) and checks that every
system call it made while signing an order is one the unit's SystemCallFilter= allows.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from signer.cli import build_parser
from tests.infra.units import (
    SYSTEMD_ANALYZE,
    UNITS,
    allowed_syscalls,
    exposure,
    one,
    parse_unit,
    values,
)
from tests.signer.stack import KEY_ID, build_stack

pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

SIGNER = UNITS / "bulkhead-signer.service"
ENGINE = UNITS / "bulkhead-engine.service"
LIMITS = {"bulkhead-signer.service": 2.0, "bulkhead-engine.service": 4.0}
VENV_BIN = Path(sys.executable).parent


def alone(unit: Path, tmp_path: Path) -> Path:
    """A copy without the drop-ins systemd would pick up from beside the file in infra/."""
    copy = tmp_path / unit.name
    shutil.copyfile(unit, copy)
    return copy


@pytest.mark.parametrize("unit", [SIGNER, ENGINE], ids=lambda p: p.name)
def test_unit_exposure_is_within_its_limit(unit: Path, tmp_path: Path) -> None:
    score, report = exposure(alone(unit, tmp_path))
    print(f"\n{unit.name}: systemd-analyze security exposure {score}")
    assert score <= LIMITS[unit.name], report
    if unit == SIGNER:
        assert "IP address allow list with only localhost entries" in report


def test_signer_exposure_stays_within_the_limit_with_internet_egress_allowed() -> None:
    """Scored in place: systemd itself merges bulkhead-signer.service.d/exchange-egress.conf."""
    score, report = exposure(SIGNER)
    print(f"\nbulkhead-signer.service + exchange-egress.conf: exposure {score}")
    assert "does not define an IP address allow list" in report  # the drop-in took effect
    assert score <= LIMITS[SIGNER.name], report


@pytest.mark.parametrize("unit", [SIGNER, ENGINE], ids=lambda p: p.name)
def test_unit_verifies_without_a_warning(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` needs ExecStart= to exist: point it at this checkout's script."""
    text = unit.read_text()
    target = tmp_path / unit.name
    installed = re.search(r"ExecStart=(/opt/bulkhead/\w+/bin/)(\S+)", text)
    assert installed, "ExecStart= is not under /opt/bulkhead/*/bin/"
    script = VENV_BIN / installed.group(2)
    assert script.exists(), f"{script} (the real entry point) is missing"
    target.write_text(text.replace(installed.group(1) + installed.group(2), str(script)))
    done = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", "--no-pager", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    mine = [ln for ln in (done.stdout + done.stderr).splitlines() if unit.name in ln]
    assert done.returncode == 0 and not mine, done.stdout + done.stderr


def test_signer_unit_is_hardened_as_the_threat_model_requires() -> None:
    """The settings the exposure score weighs lightly but the signer relies on."""
    unit = parse_unit(SIGNER.read_text())
    expected = {
        "UMask": "0077",
        "LimitCORE": "0",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "PrivateUsers": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
        "SystemCallArchitectures": "native",
        "StateDirectoryMode": "0700",
    }
    assert {k: one(unit, k) for k in expected} == expected
    assert one(unit, "User") not in ("root", "0")
    assert not values(unit, "ReadWritePaths")  # writable: its StateDirectory= only


def test_signer_unit_runs_serve_with_the_master_key_from_a_credential() -> None:
    unit = parse_unit(SIGNER.read_text())
    argv = shlex.split(one(unit, "ExecStart"))
    assert Path(argv[0]).name == "bulkhead-signer"
    args = build_parser().parse_args([a.replace("%d", "/run/credentials/x") for a in argv[1:]])
    assert args.cmd == "serve" and not args.insecure_dev
    assert args.data_dir == "/var/lib/" + one(unit, "StateDirectory")
    assert args.master_key_file == "/run/credentials/x/master.key"  # %d = $CREDENTIALS_DIRECTORY
    creds = dict(v.split(":", 1) for v in values(unit, "LoadCredential"))
    assert set(creds) == {"master.key"}
    assert not creds["master.key"].startswith(args.data_dir)  # never beside the keystore
    assert not values(unit, "Environment") and not values(unit, "EnvironmentFile")


def test_engine_unit_runs_bulkhead_run_and_reaches_the_signer_socket_by_group() -> None:
    engine, signer = parse_unit(ENGINE.read_text()), parse_unit(SIGNER.read_text())
    argv = shlex.split(one(engine, "ExecStart"))
    assert Path(argv[0]).name == "bulkhead" and argv[1:3] == ["run", "--config"]
    assert one(engine, "User") != one(signer, "User")
    assert one(engine, "SupplementaryGroups") == one(signer, "Group")
    assert one(signer, "RuntimeDirectoryMode") == "0750"  # group may enter, not list or write
    assert one(engine, "UMask") == "0077" and one(engine, "NoNewPrivileges") == "yes"


# --- the signer inside the unit's system call filter and W^X rule ---------------------------

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1:
    sys.exit(f"PR_SET_MDWE failed: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""
WX_PROBE = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    print("refused")
else:
    print("allowed")
"""
NOBODY = 65534
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)")


def unprivileged() -> list[str]:
    """As root, run the signer as uid `nobody` in a user namespace, as PrivateUsers=yes would.

    Deployed, the signer is never root; as root SQLite would also fchown its WAL files (a call
    the unit's filter refuses), so a root test run must not trace the signer as root.
    """
    if os.geteuid() != 0:
        return []
    return ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}", "--"]


def sigterm_main_thread(pid: int) -> None:
    """SIGTERM aimed at the signer's main thread (tgkill), where CPython runs signal handlers.

    systemd sends it to the process; the kernel then picks the main thread unless that thread
    is stopped, which under strace it often is (every syscall stop), so a process-directed
    signal can land on a gRPC thread while `serve` waits on an Event with no timeout, and the
    handler never runs. Aiming at the main thread keeps the traced shutdown deterministic.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, pid, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def kernel_has_mdwe() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.skipif(SYS_TGKILL is None, reason=f"no tgkill number for {platform.machine()}")
@pytest.mark.skipif(not kernel_has_mdwe(), reason="kernel has no PR_SET_MDWE (Linux < 6.3)")
def test_signer_signs_an_order_within_the_units_syscall_filter_and_without_wx_memory(
    tmp_path: Path,
) -> None:
    # The W^X switch survives exec and is enforced: the probe's W+X mapping is refused.
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_EXEC, sys.executable, "-c", WX_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "refused", probe.stderr

    stack = build_stack(tmp_path, None)
    stack.server.stop(0)  # set-up only; the traced CLI process serves
    trace = tmp_path / "serve.strace"
    serve = [sys.executable, "-m", "signer.cli", "serve"]
    serve += ["--data-dir", str(stack.data_dir), "--master-key-file", str(stack.keyfile)]
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(trace), *unprivileged(), sys.executable, "-c", MDWE_EXEC]
        + serve,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "serve.log", "w"),  # the child writes it; freed with the test
        stdin=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")},
    )
    started: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / "serve.log").read_text()
        started.update(json.loads(line))
        stack.addresses = started["serving"]
        client = stack.client()
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        reply = client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "sandboxed-1")
        assert reply.decision.allowed and reply.order.status == "open", reply
        assert client.get_policy().key_id == KEY_ID
        sigterm_main_thread(started["pid"])
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:  # killing strace alone would leave the signer running
            if started:
                os.kill(started["pid"], signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=30)
        stack.stop()

    lines = trace.read_text().splitlines()
    # Only the signer counts, from its own (last) execve on: unshare and the W^X wrapper before
    # it are test set-up.
    start = max(i for i, ln in enumerate(lines) if re.search(r"execve\(.*\"-m\", \"signer.cli", ln))
    used = {m.group(1) for ln in lines[start + 1 :] if (m := SYSCALL.match(ln))}
    allowed = allowed_syscalls(parse_unit(SIGNER.read_text()))
    assert {"bind", "listen", "connect", "prctl", "prlimit64"} <= used  # the trace is real
    assert used - allowed == set(), f"the unit would kill the signer on: {used - allowed}"
    # What systemd's MemoryDenyWriteExecute= filter also refuses: W+X maps, exec-gaining mprotect.
    wx = [
        ln for ln in lines[start:] if re.search(r"\b(mmap|mprotect)\(.*PROT_WRITE\|PROT_EXEC", ln)
    ]
    gain = [ln for ln in lines[start:] if re.search(r"\bmprotect\(.*PROT_EXEC", ln)]
    assert wx == [] and gain == [], wx + gain


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_creates_the_users_and_groups_the_units_run_as(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [
            "systemd-sysusers",
            "--dry-run",
            f"--root={tmp_path}",
            str(UNITS / "bulkhead.sysusers.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    created = set(re.findall(r"Creating (?:user|group) '([^']+)'", done.stdout + done.stderr))
    needed = set()
    for unit in (SIGNER, ENGINE):
        parsed = parse_unit(unit.read_text())
        needed |= {*values(parsed, "User"), *values(parsed, "Group")}
        needed |= {g for v in values(parsed, "SupplementaryGroups") for g in v.split()}
    assert needed <= created, needed - created
