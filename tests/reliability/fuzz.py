"""Hostile input against every RPC of a running signer process, over real gRPC (hypothesis).

Families: bot requests with forbidden field values (SubmitOrder, CancelOrder, Read, GetPolicy);
wrongly signed bot requests; every Admin RPC (found from the service descriptor, so new RPCs are
fuzzed too) with a broken header, field, signature or a non-operator signer; Health with hostile
service names; and corrupt wire bytes sent with identity serializers to every method.

The oracle, per request: an answer within the deadline (no hang), from a living process, with a
clear refusal status (INVALID_ARGUMENT naming the field first, UNAUTHENTICATED or
PERMISSION_DENIED naming the rule; Admin may also refuse with FAILED_PRECONDITION / NOT_FOUND),
never INTERNAL or UNKNOWN, never a traceback; INVALID_ARGUMENT adds no audit record, other
refusals at most one (the audited refusal). At the end nothing the fuzz sent changed the key's
policy, freezes, bots, counters or the exchange, no allow record appeared, and the log verifies.

tests/signer/test_bad_input.py covers one bad field at a time for the bot RPCs against an
in-process signer; this adds combinations, Admin, Health, signatures and raw bytes, against
a real `serve` process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from botengine.signer_client import Identity
from bulkhead.signer.v1 import admin_pb2 as apb
from tests.reliability import hostile
from tests.reliability.processes import SignerProcess, SimProcess
from tests.reliability.provision import Auditor, Home, admin_client, bot_client, provision
from tests.reliability.result import Result

C = grpc.StatusCode
BOT_CODES = frozenset({C.INVALID_ARGUMENT, C.UNAUTHENTICATED, C.PERMISSION_DENIED})
ADMIN_CODES = BOT_CODES | {C.FAILED_PRECONDITION, C.NOT_FOUND, C.ALREADY_EXISTS, C.ABORTED}
GRPC_MAX = 4 * 1024 * 1024
# The message starts with what it is about: "amount: ...", "replayed_nonce: ...", "policy TOML: ..."
FIELD_FIRST = re.compile(r"^[A-Za-z_][\w.\[\]/ ]{0,40}: \S")
TIMEOUT_S = 20.0
SIGNER = "/bulkhead.signer.v1.Signer/"
ADMIN = "/bulkhead.signer.v1.Admin/"
HEALTH = "/grpc.health.v1.Health/Check"


class Target:
    """The signer under fuzz, and the public views of its state."""

    def __init__(self, home: Home, signer: SignerProcess, sim: SimProcess) -> None:
        self.home, self.signer, self.sim = home, signer, sim
        self.bot_channel = grpc.insecure_channel(signer.addresses["bot_unix"])
        self.admin_channel = grpc.insecure_channel(signer.addresses["admin_unix"])
        self.admin = admin_client(home, signer.addresses["admin_unix"])
        self.bot = bot_client(home, signer.addresses["bot_unix"], "bot-0")
        self.price = str(sim.limit_price())
        self.stranger = Identity.generate("bot-0")  # right name, wrong key

    def close(self) -> None:
        for c in (self.bot_channel, self.admin_channel):
            c.close()
        self.admin.close()
        self.bot.close()

    def audit_size(self) -> int:
        return int(self.admin.status().audit_size)

    def protected(self) -> dict[str, Any]:
        """What hostile input must never change."""
        view, status = self.bot.get_policy(), self.admin.status()
        return {
            "policy_version": view.policy_version,
            "policy_json": view.policy_json,
            "frozen": view.frozen,
            "used_24h_notional": view.used_24h_notional,
            "open_orders": view.open_orders,
            "global_frozen": status.global_frozen,
            "frozen_keys": list(status.frozen_keys),
            "keys": status.keys,
            "bots": status.bots,
            "exchange_orders": len(self.sim.orders()),
        }

    def raw(self, path: str, channel: grpc.Channel) -> Callable[[bytes], Any]:
        """A method stub that sends bytes as they are (identity serializers)."""
        return lambda data: channel.unary_unary(path)(data, timeout=TIMEOUT_S)


def judge(
    target: Target,
    label: str,
    call: Callable[[], Any],
    codes: frozenset[grpc.StatusCode],
    ok_allowed: bool = False,
    audited: bool = True,
    names_field: bool = True,
) -> None:
    """Send one hostile request; raise AssertionError naming what went wrong."""
    before = target.audit_size() if audited else 0
    code, details = C.OK, ""
    try:
        call()
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    assert target.signer.alive(), f"{label}: the signer process died ({code.name} {details[:200]})"
    if code == C.OK:
        assert ok_allowed, f"{label}: answered OK"
    else:
        assert code in codes, f"{label}: {code.name} {details[:300]!r}"
        # Health's NOT_FOUND is the protocol's whole answer (grpc-health-checking sends no text).
        assert details or not names_field, f"{label}: refused without a message"
        assert len(details) < 2000, f"{label}: a {len(details)}-character message"
        assert "Traceback" not in details, f"{label}: traceback in {details[:300]!r}"
        if names_field and code != C.RESOURCE_EXHAUSTED:
            assert FIELD_FIRST.match(details), f"{label}: message names no field {details[:200]!r}"
    if audited:
        grew = target.audit_size() - before
        limit = 0 if code in (C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED, C.OK) else 1
        assert grew <= limit, f"{label}: {code.name} added {grew} audit records"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


def family(result: Result, name: str, examples: int, strategy: Any, send: Callable) -> None:
    """Run one hypothesis property; a failure (shrunk to its simplest example) is a violation."""
    sent = [0]

    @_settings(examples)
    @given(strategy)
    def prop(plan: Any) -> None:
        sent[0] += 1
        send(plan)

    try:
        prop()
    except Exception as e:  # noqa: BLE001 - hypothesis re-raises the minimal failing example(s)
        found = list(e.exceptions) if isinstance(e, BaseExceptionGroup) else [e]
        for f in found:
            result.violate(f"{name}: {type(f).__name__}: {str(f)[:600]}")
    result.trials += sent[0]
    result.faults += sent[0]


def send_bot(target: Target, plan: dict[str, Any]) -> None:
    req = hostile.build_bot_request(plan, target.home.bots["bot-0"], "k1", target.price)
    stub = target.raw(SIGNER + plan["method"], target.bot_channel)
    label = f"{plan['method']} with {_short(plan['values'])}"
    judge(target, label, lambda: stub(req.SerializeToString()), BOT_CODES)


def send_badly_signed(target: Target, plan: dict[str, Any]) -> None:
    bot = target.home.bots["bot-0"]
    req = hostile.build_badly_signed(plan, bot, "k1", target.price, target.stranger)
    stub = target.raw(SIGNER + plan["method"], target.bot_channel)
    codes = BOT_CODES if len(req.signature) < GRPC_MAX else BOT_CODES | {C.RESOURCE_EXHAUSTED}
    judge(
        target,
        f"{plan['method']} signed {_short(plan)}",
        lambda: stub(req.SerializeToString()),
        codes,
    )


def send_admin(target: Target, plan: dict[str, Any]) -> None:
    req = hostile.build_admin_request(plan, target.home.operator, target.home.bots["bot-0"])
    stub = target.raw(ADMIN + plan["method"], target.admin_channel)
    ok = plan["method"] in hostile.READ_ONLY_ADMIN and plan["how"] == "field"
    judge(
        target,
        f"Admin.{plan['method']} {_short(plan)}",
        lambda: stub(req.SerializeToString()),
        ADMIN_CODES,
        ok_allowed=ok,
    )


def send_health(target: Target, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(target.bot_channel)
    req = health_pb2.HealthCheckRequest(service=service)
    known = service in ("", "bulkhead.signer.v1.Signer")  # "" is the server as a whole
    judge(
        target,
        f"Health.Check({service[:40]!r})",
        lambda: stub.Check(req, timeout=TIMEOUT_S),
        frozenset({C.NOT_FOUND}),
        ok_allowed=known,
        audited=False,
        names_field=False,
    )


HEALTH_NAMES = st.one_of(
    st.sampled_from(hostile.BAD_IDS + hostile.BAD_SYMBOLS + ["bulkhead.signer.v1.Signerx"]),
    st.text(min_size=1, max_size=64).filter(lambda s: s not in ("bulkhead.signer.v1.Signer",)),
)


def run(root: Path, examples: int) -> tuple[Result, Result]:
    """(hostile values on every RPC, corrupt wire bytes on every method)."""
    fields = Result("hostile input: every RPC, hypothesis")
    wire = Result("hostile input: corrupt wire bytes")
    sim = SimProcess.start(root)
    home = provision(root, sim, key_ids=("k1", "k2"), bots=2)
    signer = home.process()
    try:
        signer.start()
        target = Target(home, signer, sim)
        try:
            before, first_seq = target.protected(), target.audit_size()
            family(
                fields, "bot fields", examples, hostile.bot_plans(), lambda p: send_bot(target, p)
            )
            family(
                fields,
                "signatures",
                examples,
                hostile.signature_plans(),
                lambda p: send_badly_signed(target, p),
            )
            family(
                fields, "admin", examples, hostile.admin_plans(), lambda p: send_admin(target, p)
            )
            family(
                fields,
                "health",
                max(5, examples // 4),
                HEALTH_NAMES,
                lambda s: send_health(target, s),
            )
            family(wire, "wire bytes", examples, wire_plans(target), lambda p: send_wire(target, p))
            after = target.protected()
        finally:
            target.close()
        for key in before:
            fields.check(before[key] == after[key], f"{key} changed: {before[key]} -> {after[key]}")
        check_log(fields, home, first_seq)
    finally:
        signer.stop()
        sim.stop()
    return fields, wire


def check_log(result: Result, home: Home, first_seq: int) -> None:
    """Only refusals were recorded while fuzzing, and the log verifies."""
    auditor = Auditor(home)
    try:
        report, records = auditor.snapshot()
        records = [r for r in records if r["seq"] > first_seq]
    finally:
        auditor.close()
    result.check(report.ok, f"audit verify: {report.summary}")
    for r in records:
        refusal = r["kind"] in ("auth_denied", "permission_denied") or (
            r["kind"] == "decision" and not r["payload"].get("allowed")
        )
        result.check(refusal, f"record {r['seq']} ({r['kind']}) written while fuzzing: {r}"[:400])
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    result.figures["audited refusals"] = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))


# --- corrupt wire bytes --------------------------------------------------------------------------


def wire_plans(target: Target) -> st.SearchStrategy[dict[str, Any]]:
    methods = [SIGNER + m for m in hostile.BOT_METHODS]
    methods += [ADMIN + m for m in hostile.admin_methods()] + [HEALTH]
    return st.fixed_dictionaries(
        {
            "method": st.sampled_from(methods),
            "how": st.sampled_from(["random", "truncated", "extended", "oversized"]),
            "data": st.binary(min_size=1, max_size=256),
            "cut": st.integers(min_value=1, max_value=400),
        }
    )


def send_wire(target: Target, plan: dict[str, Any]) -> None:
    method = plan["method"]
    if method.startswith(SIGNER):
        good = target.bot.order_request("BTC/USDT", "buy", "limit", "0.001", target.price, "w-1")
        channel = target.bot_channel
    elif method == HEALTH:
        good, channel = health_pb2.HealthCheckRequest(service="x" * 40), target.bot_channel
    else:
        good = target.admin.sign(apb.StatusCommand(header=target.admin.header("Status")))
        channel = target.admin_channel
    raw = good.SerializeToString()
    how = plan["how"]
    if how == "random":
        data = plan["data"]
    elif how == "truncated":
        data = raw[: max(1, len(raw) - plan["cut"] % len(raw))]
    elif how == "extended":
        data = raw + plan["data"]
    else:
        data = raw + b"\x00" * GRPC_MAX
    codes = BOT_CODES | ({C.RESOURCE_EXHAUSTED} if len(data) > GRPC_MAX else set())
    if method == HEALTH:
        codes |= {C.NOT_FOUND}
    stub = target.raw(method, channel)
    label = f"{method.rsplit('/', 1)[1]} {how} {len(data)} bytes {data[:24]!r}"
    judge(
        target,
        label,
        lambda: stub(data),
        frozenset(codes),
        ok_allowed=method == HEALTH,
        names_field=method != HEALTH,
    )


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 160 else text[:157] + "..."
