"""Project-wide contracts: generated stubs are fresh, and the components' import arrows hold."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "bulkhead" / "signer" / "v1"


def test_committed_grpc_stubs_match_the_protos(tmp_path: Path) -> None:
    """Regenerate the stubs the way `make protos` does and compare byte for byte."""
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "bulkhead" / "signer" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    committed = sorted(
        p.name for p in GENERATED.iterdir() if p.name != "__init__.py" and p.is_file()
    )
    assert generated == committed, "stub files differ from the protos: run `make protos`"
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, generated, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch + errors}: run `make protos`"


def test_import_contracts_hold() -> None:
    """signer never imports botengine/simexchange; botengine never imports signer."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed in this environment"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
