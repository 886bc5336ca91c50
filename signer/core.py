"""The signing path: authenticate, decide, audit durably, then (and only then) sign or submit.

Transport-independent: the gRPC servicers in `service.py` call these methods and map the
exceptions to status codes. Each decision is one serialised write transaction holding the
nonce, the policy evaluation against counters read under the lock, the counter update and the
audit record; nothing leaves the process until that transaction has committed. Sign-only
orders are signed inside it, with their outcome record, so one commit covers both; submit mode
commits the decision before calling the exchange and the outcome after.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bulkhead.signer.v1 import signer_pb2 as pb
from signer import decisionfacts, fastsql, intents, limits
from signer.audit import AppendedRecord, AuditLog
from signer.auth import BOT_SIGNING_CONTEXT, Header, authenticate, prune_nonces
from signer.config import SignerConfig
from signer.db import write_txn
from signer.errors import (
    AuditUnavailable,
    AuthError,
    ExchangeError,
    InvalidRequest,
    PermissionDenied,
    SignerError,
)
from signer.exchanges import SignedHttp
from signer.gateways import Gateways
from signer.groupcommit import GroupCommitter
from signer.hotcache import parsed_policy, parsed_policy_json
from signer.keystore import KeyStatus
from signer.marketdata import ReferencePrices
from signer.outcomes import OutcomeOps, Verdict
from signer.policy import Decision, IntentFacts, Reason, RefPrice, evaluate
from signer.precision import precision_reasons
from signer.reads import ReadOps

T = TypeVar("T")


_SEEN_KEYS_MAX = 100_000

# Before the write lock: the key's current policy document and its exchange, in one read.
_PREFETCH_SQL = (
    "SELECT (SELECT policy_json FROM key_policies WHERE key_id = ?"
    " ORDER BY version DESC LIMIT 1), (SELECT exchange FROM exchange_keys WHERE key_id = ?)"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class SignerCore(OutcomeOps, ReadOps):
    """Everything a bot request needs, wired once at start-up."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        gateways: Gateways,
        config: SignerConfig,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.gateways = gateways
        self.config = config
        self.clock = clock
        self.refs = ReferencePrices(self.gateways.ticker_price)
        self._prune_lock = threading.Lock()
        self._requests = 0
        self.commits = GroupCommitter(self.txn)
        # key_id -> (policy JSON, exchange) as the last decision on the key read them under the
        # lock: lets the prefetch skip its read (see `_prefetch` for why staleness is safe).
        self._seen_keys: dict[str, tuple[str, str]] = {}

    # --- plumbing ------------------------------------------------------------------------

    @contextmanager
    def txn(self) -> Iterator[Session]:
        """A write transaction whose storage failures surface as AuditUnavailable."""
        try:
            with write_txn(self.engine) as s:
                yield s
        except SQLAlchemyError as e:
            raise AuditUnavailable(
                f"audit store unavailable ({type(e).__name__}); nothing was signed"
            ) from None

    def _check_envelope(self, request: pb.SignedRequest) -> None:
        if len(request.body) > self.config.max_request_bytes:
            raise InvalidRequest(
                f"body: {len(request.body)} bytes is too large; "
                f"at most {self.config.max_request_bytes}"
            )
        if len(request.signature) != 64:
            raise InvalidRequest(f"signature: {len(request.signature)} bytes; must be 64 (Ed25519)")

    def _auth_bot(
        self,
        s: Session,
        header: Header,
        key_id: str,
        request: pb.SignedRequest,
        method: str,
        now: int,
    ) -> None:
        bot = decisionfacts.bot_facts(s, header.identity, key_id, header.principal, header.nonce)
        authenticate(
            s,
            header,
            bot.public_key_hex,
            bot.active,
            request.body,
            request.signature,
            BOT_SIGNING_CONTEXT,
            method,
            now,
            self.config.max_clock_skew_ms,
            nonce_seen=bot.nonce_seen,
        )
        if not bot.granted:
            raise PermissionDenied(
                "key_not_granted", f"bot {header.identity!r} may not use key {key_id!r}"
            )

    def _record_refusal(
        self,
        kind: str,
        rule_id: str,
        message: str,
        header: Header,
        key_id: str,
        request: pb.SignedRequest,
    ) -> None:
        """Audit an authentication/authorisation refusal in its own transaction."""
        payload = {
            "rule_id": rule_id,
            "message": message,
            "method": header.method,
            "claimed_identity": header.identity,
            "key_id": key_id,
            "body_sha256": hashlib.sha256(request.body).hexdigest(),
            "signature_b64": b64(request.signature),
        }
        if len(request.body) <= 4096:
            payload["body_b64"] = b64(request.body)
        with self.txn() as s:
            self.audit.append(s, kind, payload, self.clock())

    @contextmanager
    def _refusals_audited(
        self, header: Header, key_id: str, request: pb.SignedRequest
    ) -> Iterator[None]:
        """Audit an authentication or grant refusal (in its own transaction) and re-raise it."""
        try:
            yield
        except AuthError as e:
            self._record_refusal("auth_denied", e.rule_id, str(e), header, key_id, request)
            raise
        except PermissionDenied as e:
            self._record_refusal("permission_denied", e.rule_id, str(e), header, key_id, request)
            raise
        self._maybe_prune()

    @contextmanager
    def _authenticated(
        self, header: Header, key_id: str, request: pb.SignedRequest, method: str
    ) -> Iterator[tuple[Session, int]]:
        """Open the decision transaction with the caller authenticated; audit any refusal."""
        now = self.clock()
        with self._refusals_audited(header, key_id, request), self.txn() as s:
            self._auth_bot(s, header, key_id, request, method, now)
            yield s, now

    def _decided(
        self,
        header: Header,
        key_id: str,
        request: pb.SignedRequest,
        method: str,
        body: Callable[[Session, int], T],
    ) -> T:
        """Authenticate and run `body(session, now)` as one decision of a group commit
        (see `signer.groupcommit`): returns only once its transaction has committed. A refusal
        (authentication, grant) is undone with its nonce and audited in its own transaction."""
        now = self.clock()

        def work(s: Session) -> T:
            self._auth_bot(s, header, key_id, request, method, now)
            return body(s, now)

        with self._refusals_audited(header, key_id, request):
            return self.commits.run(work)

    def _maybe_prune(self) -> None:
        with self._prune_lock:
            self._requests += 1
            due = self._requests % 2000 == 0
        if due:
            with self.txn() as s:
                prune_nonces(s, self.clock(), self.config.max_clock_skew_ms)

    def _prefetch(
        self, key_id: str, f: intents.OrderFields
    ) -> tuple[RefPrice | None, list[Reason]]:
        """Network reads done before taking the write lock: the signer's own reference price
        (public endpoint, no key) and the market's precision rules, for a known key whose policy
        lists the symbol. Anything else is refused by policy without touching the exchange."""
        seen = self._seen_keys.get(key_id)
        policy = parsed_policy_json(seen[0]) if seen else None
        if (
            policy is None
            or seen is None
            or seen[1] != f.exchange
            or f.symbol not in policy.symbols
        ):
            # Not known from a recent decision, or known not to list this market: read now.
            # (A remembered policy can only be stale towards *listing* the symbol -- then the
            # reference price is fetched for nothing and the decision, made on the policy read
            # under the lock, refuses -- never towards missing a reference a decision needs; a
            # reference older than the current policy allows is refused by the policy itself.)
            try:
                row = fastsql.read_once(self.engine, _PREFETCH_SQL, (key_id, key_id))
            except SQLAlchemyError:
                raise AuditUnavailable("signer store unavailable; nothing was signed") from None
            policy = parsed_policy_json(row[0]) if row else None
            if policy is None or row[1] != f.exchange:
                return None, []
            if f.symbol not in policy.symbols:
                return None, []
        ref = self.refs.get(f.exchange, f.symbol, policy.reference_max_age_s)
        try:
            rules = self.gateways.market_rules(f.exchange, f.symbol)
        except (SignerError, ValueError) as e:
            return ref, [Reason("unknown_market", f"{f.symbol} on {f.exchange}: {e}")]
        return ref, precision_reasons(rules, f.amount, f.limit_price, ref)

    # --- SubmitOrder ----------------------------------------------------------------------

    def submit_order(self, request: pb.SignedRequest) -> pb.OrderReply:
        self._check_envelope(request)
        intent = intents.parse_body(pb.OrderIntent, request.body)
        header = intents.bot_header(intent.header)
        fields = intents.order_fields(intent)
        mode = intents.mode_of(intent.mode, self.config.default_mode)
        key_id = intent.header.key_id
        ref, market_reasons = self._prefetch(key_id, fields)

        def decide(s: Session, now: int) -> tuple[Verdict, SignedHttp | str | None]:
            verdict, key = self._decide(
                s, header, key_id, fields, mode, ref, market_reasons, request, now
            )
            if verdict.decision.allowed and mode == "sign-only" and key is not None:
                return verdict, self._sign_in_txn(s, verdict, key, fields)
            return verdict, None

        verdict, signed = self._decided(header, key_id, request, "SubmitOrder", decide)
        reply = pb.OrderReply(decision=self._decision_pb(verdict))
        if not verdict.decision.allowed:
            return reply
        if isinstance(signed, SignedHttp):  # committed with its decision: now it may leave
            reply.signed_request.CopyFrom(self._signed_pb(signed))
            return reply
        if isinstance(signed, str):
            reply.exchange_error = signed
            return reply

        try:
            result = self.gateways.create_order(
                key_id,
                fields.exchange,
                fields.symbol,
                fields.side,
                fields.order_type,
                fields.amount,
                fields.limit_price,
                fields.client_order_id,
                sign_only=mode == "sign-only",
            )
        except ExchangeError as e:
            # A retriable failure may have reached the book: keep the slot until reconciled.
            status = "unknown" if getattr(e, "retriable", False) else "rejected"
            self._record_outcome(
                verdict.audit_seq, key_id, fields.client_order_id, "create", status, error=str(e)
            )
            reply.exchange_error = str(e)
            return reply
        except SignerError as e:  # refused before sending (precision, forbidden endpoint)
            self._record_outcome(
                verdict.audit_seq,
                key_id,
                fields.client_order_id,
                "create",
                "rejected",
                error=f"not sent: {e}",
            )
            reply.exchange_error = f"not sent: {e}"
            return reply
        self._fill_reply(reply, verdict, key_id, fields.client_order_id, "create", result)
        return reply

    def _decide(
        self,
        s: Session,
        header: Header,
        key_id: str,
        f: intents.OrderFields,
        mode: str,
        ref: RefPrice | None,
        market_reasons: list[Reason],
        request: pb.SignedRequest,
        now: int,
    ) -> tuple[Verdict, KeyStatus | None]:
        """Evaluate and audit one create intent in the caller's transaction; each row is read
        once. Returns the verdict and the key's routing facts (for signing in the same txn)."""
        kf = decisionfacts.key_facts(s, key_id, f.client_order_id)
        pol = kf.policy
        policy = parsed_policy(pol)
        if pol is not None and kf.key is not None:
            if len(self._seen_keys) >= _SEEN_KEYS_MAX:
                self._seen_keys.clear()
            self._seen_keys[key_id] = (pol.policy_json, kf.key.exchange)
        facts = IntentFacts(
            symbol=f.symbol,
            side=f.side,
            order_type=f.order_type,
            amount=f.amount,
            limit_price=f.limit_price,
            now_ms=now,
        )
        usage = limits.usage(s, key_id, f.symbol, now, policy, counters=kf.counters)
        decision = evaluate(
            policy, facts, usage, ref, global_frozen=kf.global_frozen, key_frozen=kf.key_frozen
        )
        key, extra = self._key_checks(s, key_id, f.exchange, kf.key)
        extra += market_reasons
        if kf.order_exists:
            extra.append(
                Reason(
                    "duplicate_client_order_id",
                    f"client_order_id {f.client_order_id!r} was already used on this key",
                )
            )
        if mode == "sign-only" and not self.config.allow_sign_only:
            extra.append(Reason("sign_only_disabled", "this signer only submits orders itself"))
        if extra:
            decision = Decision(False, decision.reasons + tuple(extra), decision.notional)
        rec = self.audit.append(
            s,
            "decision",
            {
                "action": "create",
                "bot_id": header.identity,
                "key_id": key_id,
                "exchange": f.exchange,
                "symbol": f.symbol,
                "side": f.side,
                "type": f.order_type,
                "amount": str(f.amount),
                "limit_price": None if f.limit_price is None else str(f.limit_price),
                "client_order_id": f.client_order_id,
                "mode": mode,
                "allowed": decision.allowed,
                "reasons": [{"rule_id": r.rule_id, "message": r.message} for r in decision.reasons],
                "policy_version": pol.version if pol else 0,
                "notional": None if decision.notional is None else str(decision.notional),
                "reference_price": None if ref is None else str(ref.price),
                "reference_ms": None if ref is None else ref.fetched_ms,
                "body_b64": b64(request.body),
                "signature_b64": b64(request.signature),
            },
            now,
        )
        if decision.allowed and policy is not None and decision.notional is not None:
            limits.record_allowed(
                s,
                key_id,
                f.symbol,
                f.client_order_id,
                f.side,
                decision.notional,
                now,
                policy,
                checked_new=True,  # order_exists was checked above, in this transaction
                counters=kf.counters,
            )
        return Verdict(decision, rec.seq, pol.version if pol else 0, rec.hash), key

    def _sign_in_txn(
        self, s: Session, verdict: Verdict, key: KeyStatus, f: intents.OrderFields
    ) -> SignedHttp | str:
        """Sign-only: build and sign the request and audit the outcome in the decision's own
        transaction (one commit); the caller releases the request only after that commit.
        Returns the signed request, or the error text when it could not be signed."""
        head = AppendedRecord(verdict.audit_seq, verdict.audit_hash)  # nothing appended since
        try:
            result = self.gateways.sign_create_order(
                s,
                key,
                f.symbol,
                f.side,
                f.order_type,
                f.amount,
                f.limit_price,
                f.client_order_id,
            )
        except ExchangeError as e:
            status = "unknown" if getattr(e, "retriable", False) else "rejected"
            seq, coid = verdict.audit_seq, f.client_order_id
            self._append_outcome(
                s, seq, key.key_id, coid, "create", status, after=head, error=str(e)
            )
            return str(e)
        except SignerError as e:  # refused before signing (precision, key, endpoint)
            error = f"not sent: {e}"
            seq, coid = verdict.audit_seq, f.client_order_id
            self._append_outcome(
                s, seq, key.key_id, coid, "create", "rejected", after=head, error=error
            )
            return error
        if not isinstance(result, SignedHttp):
            raise RuntimeError("sign-only gateway call returned an exchange answer")
        self._append_outcome(
            s,
            verdict.audit_seq,
            key.key_id,
            f.client_order_id,
            "create",
            "signed",
            after=head,
            **self._signed_fields(result),
        )
        return result

    def _key_checks(
        self, s: Session, key_id: str, exchange: str, info: KeyStatus | None
    ) -> tuple[KeyStatus | None, list[Reason]]:
        """`info`: the key's routing facts as read in this transaction (None: no such key)."""
        if (
            info is not None
            and info.kind == "ed25519"
            and self.gateways.key_info(s, key_id) is None
        ):
            info = None  # its public half no longer matches its sealed key: treat as unknown
        if info is None:
            return None, [Reason("unknown_key", f"key {key_id!r} is not in the keystore")]
        reasons = []
        if info.status != "active":
            reasons.append(Reason("key_inactive", f"key {key_id!r} is {info.status}"))
        if info.exchange != exchange:
            reasons.append(
                Reason(
                    "exchange_mismatch",
                    f"key {key_id!r} belongs to {info.exchange!r}, not {exchange!r}",
                )
            )
        return info, reasons

    # --- CancelOrder ----------------------------------------------------------------------

    def cancel_order(self, request: pb.SignedRequest) -> pb.OrderReply:
        self._check_envelope(request)
        intent = intents.parse_body(pb.CancelIntent, request.body)
        header = intents.bot_header(intent.header)
        symbol = intents.check_symbol(intent.symbol)
        coid = intents.check_client_order_id(intent.client_order_id)
        exchange = intents.check_exchange(intent.exchange)
        mode = intents.mode_of(intent.mode, self.config.default_mode)
        key_id = intent.header.key_id

        def decide(s: Session, now: int) -> Verdict:
            # Cancelling only reduces exposure, so freezes and caps do not apply to it.
            kf = decisionfacts.key_facts(s, key_id, coid)
            _, reasons = self._key_checks(s, key_id, exchange, kf.key)
            if not kf.order_exists:
                reasons.append(
                    Reason("unknown_order", f"no order {coid!r} was placed on key {key_id!r}")
                )
            pol = kf.policy
            decision = Decision(not reasons, tuple(reasons), None)
            rec = self.audit.append(
                s,
                "decision",
                {
                    "action": "cancel",
                    "bot_id": header.identity,
                    "key_id": key_id,
                    "exchange": exchange,
                    "symbol": symbol,
                    "client_order_id": coid,
                    "mode": mode,
                    "allowed": decision.allowed,
                    "reasons": [{"rule_id": r.rule_id, "message": r.message} for r in reasons],
                    "policy_version": pol.version if pol else 0,
                    "body_b64": b64(request.body),
                    "signature_b64": b64(request.signature),
                },
                now,
            )
            return Verdict(decision, rec.seq, pol.version if pol else 0)

        verdict = self._decided(header, key_id, request, "CancelOrder", decide)
        decision = verdict.decision
        reply = pb.OrderReply(decision=self._decision_pb(verdict))
        if not decision.allowed:
            return reply
        try:
            result = self.gateways.cancel_order(
                key_id, exchange, symbol, coid, sign_only=mode == "sign-only"
            )
        except ExchangeError as e:
            self._record_outcome(verdict.audit_seq, key_id, coid, "cancel", "error", error=str(e))
            reply.exchange_error = str(e)
            return reply
        self._fill_reply(reply, verdict, key_id, coid, "cancel", result)
        return reply
