"""With DEBUG logging everywhere, a full scenario with its errors leaves no secret anywhere.

The operator's steps run through the real `bulkhead-signer` CLI (the exchange secret only on
stdin), `serve` runs at DEBUG, and the scenario covers an order, a policy denial, an exchange
refusal, sign-only, malformed input, a forged signature, reads, a cancel, admin freeze/unfreeze,
and the exchange going away under the signer. Then the signer gets SIGSEGV.

Searched for the exchange secret, the master key, the audit signing key and the bot's key (raw,
hex, base64): the signer's log, every CLI output, every gRPC reply and error text, every file in
the data dir, the exports, the process's argv and environment, and core files: the signer runs
with RLIMIT_CORE lifted by its parent, so only its own hardening (RLIMIT_CORE 0, not dumpable)
can keep a core from being written; a control process in the same directory proves this
machine does write core files.

tests/signer/test_no_secret_leaks.py does the INFO-level version; DEBUG (urllib3 logs every
request line there), process files and cores are what this adds.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from botengine.signer_client import AdminClient, Identity, SignerClient
from bulkhead.signer.v1 import signer_pb2 as pb
from signer.db import read_session
from signer.server import AUDIT_KEY_SECRET, MasterKeySource, open_signer
from tests.reliability.processes import (
    ROOT,
    SIGNER_DEBUG_MAIN,
    SignerProcess,
    SimProcess,
    child_env,
    wait_until,
)
from tests.reliability.provision import OPERATOR_ID
from tests.reliability.result import Result
from tests.signer.stack import POLICY_TOML, write_config

CRASH_PROBE = (
    "import os, resource, signal; "
    "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)); "
    "os.kill(os.getpid(), signal.SIGSEGV)"
)


def encodings(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret), base64.b16encode(secret)]


class Scan:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.keyfile = root / "master.key"
        self.seen: dict[str, bytes] = {}
        self.steps = 0  # CLI commands and gRPC requests
        self.errors = 0  # of which refused, denied or failed: the error paths walked

    def cli(self, *args: str, stdin: str = "", ok: bool = True) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                SIGNER_DEBUG_MAIN,
                *args,
                "--data-dir",
                str(self.data),
                "--master-key-file",
                str(self.keyfile),
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=child_env(),
        )
        n = len(self.seen)
        self.seen[f"cli #{n} argv"] = " ".join(args).encode()
        self.seen[f"cli #{n} {args[0]} output"] = (done.stdout + done.stderr).encode()
        self.steps += 1
        self.errors += done.returncode != 0
        if (done.returncode == 0) != ok:
            raise RuntimeError(f"{' '.join(args[:2])} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def keep(self, label: str, value: object) -> None:
        self.seen[f"{label} #{len(self.seen)}"] = str(value).encode()

    def attempt(self, label: str, call: object) -> None:
        self.steps += 1
        try:
            reply = call()  # type: ignore[operator]
        except grpc.RpcError as e:
            self.errors += 1
            self.keep(label, f"{e.code().name} {e.details()}")
            return
        decision = getattr(reply, "decision", None)
        self.errors += bool(getattr(reply, "exchange_error", "")) or (
            decision is not None and not decision.allowed
        )
        self.keep(label, reply)


def run(root: Path) -> Result:
    result = Result("secrets at DEBUG: logs, DB, exports, errors, argv/env, cores")
    sim = SimProcess.start(root, {"USDT": "100000", "BTC": "0.001"})
    scan = Scan(root)
    operator, bot = Identity.generate(OPERATOR_ID), Identity.generate("bot-0")
    (root / "op.pub").write_text(operator.public_key.hex())
    cwd = root / "cwd"
    cwd.mkdir()
    signer = SignerProcess(scan.data, scan.keyfile, root / "signer.log", debug=True, cwd=cwd)
    try:
        scan.cli(
            "init",
            "--create-key-file",
            "--kdf",
            "interactive",
            "--operator",
            f"{OPERATOR_ID}={root / 'op.pub'}",
        )
        # Reconcile every second with no grace: its passes against the dead exchange are part
        # of the scenario (the grace only protects requests in flight, irrelevant here).
        write_config(
            scan.data, sim.base_url, None, "reconcile_interval_s = 1\nreconcile_grace_s = 0"
        )
        add = ("keys", "add", "--key-id", "k1", "--exchange", "binance", "--api-key", sim.api_key)
        scan.cli(*add, stdin=sim.secret + "\n")
        scan.cli(*add, stdin=sim.secret + "\n", ok=False)  # an error path with the secret in hand
        (root / "policy.toml").write_text(POLICY_TOML)
        scan.cli("policy", "set", "k1", str(root / "policy.toml"))
        scan.cli("bots", "add", "bot-0", "--pubkey", bot.public_key.hex(), "--keys", "k1")
        addresses = signer.start(core_dumps_allowed=True)
        result.check(signer.core_limit() == ("0", "0"), f"RLIMIT_CORE is {signer.core_limit()}")
        for name in ("cmdline", "environ"):
            scan.seen[f"/proc/PID/{name}"] = Path(f"/proc/{signer.pid}/{name}").read_bytes()
        scenario(scan, addresses, bot, operator, sim)
        wait_until(
            "a reconcile pass against the dead exchange",
            lambda: b"bulkhead.signer.reconcile" in (root / "signer.log").read_bytes(),
            timeout=30,
        )
        code = signer.signal(signal.SIGSEGV)
        result.check(code == -signal.SIGSEGV, f"the signer ended with {code}, not SIGSEGV")
        cores = [p.name for p in cwd.iterdir()]
        result.check(not cores, f"files left in the signer's directory after SIGSEGV: {cores}")
        control = subprocess.run([sys.executable, "-c", CRASH_PROBE], cwd=cwd, timeout=120)
        result.check(
            control.returncode == -signal.SIGSEGV and any(cwd.iterdir()),
            "control: an unhardened process left no core file, so the check above proves nothing",
        )
        for p in cwd.iterdir():
            p.unlink()
        export = root / "audit.jsonl"
        scan.cli("audit", "export", "--out", str(export))
        verify = scan.cli(
            "audit", "verify", str(export), "--pubkey", str(scan.data / "audit_pubkey.hex")
        )
        result.check(verify.startswith("OK"), f"audit verify: {verify}")
        log = (root / "signer.log").read_bytes()
        result.check(b" DEBUG " in log, "the signer's log holds no DEBUG line: not at DEBUG")
        scan.seen["signer.log"] = log
        scan.seen["export"] = export.read_bytes()
        for path in scan.data.rglob("*"):
            if path.is_file():
                scan.seen[str(path)] = path.read_bytes()
        needles = secrets_to_find(scan, sim, bot, operator)
        for name, blob in scan.seen.items():
            for what, needle in needles:
                result.check(needle not in blob, f"{what} found in {name}")
        result.trials, result.faults = scan.steps, scan.errors + 1  # + the SIGSEGV
        result.figures = {
            "searched": f"{len(scan.seen)} texts, {sum(map(len, scan.seen.values())) >> 10} KiB",
            "DEBUG lines": str(log.count(b" DEBUG ")),
        }
    finally:
        signer.stop()
        sim.stop()
    return result


def scenario(
    scan: Scan, addresses: dict[str, str], bot: Identity, operator: Identity, sim: SimProcess
) -> None:
    client = SignerClient(addresses["bot_unix"], bot, "k1", timeout=20)
    admin = AdminClient(addresses["admin_unix"], operator, timeout=20)
    forger = SignerClient(addresses["bot_unix"], Identity.generate("bot-0"), "k1", timeout=20)
    price = sim.limit_price()
    try:
        a = scan.attempt
        a("order", lambda: client.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "o-1"))
        a("denied", lambda: client.submit_order("DATA/USDT", "buy", "limit", "100", "0.07", "d-1"))
        a(
            "refused by the exchange",
            lambda: client.submit_order("BTC/USDT", "sell", "limit", "0.05", price, "x-1"),
        )
        a(
            "sign-only",
            lambda: client.submit_order(
                "BTC/USDT", "buy", "limit", "0.001", price, "so-1", mode="sign-only"
            ),
        )
        a("malformed", lambda: client.submit_order("BTC/USDT", "buy", "limit", "NaN", price, "m"))
        a("forged", forger.get_policy)
        a(
            "bad signature length",
            lambda: client.call("GetPolicy", pb.SignedRequest(body=b"x", signature=b"s" * 63)),
        )
        for kind, kw in (
            ("balances", {}),
            ("open_orders", {"symbol": "BTC/USDT"}),
            ("order", {"symbol": "BTC/USDT", "client_order_id": "o-1"}),
            ("my_trades", {"symbol": "BTC/USDT"}),
        ):
            a(f"read {kind}", lambda k=kind, kw=kw: client.read(k, **kw))
        a("cancel", lambda: client.cancel_order("BTC/USDT", "o-1"))
        a("freeze", lambda: admin.freeze("k1", reason="drill"))
        a("unfreeze", lambda: admin.unfreeze("k1", reason="drill over"))
        a("policy", client.get_policy)
        sim.stop()  # the exchange goes away under the signer: transport errors, with URLs
        a(
            "order, exchange down",
            lambda: client.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "down-1"),
        )
        a("read, exchange down", lambda: client.read("balances"))
        a("cancel, exchange down", lambda: client.cancel_order("BTC/USDT", "so-1"))
    finally:
        for c in (client, admin, forger):
            c.close()


def secrets_to_find(
    scan: Scan, sim: SimProcess, bot: Identity, operator: Identity
) -> list[tuple[str, bytes]]:
    opened = open_signer(scan.data, MasterKeySource(keyfile=scan.keyfile))
    try:
        with read_session(opened.engine) as s:
            audit_key = opened.keystore.get_secret(s, AUDIT_KEY_SECRET)
    finally:
        opened.close()
    master_text = scan.keyfile.read_bytes().strip()
    found: list[tuple[str, bytes]] = [("the master key file", master_text)]
    try:
        found += [("the master key", n) for n in encodings(bytes.fromhex(master_text.decode()))]
    except ValueError:
        found += [("the master key", n) for n in encodings(master_text)]
    found += [("the exchange secret", n) for n in encodings(sim.secret.encode())]
    found += [("the audit signing key", n) for n in encodings(audit_key)]
    found += [("the bot's key", n) for n in encodings(bytes(bot.signing_key))]
    found += [("the operator's key", n) for n in encodings(bytes(operator.signing_key))]
    return found
