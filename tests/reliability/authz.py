"""Who may reach the signer, against a real `serve` process that is restarted along the way.

- a Unix-socket client running as another OS user (`nobody`, via os.setuid in a subprocess):
  refused by the socket's mode (0600: owner only; 0660: the socket's group too), while root
  and a member of the group (with 0660) get through;
- a TLS client certificate from another CA: refused at the handshake (a good one works);
- a bot using another bot's key id (PERMISSION_DENIED) and a bot calling Admin
  (UNAUTHENTICATED), each audited;
- intents captured before a restart (kill -9, then SIGTERM) replayed after it: nonces survive
  restarts, so each is refused as `replayed_nonce` and audited, and nothing new is placed;
- a bot whose clock is minutes off (either way): `stale_timestamp`, audited; seconds off within
  the allowed skew works.

tests/signer/test_authz.py and test_transport.py cover the same rules against an in-process
server; what is new here is the restart, the OS user, and a separate process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

from botengine.signer_client import Identity, SignerClient, now_ms
from bulkhead.signer.v1 import signer_pb2 as pb
from tests.reliability.processes import ROOT, SimProcess, child_env
from tests.reliability.provision import Auditor, Home, admin_client, bot_client, provision
from tests.reliability.result import Result
from tests.signer.stack import write_config
from tests.support.certs import write_tls_files

NOBODY = 65534
# Runs as root until it has loaded gRPC and made the (still unconnected) channel: the
# interpreter's own files are not readable by `nobody` here. Then it becomes UID/GID (glibc
# applies setuid to every thread) and sends the request bytes it was given on stdin; it holds no
# key (the test signed the request). The socket is connected only by that call.
AS_USER = r"""
import json, os, sys
import grpc, grpc._channel, grpc._common, grpc._utilities
uid, gid, address, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = bytes.fromhex(sys.stdin.read().strip())
channel = grpc.insecure_channel(address)
call = channel.unary_unary(method)
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
try:
    call(data, timeout=10)
    print(json.dumps({"code": "OK", "uid": os.getuid()}))
except grpc.RpcError as e:
    print(json.dumps({"code": e.code().name, "details": e.details(), "uid": os.getuid()}))
