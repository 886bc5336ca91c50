"""The proposal document: the exact loosening change M operators approve, as canonical bytes.

A proposal names one change, the action class whose quorum governs it, the base version of the
state it applies to (so it can never land on a state its signers did not see), its creation and
expiry times, a random nonce and the proposer. Its bytes are canonical JSON (sorted keys, no
whitespace, ASCII): one document, one byte string, one id (SHA-256 hex). An approval is an
Ed25519 signature over PROPOSAL_SIGNING_CONTEXT || those bytes.

Everything here is pure, so `bulkhead-signer proposal sign` works offline, with no data dir.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from bulkhead.contract import PROPOSAL_SIGNING_CONTEXT
from signer.errors import ConfigError
from signer.policy import parse_policy_toml, policy_from_mapping, policy_to_json
from signer.quorum import MAX_TIME_LOCK_S
from signer.state import check_id

MAX_TTL_S = 30 * 86_400
DEFAULT_TTL_S = 7 * 86_400
MAX_DOCUMENT_BYTES = 64 * 1024
FILE_TYPE = "bulkhead.proposal_file"
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SIG_FIELDS = ("public_key_hex", "signature_hex")
HEX64 = r"^[0-9a-f]{64}$"

Ident = Annotated[str, Field(pattern=ID_PATTERN)]


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SetPolicyChange(_Change):
    """A key's whole new policy (canonical policy JSON object); base: its policy version."""

    kind: Literal["set_policy"] = "set_policy"
    key_id: Ident
    policy: dict[str, Any]

    @field_validator("policy")
    @classmethod
    def _canonical_policy(cls, v: dict[str, Any]) -> dict[str, Any]:
        return json.loads(policy_to_json(policy_from_mapping(v)))  # every field checked

    @property
    def action_class(self) -> str:
        return "policy"

    @property
    def subject(self) -> str:
        return f"policy:{self.key_id}"


class UnfreezeChange(_Change):
    """Lift one key's freeze (key_id) or the global kill switch (key_id None)."""

    kind: Literal["unfreeze"] = "unfreeze"
    key_id: Ident | None = None
    reason: str = Field(default="", max_length=500)

    @property
    def action_class(self) -> str:
        return "unfreeze"

    @property
    def subject(self) -> str:
        return f"freeze:{self.key_id or '*'}"


class RegisterBotChange(_Change):
    kind: Literal["register_bot"] = "register_bot"
    bot_id: Ident
    public_key_hex: Annotated[str, Field(pattern=HEX64)]
    key_ids: tuple[Ident, ...] = Field(default=(), max_length=64)

    @property
    def action_class(self) -> str:
        return "bots"

    @property
    def subject(self) -> str:
        return f"bot:{self.bot_id}"


class GrantKeysChange(_Change):
    """Let an already registered bot use more keys."""

    kind: Literal["grant_keys"] = "grant_keys"
    bot_id: Ident
    key_ids: tuple[Ident, ...] = Field(min_length=1, max_length=64)

    @property
    def action_class(self) -> str:
        return "bots"

    @property
    def subject(self) -> str:
        return f"bot:{self.bot_id}"


class ApproveKeyChange(_Change):
    """Activate an exchange key held after add/generate/rotate: exactly this material."""

    kind: Literal["approve_key"] = "approve_key"
    key_id: Ident
    exchange: str = Field(pattern=r"^[a-z0-9]{2,32}$")
    generation: int = Field(ge=1)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    api_key: str = Field(max_length=256)

    @property
    def action_class(self) -> str:
        return "keys"

    @property
    def subject(self) -> str:
        return f"key:{self.key_id}"


class AddOperatorChange(_Change):
    kind: Literal["add_operator"] = "add_operator"
    operator_id: Ident
    public_key_hex: Annotated[str, Field(pattern=HEX64)]

    @property
    def action_class(self) -> str:
        return "operators"

    @property
    def subject(self) -> str:
        return "operators"


class RemoveOperatorChange(_Change):
    kind: Literal["remove_operator"] = "remove_operator"
    operator_id: Ident

    @property
    def action_class(self) -> str:
        return "operators"

    @property
    def subject(self) -> str:
        return "operators"


class SetQuorumChange(_Change):
    """M signatures (and an optional time lock) for one action class; governed by 'operators'."""

    kind: Literal["set_quorum"] = "set_quorum"
    target_class: Literal["policy", "unfreeze", "bots", "keys", "operators"]
    m: int = Field(ge=1, le=64)
    time_lock_s: int = Field(default=0, ge=0, le=MAX_TIME_LOCK_S)

    @property
    def action_class(self) -> str:
        return "operators"

    @property
    def subject(self) -> str:
        return "operators"


AnyChange = (
    SetPolicyChange
    | UnfreezeChange
    | RegisterBotChange
    | GrantKeysChange
    | ApproveKeyChange
    | AddOperatorChange
    | RemoveOperatorChange
    | SetQuorumChange
)
Change = Annotated[AnyChange, Field(discriminator="kind")]
CHANGE_ADAPTER: TypeAdapter[AnyChange] = TypeAdapter(Change)


class BaseVersion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    subject: str = Field(max_length=80)
    version: int = Field(ge=0)


