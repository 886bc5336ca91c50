"""Process and storage hardening for the signer, applied before any key is unsealed.

A signer holding unsealed keys must not leave them in a core file, must not let another process
of the same user read its memory through ptrace or /proc/<pid>/mem, and must not create files
anyone else can read. What the OS allows is applied; what it refuses is reported, not hidden.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

from signer.db import DB_FILENAME, check_private_path
from signer.errors import ConfigError

# <linux/prctl.h>
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

SIGNER_UMASK = 0o077


@dataclass(frozen=True)
class HardeningReport:
    """What took effect. `dumpable_cleared` is None where the OS has no such switch."""

    umask: int
    previous_umask: int
    core_dumps_disabled: bool
    dumpable_cleared: bool | None
    notes: tuple[str, ...] = field(default=())

    @property
    def fully_hardened(self) -> bool:
        return (
            self.umask == SIGNER_UMASK
            and self.core_dumps_disabled
            and self.dumpable_cleared is not False
        )

    def summary(self) -> str:
        """One line for the startup log."""
        dumpable = {True: "off", False: "FAILED", None: "n/a"}[self.dumpable_cleared]
        parts = [
            f"umask {self.umask:03o}",
            f"core dumps {'off' if self.core_dumps_disabled else 'FAILED'}",
            f"ptrace/dumpable {dumpable}",
            *self.notes,
        ]
        return "; ".join(parts)


def _prctl(option: int, arg: int = 0) -> int:
    """Call prctl(2) through libc; returns its result, or raises OSError with errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    libc.prctl.restype = ctypes.c_int
    result = libc.prctl(option, arg, 0, 0, 0)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def is_dumpable() -> bool | None:
    """PR_GET_DUMPABLE on Linux; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return _prctl(PR_GET_DUMPABLE) != 0


def harden_process() -> HardeningReport:
    """umask 077, no core dumps (soft and hard limit 0), and on Linux PR_SET_DUMPABLE 0.

    A non-dumpable process gets no core file and refuses ptrace attach and /proc/<pid>/mem
    reads from processes of the same uid (only CAP_SYS_PTRACE overrides). Linux resets the
    flag on execve, so call this in the signer process itself, before unsealing anything.
    """
    notes: list[str] = []
    previous = os.umask(SIGNER_UMASK)

    core_off = False
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        core_off = resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    except (ValueError, OSError) as exc:
        notes.append(f"RLIMIT_CORE not lowered: {exc}")

    dumpable_cleared: bool | None = None
    if sys.platform.startswith("linux"):
        try:
            _prctl(PR_SET_DUMPABLE, 0)
            dumpable_cleared = _prctl(PR_GET_DUMPABLE) == 0
        except (OSError, AttributeError) as exc:
            dumpable_cleared = False
            notes.append(f"prctl(PR_SET_DUMPABLE) failed: {exc}")
    else:
        notes.append(f"no ptrace/dumpable switch applied on {sys.platform}")

    return HardeningReport(
        umask=SIGNER_UMASK,
        previous_umask=previous,
        core_dumps_disabled=core_off,
        dumpable_cleared=dumpable_cleared,
        notes=tuple(notes),
    )


def create_data_dir(path: Path) -> Path:
    """Create the data directory with mode 0700 (or check an existing one)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_data_dir(path)
    return path


def check_data_dir(path: Path, db_filename: str = DB_FILENAME) -> None:
    """Refuse (InsecureStorage) a data dir, DB file, or SQLite side file open to group/other.

    Called at startup before the keystore is opened. Missing DB files are fine (first run).
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"data directory {path} does not exist or is not a directory")
    check_private_path(path)
    db = path / db_filename
    for candidate in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if candidate.exists():
            check_private_path(candidate)