"""


def as_user(uid: int, gid: int, address: str, request: pb.SignedRequest) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            AS_USER,
            str(uid),
            str(gid),
            address,
            "/bulkhead.signer.v1.Signer/GetPolicy",
        ],
        input=request.SerializeToString().hex(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=child_env(),
    )
    if done.returncode != 0:
        return {"code": "CLIENT_FAILED", "details": done.stderr[-500:]}
    return json.loads(done.stdout)


class Setup:
    def __init__(self, root: Path, sim: SimProcess) -> None:
        # A socket directory every user may traverse, so only the socket's own mode decides.
        self.public = Path(tempfile.mkdtemp(prefix="bulkhead-sock-", dir="/tmp"))
        self.public.chmod(0o711)
        self.tls = write_tls_files(root / "tls")
        self.sim = sim
        self.home: Home = provision(root, sim, key_ids=("k1", "k2"), bots=2)

    def configure(self, socket_mode: str) -> None:
        extra = (
            f'socket = "{self.public / "signer.sock"}"\nsocket_mode = "{socket_mode}"\n'
            'tcp = "127.0.0.1:0"\nreconcile_interval_s = 0\n'
            f'[tls]\ncert = "{self.tls.server_cert}"\nkey = "{self.tls.server_key}"\n'
            f'client_ca = "{self.tls.ca}"\n'
        )
        write_config(self.home.data_dir, self.sim.base_url, None, extra)

    def close(self) -> None:
        shutil.rmtree(self.public, ignore_errors=True)


def refused(result: Result, label: str, call: Any, code: grpc.StatusCode, rule: str) -> None:
    try:
        call()
        result.violate(f"{label}: accepted")
    except grpc.RpcError as e:
        got = (e.code(), (e.details() or "").split(":")[0])
        result.check(got == (code, rule), f"{label}: {got}, wanted {(code, rule)}")
    result.faults += 1


def run(root: Path) -> Result:
    result = Result("authN/Z: users, CAs, keys, admin, replay across restarts, skew")
    sim = SimProcess.start(root)
    setup = Setup(root, sim)
    home = setup.home
    signer = home.process()
    placed: list[str] = []
    try:
        setup.configure("0600")
        addr = signer.start()
        bot0, price = bot_client(home, addr["bot_unix"], "bot-0"), sim.limit_price()
        sockets(
            result,
            "0600",
            addr["bot_unix"],
            bot0,
            expect={(0, 0): "OK", (NOBODY, NOBODY): "UNAVAILABLE", (NOBODY, 0): "UNAVAILABLE"},
        )
        mtls(result, setup, addr["bot_tcp"], home)
        # bot-0 may use k1 only; bot-1 k2 only.
        steal = bot_client(home, addr["bot_unix"], "bot-0", "k2")
        refused(
            result,
            "bot-0 on bot-1's key",
            lambda: steal.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "steal-1"),
            grpc.StatusCode.PERMISSION_DENIED,
            "key_not_granted",
        )
        steal.close()
        as_admin = admin_client(home, addr["admin_unix"])
        as_admin.identity = Identity("bot-0", home.bots["bot-0"].signing_key)
        refused(
            result,
            "bot-0 calling Admin.Freeze",
            lambda: as_admin.freeze(all_keys=True),
            grpc.StatusCode.UNAUTHENTICATED,
            "unknown_identity",
        )
        as_admin.close()
        # Captured on the wire: one placed, one denied by policy, one never sent.
        first = bot0.order_request("BTC/USDT", "buy", "limit", "0.001", price, "cap-placed")
        denied = bot0.order_request("DATA/USDT", "buy", "limit", "100", "0.07", "cap-denied")
        result.check(bot0.call("SubmitOrder", first).decision.allowed, "cap-placed refused")
        placed.append("cap-placed")
        result.check(not bot0.call("SubmitOrder", denied).decision.allowed, "DATA/USDT allowed")
        bot0.close()

        signer.kill9()
        setup.configure("0660")
        addr = signer.start()
        bot0 = bot_client(home, addr["bot_unix"], "bot-0")
        for name, req in (("placed", first), ("denied", denied)):
            refused(
                result,
                f"replay of the {name} intent after kill -9",
                lambda r=req: bot0.call("SubmitOrder", r),
                grpc.StatusCode.UNAUTHENTICATED,
                "replayed_nonce",
            )
        sockets(
            result,
            "0660",
            addr["bot_unix"],
            bot0,
            expect={(0, 0): "OK", (NOBODY, NOBODY): "UNAVAILABLE", (NOBODY, 0): "OK"},
        )
        late = bot0.order_request("BTC/USDT", "buy", "limit", "0.001", price, "cap-late")
        result.check(bot0.call("SubmitOrder", late).decision.allowed, "cap-late refused")
        placed.append("cap-late")
        bot0.close()

        signer.signal(signal.SIGTERM)
        addr = signer.start()
        bot0 = bot_client(home, addr["bot_unix"], "bot-0")
        for name, req in (("first", first), ("late", late)):
            refused(
                result,
                f"replay of the {name} intent after SIGTERM restart",
                lambda r=req: bot0.call("SubmitOrder", r),
                grpc.StatusCode.UNAUTHENTICATED,
                "replayed_nonce",
            )
        skew(result, bot0, price, placed)
        bot0.close()
        check_audit(result, home, sim, placed)
        result.trials = result.faults
    finally:
        signer.stop()
        sim.stop()
        setup.close()
    return result


def sockets(
    result: Result, mode: str, address: str, bot: SignerClient, expect: dict[tuple[int, int], str]
) -> None:
    path = address.removeprefix("unix://")
    result.check(
        oct(os.stat(path).st_mode & 0o777) == oct(int(mode, 8)), f"socket mode is not {mode}"
    )
    for (uid, gid), want in expect.items():
        probe = bot.sign(pb.PolicyQuery(header=bot.header("GetPolicy")))
        got = as_user(uid, gid, address, probe)
        ok = got["code"] == want
        if want == "UNAVAILABLE":  # refused by the kernel at connect(), not by anything else
            ok = ok and "Permission denied" in got.get("details", "")
        result.check(ok, f"uid {uid} gid {gid} on a {mode} socket: {got}")
        result.faults += want != "OK"


def mtls(result: Result, setup: Setup, address: str, home: Home) -> None:
    tls = setup.tls
    for name, client_pem, want in (
        ("the configured CA", tls.client, "OK"),
        ("another CA", tls.rogue_client, "UNAVAILABLE"),
    ):
        client = SignerClient(
            address,
            home.bots["bot-0"],
            "k1",
            tls=(tls.ca_pem, client_pem.key, client_pem.cert),
            server_name="localhost",
            timeout=10,
        )
        try:
            client.get_policy()
            got = "OK"
        except grpc.RpcError as e:
            got = e.code().name
        finally:
            client.close()
        result.check(got == want, f"client certificate from {name}: {got}, wanted {want}")
        result.faults += want != "OK"


def skew(result: Result, bot: SignerClient, price: Decimal, placed: list[str]) -> None:
    for label, offset in (("3 minutes behind", -180_000), ("3 minutes ahead", 180_000)):
        req = bot.order_request(
            "BTC/USDT",
            "buy",
            "limit",
            "0.001",
            price,
            f"skew{offset}",
            timestamp_ms=now_ms() + offset,
        )
        refused(
            result,
            f"a clock {label}",
            lambda r=req: bot.call("SubmitOrder", r),
            grpc.StatusCode.UNAUTHENTICATED,
            "stale_timestamp",
        )
    ok = bot.order_request(
        "BTC/USDT", "buy", "limit", "0.001", price, "skew-ok", timestamp_ms=now_ms() - 10_000
    )
    result.check(bot.call("SubmitOrder", ok).decision.allowed, "10 s of skew was refused")
    placed.append("skew-ok")


def check_audit(result: Result, home: Home, sim: SimProcess, placed: list[str]) -> None:
    auditor = Auditor(home)
    try:
        report, records = auditor.snapshot()
    finally:
        auditor.close()
    result.check(report.ok, f"audit verify: {report.summary}")
    refusals = sorted(
        (r["kind"], r["payload"]["rule_id"], r["payload"]["claimed_identity"])
        for r in records
        if r["kind"] in ("auth_denied", "permission_denied")
    )
    want = sorted(
        [("permission_denied", "key_not_granted", "bot-0")]
        + [("auth_denied", "unknown_identity", "operator:bot-0")]
        + [("auth_denied", "replayed_nonce", "bot-0")] * 4
        + [("auth_denied", "stale_timestamp", "bot-0")] * 2
    )
    result.check(refusals == want, f"audited refusals {refusals}, wanted {want}")
    at_exchange = sorted(o["clientOrderId"] for o in sim.orders())
    result.check(at_exchange == sorted(placed), f"exchange holds {at_exchange}, placed {placed}")
