"""The container files, checked without a Docker engine (only the client is installed here).

The Dockerfiles are parsed and held to the deployment rules: multi-stage, a numeric non-root
user, no secret copied into a layer or passed as a build argument, and the signer image built
from signer/ and the contract package alone. What each image would contain is then exercised for
real: a Python process that cannot import what the image leaves out runs the signer's CLI (and
the engine's), so a stray import of botengine or numpy from signer code fails here, not in a
cluster.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from signer.cli import build_parser
from tests.infra.units import INFRA

ROOT = INFRA.parent
CONTAINER = INFRA / "container"
SIGNER_FILE = CONTAINER / "Dockerfile.signer"
ENGINE_FILE = CONTAINER / "Dockerfile.engine"
SIGNER_REQS = CONTAINER / "requirements-signer.txt"
SECRET_NAME = re.compile(r"SECRET|PASSW|TOKEN|API_?KEY|PRIVATE|MASTER|CREDENTIAL", re.I)
SECRET_PATH = re.compile(
    r"\.(key|pem|crt|p12|pfx|hex)$|master|\.env|(signer|engine|accounts)\.toml"
)
ENGINE_ONLY = {"numpy", "matplotlib", "rich"}


def parse(path: Path) -> list[list[tuple[str, str]]]:
    """[global ARGs, stage 1, stage 2, ...], each a list of (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    parts: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts.append([])
        assert len(parts) > 1 or word == "ARG", f"{path.name}: {word} before the first FROM"
        parts[-1].append((word, rest.strip()))
    return parts


def instructions(path: Path) -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM."""
    return parse(path)[1:]


def copies(stage: list[tuple[str, str]]) -> list[tuple[str | None, list[str]]]:
    """COPY instructions as (--from stage or None for the build context, source paths)."""
    out = []
    for word, rest in stage:
        if word != "COPY":
            continue
        args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        src = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        out.append((src, paths[:-1]))
    return out


def exec_form(stage: list[tuple[str, str]], word: str) -> list[str]:
    found = [rest for w, rest in stage if w == word]
    assert len(found) == 1, f"{word} given {len(found)} times in the final stage"
    return json.loads(found[0])


def dockerignore_regexes() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            else:
                c = pattern[i]
                rx += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                i += 1
        out.append((negate, re.compile(rx + r"\Z")))
    return out


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a matched directory takes its contents."""
    parts = path.strip("/").split("/")
    verdict = False
    for negate, rx in dockerignore_regexes():
        if any(rx.match("/".join(parts[: n + 1])) for n in range(len(parts))):
            verdict = not negate
    return verdict


@pytest.mark.parametrize("dockerfile", [SIGNER_FILE, ENGINE_FILE], ids=lambda p: p.name)
def test_image_is_multi_stage_and_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    stages = instructions(dockerfile)
    assert len(stages) >= 2
    final = stages[-1]
    users = [(i, rest) for i, (w, rest) in enumerate(final) if w == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    last, user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, user
    assert all(w not in ("RUN", "COPY", "ADD") for w, _ in final[last:])  # nothing after as root
    assert [src for src, _ in copies(final)] == ["build"]  # the runtime takes only the venv
    assert exec_form(final, "ENTRYPOINT")[0].startswith("/opt/bulkhead/bin/")


@pytest.mark.parametrize("dockerfile", [SIGNER_FILE, ENGINE_FILE], ids=lambda p: p.name)
def test_no_secret_goes_into_a_layer_or_a_build_argument(dockerfile: Path) -> None:
    everything = [i for part in parse(dockerfile) for i in part]
    assert not [i for i in everything if i[0] == "ADD"]  # no remote fetches, no auto-extraction
    for word, rest in everything:
        if word in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], (word, rest)
    for stage in instructions(dockerfile):
        for src, paths in copies(stage):
            for p in paths if src is None else []:
                assert p not in (".", "./"), "COPY of the whole build context"
                assert not SECRET_PATH.search(p), f"{dockerfile.name} copies {p}"
                assert (ROOT / p).exists(), f"{dockerfile.name} copies {p}, which does not exist"
                assert not ignored(p), f"{p} is excluded by .dockerignore: the build would fail"


def test_signer_image_is_built_from_the_signer_and_the_contract_alone() -> None:
    context = {
        p.rstrip("/")
        for stage in instructions(SIGNER_FILE)
        for src, paths in copies(stage)
        if src is None
        for p in paths
    }
    assert context == {"infra/container/requirements-signer.txt", "signer", "bulkhead"}
    engine = {p.rstrip("/") for s in instructions(ENGINE_FILE) for f, ps in copies(s) for p in ps}
    assert "signer" not in engine and "botengine" in engine


@pytest.mark.parametrize(
    "path",
    [
        "master.key",
        "secrets/master.key.bak",
        "tls/ca.key",
        "tls/server.pem",
        "signer-data/signer.db",
        "signer-data/signer.db-wal",
        "deploy/signer.toml",
        "accounts.toml",
        ".env",
        ".git/config",
        ".venv/bin/python",
        "export.jsonl",
        "tests/signer/stack.py",
    ],
)
def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context(path: str) -> None:
    assert ignored(path)


def test_dockerignore_sends_every_source_file_the_images_need() -> None:
    sources = [p for pkg in ("signer", "bulkhead", "botengine") for p in (ROOT / pkg).rglob("*")]
    sources += [ROOT / "pyproject.toml", ROOT / "README.md", SIGNER_REQS]
    sent = [p for p in sources if p.is_file() and "__pycache__" not in p.parts]
    assert len(sent) > 50
    assert [p for p in sent if ignored(str(p.relative_to(ROOT)))] == []


def test_signer_requirements_match_pyproject_and_leave_out_the_engines() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {Requirement(r).name: str(Requirement(r)) for r in project}
    reqs = [Requirement(ln) for ln in SIGNER_REQS.read_text().splitlines() if ln[:1].isalnum()]
    assert {r.name: str(r) for r in reqs}.items() <= pinned.items()  # same ranges, no drift
    assert not ENGINE_ONLY & {r.name for r in reqs}


def closure(reqs: list[Requirement]) -> set[str]:
    """Distribution names installed by `pip install -r` of these requirements (as installed)."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.requires(name) or []:
            dep = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(e) for e in envs):
                todo.append((dep.name, frozenset(dep.extras)))
    return seen


def imported_modules(*packages: str) -> set[str]:
    """Top-level names of every import statement (module level or inside functions)."""
    names: set[str] = set()
    for pkg in packages:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_every_module_the_signer_imports_is_installed_in_the_signer_image() -> None:
    reqs = [Requirement(ln) for ln in SIGNER_REQS.read_text().splitlines() if ln[:1].isalnum()]
    installed = closure(reqs)
    owners = metadata.packages_distributions()
    third_party = imported_modules("signer", "bulkhead") - set(sys.stdlib_module_names)
    third_party -= {"signer", "bulkhead"}
    missing = {
        m: owners.get(m)
        for m in third_party
        if not {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(m, [])} & installed
    }
    assert missing == {}, f"signer imports these, the signer image lacks them: {missing}"
    assert not ENGINE_ONLY & installed


BLOCKER = """
import importlib, importlib.abc, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is not in this image", name=name)
        return None
sys.meta_path.insert(0, Block())
what, sys.argv = sys.argv[2], sys.argv[2:]
if what == "--import":
    for module in sys.argv[1:]:
        importlib.import_module(module)
else:
    runpy.run_module(what, run_name="__main__", alter_sys=True)
"""


def run_without(blocked: set[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Python as the image has it: importing anything in `blocked` fails."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_signer_cli_runs_without_the_engine_the_simulator_or_their_libraries(
    tmp_path: Path,
) -> None:
    """Every signer module imports, and `tls init` works, with only what the image holds."""
    blocked = {"botengine", "simexchange", *ENGINE_ONLY}
    modules = sorted(f"signer.{p.stem}" for p in (ROOT / "signer").glob("*.py"))
    done = run_without(blocked, "--import", *modules)
    assert done.returncode == 0, done.stderr
    done = run_without(blocked, "signer.cli", "tls", "init", "--out", str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t" / "server.pem").exists()
    # ... and the blocker really blocks: importing the engine from there fails.
    done = run_without(blocked, "--import", "botengine.signer_client")
    assert done.returncode != 0 and "botengine is not in this image" in done.stderr


def test_engine_cli_runs_without_the_signer() -> None:
    done = run_without({"signer", "simexchange"}, "botengine.cli", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()


def test_signer_image_command_is_a_real_serve_invocation() -> None:
    final = instructions(SIGNER_FILE)[-1]
    argv = exec_form(final, "ENTRYPOINT") + exec_form(final, "CMD")
    assert Path(argv[0]).name == "bulkhead-signer"
    args = build_parser().parse_args(argv[1:])
    assert args.cmd == "serve" and not args.insecure_dev
    workdir = [rest for w, rest in final if w == "WORKDIR"][-1]
    assert Path(args.data_dir).parent == Path(workdir)  # the 0700 directory the image creates
    assert args.master_key_file.startswith("/run/")  # mounted at run time, never in the image