class ProposalDoc(BaseModel):
    """What the operators sign. Field names are part of the signed contract: never rename."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["bulkhead.proposal"] = "bulkhead.proposal"
    v: Literal[1] = 1
    action_class: Literal["policy", "unfreeze", "bots", "keys", "operators"]
    change: Change
    base: BaseVersion
    created_ms: int = Field(gt=0)
    expires_ms: int = Field(gt=0)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    proposer: str = Field(min_length=1, max_length=128)


def _problem(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "document"
    got = e.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {str(got)[:60]!r})"
    return f"{where}: {e['msg']}{shown}"


def parse_change(data: object) -> AnyChange:
    """A change from a mapping (CLI, gRPC); errors name the field and what is wrong."""
    try:
        return CHANGE_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ConfigError(f"change.{_problem(e)}") from None


def policy_change(key_id: str, policy_toml: str) -> AnyChange:
    """The same TOML `policy set` takes, checked field by field, as a canonical change."""
    check_id("key_id", key_id)
    policy = json.loads(policy_to_json(parse_policy_toml(policy_toml)))
    return parse_change({"kind": "set_policy", "key_id": key_id, "policy": policy})


def canonical(doc: ProposalDoc) -> bytes:
    return json.dumps(
        doc.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


def proposal_id(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


def parse_document(document: bytes) -> ProposalDoc:
    """Validate a proposal document and insist on its one canonical byte form."""
    if len(document) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"document: {len(document)} bytes; at most {MAX_DOCUMENT_BYTES}")
    try:
        doc = ProposalDoc.model_validate_json(document)
    except ValidationError as e:
        raise ConfigError(f"document.{_problem(e)}") from None
    if doc.change.action_class != doc.action_class:
        raise ConfigError(
            f"document.action_class: {doc.action_class!r} does not govern a "
            f"{doc.change.kind} change (that is {doc.change.action_class!r})"
        )
    if canonical(doc) != document:
        raise ConfigError("document: not in canonical form (sorted keys, no spaces, ASCII)")
    return doc


def sign_document(key: SigningKey, document: bytes) -> bytes:
    return key.sign(PROPOSAL_SIGNING_CONTEXT + document).signature


def signature_valid(public_key_hex: str, document: bytes, signature: bytes) -> bool:
    if len(signature) != 64 or not re.fullmatch(HEX64, public_key_hex):
        return False
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(
            PROPOSAL_SIGNING_CONTEXT + document, signature
        )
        return True
    except (BadSignatureError, ValueError):
        return False


# --- the proposal file, carried between operators for offline signing ------------------------


def file_doc(document: bytes, signatures: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "type": FILE_TYPE,
        "v": 1,
        "proposal_id": proposal_id(document),
        "document": document.decode("ascii"),
        "signatures": signatures,
    }


def read_file(path: Path) -> tuple[bytes, list[dict[str, str]]]:
    """The exact document bytes and the signatures collected so far; every field checked."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path}: not a proposal file ({e})") from None
    if not isinstance(obj, dict) or obj.get("type") != FILE_TYPE:
        raise ConfigError(f"{path}: type must be {FILE_TYPE!r}")
    text = obj.get("document")
    if not isinstance(text, str) or not text.isascii():
        raise ConfigError(f"{path}: document must be the proposal's canonical JSON text")
    document = text.encode("ascii")
    parse_document(document)
    if obj.get("proposal_id") != proposal_id(document):
        raise ConfigError(f"{path}: proposal_id does not match the document's SHA-256")
    sigs = obj.get("signatures", [])
    if not isinstance(sigs, list):
        raise ConfigError(f"{path}: signatures must be a list")
    out = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not all(
            isinstance(s.get(k), str) for k in ("public_key_hex", "signature_hex")
        ):
            raise ConfigError(f"{path}: signatures[{i}] needs public_key_hex and signature_hex")
        out.append({k: str(v) for k, v in s.items() if k in ("operator_id", *SIG_FIELDS)})
    return document, out


def write_file(path: Path, document: bytes, signatures: list[dict[str, str]]) -> None:
    text = json.dumps(file_doc(document, signatures), indent=2, sort_keys=True) + "\n"
    path.write_text(text, encoding="utf-8")


def add_signature(path: Path, key: SigningKey, operator_id: str) -> dict[str, str]:
    """Sign the file's document with an operator key and append the signature (offline)."""
    document, sigs = read_file(path)
    pub = key.verify_key.encode().hex()
    if any(s["public_key_hex"] == pub for s in sigs):
        raise ConfigError(f"{path}: this key ({pub[:16]}...) has already signed it")
    entry = {
        "operator_id": operator_id,
        "public_key_hex": pub,
        "signature_hex": sign_document(key, document).hex(),
    }
    write_file(path, document, [*sigs, entry])
    return entry


def describe(doc: ProposalDoc) -> str:
    """One line a signer reads before approving: what changes, on which base, until when."""
    c = doc.change.model_dump(mode="json")
    kind = c.pop("kind")
    if kind == "set_policy":
        c["policy"] = json.dumps(c["policy"], sort_keys=True)
    fields = ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
    return (
        f"{kind} ({fields}) on {doc.base.subject} version {doc.base.version}; "
        f"class {doc.action_class}; proposed by {doc.proposer}; expires_ms {doc.expires_ms}"
    )
