"""API keys and SIGNED-request checks, as Binance documents them.

The signature payload is the raw query string concatenated without separator to the raw
body, with the `signature` parameter taken out and any non-ASCII byte percent-encoded.
HMAC keys sign it with HMAC-SHA256 (hex, case-insensitive); Ed25519 keys sign it with the
account's registered key (base64, percent-encoded on the wire).

Timing: `timestamp` (ms, or µs when 16+ digits) must satisfy
`timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow`
(recvWindow default 5000, max 60000, up to 3 decimals), where serverTime is the
*simulated* clock, the same clock that /api/v3/time reports. When that clock runs N times
faster than real time (N > 1), the 1000 ms and recvWindow tolerances are multiplied by N,
so they keep their wall-clock length; at real time or slower the rule is exactly Binance's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import string
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from simexchange import errors

if TYPE_CHECKING:
    from simexchange.store import Store

KEY_RE = re.compile(r"[A-Za-z0-9]{1,128}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")
RECV_WINDOW_RE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,3})?")
_ALNUM = string.ascii_letters + string.digits


def random_token(length: int = 64) -> str:
    """A Binance-style API key or HMAC secret: 64 random letters and digits."""
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def generate_ed25519_pem_pair() -> tuple[str, str]:
    """(private PKCS#8 PEM, public PEM): what ccxt and Binance expect for Ed25519 keys."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem.decode(), public_pem.decode()


def normalize_ed25519_public_key(text: str) -> str:
    """Accept a PEM public key or base64 of the raw 32 bytes; return the PEM."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise ValueError("Ed25519 public key is not a PEM or base64 32-byte key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("public key is not an Ed25519 key")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@dataclass(eq=False)
class ApiKey:
    """One API key: HMAC (shared secret) or ED25519 (registered public key), with permissions.

    `repr` never shows the secret.
    """

    api_key: str
    account_id: int
    kind: str = "HMAC"
    secret: str | None = field(default=None, repr=False)
    public_key_pem: str | None = field(default=None, repr=False)
    can_read: bool = True
    can_trade: bool = True
    can_withdraw: bool = False
    ip_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not KEY_RE.fullmatch(self.api_key):
            raise ValueError("api_key must be 1-128 letters and digits")
        if self.kind == "HMAC":
            if not self.secret:
                raise ValueError(f"HMAC key {self.api_key[:8]}...: a secret is required")
        elif self.kind == "ED25519":
            if not self.public_key_pem:
                raise ValueError(f"ED25519 key {self.api_key[:8]}...: public_key_pem is required")
            self.public_key_pem = normalize_ed25519_public_key(self.public_key_pem)
        else:
            raise ValueError(f"key type {self.kind!r} is not allowed: use HMAC or ED25519")
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.ip_allow]

    def allows_ip(self, ip: str) -> bool:
        """An empty allow-list means unrestricted."""
        if not self._networks:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._networks)

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """Check a signature (its bytes after percent-decoding) over the payload."""
        if self.kind == "HMAC":
            assert self.secret is not None
            expected = hmac.new(self.secret.encode(), payload, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected.encode(), signature.lower())
        try:
            raw = base64.b64decode(signature, validate=True)
            key = serialization.load_pem_public_key((self.public_key_pem or "").encode())
            assert isinstance(key, Ed25519PublicKey)
            key.verify(raw, payload)
        except (ValueError, InvalidSignature):
            return False
        return True

    def to_doc(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key, "account_id": self.account_id, "kind": self.kind,
            "secret": self.secret, "public_key_pem": self.public_key_pem,
            "can_read": self.can_read, "can_trade": self.can_trade,
            "can_withdraw": self.can_withdraw, "ip_allow": list(self.ip_allow),
        }  # fmt: skip

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ApiKey:
        return cls(**{**doc, "ip_allow": tuple(doc.get("ip_allow", ()))})


class KeyTable:
    """API keys by key id; written through to the store when there is one."""

    def __init__(self, store: Store | None = None) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        self._store = store
        if store is not None:
            for doc in store.load_keys():
                key = ApiKey.from_doc(doc)
                self._keys[key.api_key] = key

    def add(self, key: ApiKey) -> ApiKey:
        with self._lock:
            if key.api_key in self._keys:
                raise ValueError(f"api key {key.api_key[:8]}... is already registered")
            self._keys[key.api_key] = key
            if self._store is not None:
                self._store.save_key(key)
        return key

    def get(self, api_key: str) -> ApiKey | None:
        with self._lock:
            return self._keys.get(api_key)

    def remove(self, api_key: str) -> None:
        with self._lock:
            self._keys.pop(api_key, None)
            if self._store is not None:
                self._store.delete_key(api_key)


def _pct_encode_non_ascii(raw: bytes) -> bytes:
    return re.sub(rb"[\x80-\xff]", lambda m: b"%%%02X" % m.group(0)[0], raw)


def split_signature(query: bytes, body: bytes) -> tuple[bytes, bytes]:
    """(payload without the signature parameter, the signature's percent-decoded bytes)."""
    found: list[bytes] = []
    kept: list[bytes] = []
    for part in (query, body):
        segments = part.split(b"&") if part else []
        rest = [s for s in segments if not s.startswith(b"signature=")]
        found.extend(s[len(b"signature=") :] for s in segments if s.startswith(b"signature="))
        kept.append(b"&".join(rest))
    if not found or not found[0]:
        raise errors.mandatory("signature")
    if len(found) > 1:
        raise errors.duplicate_param()
    return _pct_encode_non_ascii(kept[0] + kept[1]), unquote_to_bytes(found[0])


def parse_params(query: bytes, body: bytes) -> dict[str, str]:
    """Query and form-body parameters; a parameter in both takes the query's value."""
    merged: dict[str, str] = {}
    for part in (body, query):
        seen: set[str] = set()
        for k, v in parse_qsl(part.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
            k = k.encode("latin-1").decode("utf-8", "replace")
            if k in seen:
                raise errors.duplicate_param()
            seen.add(k)
            merged[k] = v.encode("latin-1").decode("utf-8", "replace")
    merged.pop("signature", None)
    return merged


def check_timestamp(params: dict[str, str], now_ms: int, scale: Decimal = Decimal(1)) -> None:
    """Binance's timing rule against the simulated clock (tolerances times `scale`)."""
    ts_text = params.get("timestamp", "")
    if not ts_text:
        raise errors.mandatory("timestamp")
    if not TIMESTAMP_RE.fullmatch(ts_text):
        raise errors.illegal_chars("timestamp", "^[0-9]{1,20}$")
    window_text = params.get("recvWindow") or "5000"
    if not RECV_WINDOW_RE.fullmatch(window_text):
        raise errors.illegal_chars("recvWindow", r"^[0-9]{1,10}(\.[0-9]{1,3})?$")
    window = Decimal(window_text)
    if window > 60000 or window <= 0:
        raise errors.bad_recv_window()
    ts = int(ts_text)
    window *= scale
    ahead = 1000 * scale
    server = now_ms
    if ts >= 10**14:  # microseconds
        server, ahead, window = now_ms * 1000, ahead * 1000, window * 1000
    if ts >= server + ahead:
        raise errors.timestamp_ahead()
    if server - ts > window:
        raise errors.timestamp_outside_window()


def authenticate(
    keys: KeyTable,
    api_key_header: str | None,
    client_ip: str,
    query: bytes,
    body: bytes,
    params: dict[str, str],
    now_ms: int,
    scale: Decimal = Decimal(1),
) -> ApiKey:
    """Key format, key, IP allow-list, timing, then signature; permissions come after."""
    if not api_key_header or not KEY_RE.fullmatch(api_key_header):
        raise errors.bad_api_key_format()
    key = keys.get(api_key_header)
    if key is None or not key.allows_ip(client_ip):
        raise errors.rejected_key()
    payload, signature = split_signature(query, body)
    check_timestamp(params, now_ms, scale)
    if not key.verify(payload, signature):
        raise errors.bad_signature()
    return key
