"""Key custody: exchange secrets sealed at rest under a master key that is never stored beside them.

The master key (32 bytes) comes from an Argon2id passphrase (salt and cost stored here so the same
passphrase re-derives it) or from a key file kept outside the database. Every sealed value is
encrypted with SecretBox (XSalsa20-Poly1305) under a per-record subkey, BLAKE2b(master, context),
where the context names the keystore, table, key id, exchange, kind, generation and field. A blob
moved to another row, another field, or restored from an older generation fails authentication.

A stolen database (or backup) yields only ciphertext and public keys. Secrets leave this module
only as `Credentials`, whose repr hides them; no exception text ever contains one.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.hash
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.encoding import RawEncoder
from nacl.exceptions import CryptoError
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Engine,
    Integer,
    LargeBinary,
    String,
    Text,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer import fastsql
from signer.db import Base, check_private_path, is_sqlite
from signer.errors import ConfigError, KeystoreError

KEY_BYTES: Final = 32
SALT_BYTES: Final = argon2id.SALTBYTES
# name -> (opslimit, memlimit). `interactive` is for tests and demos; `moderate` is the default.
KDF_PROFILES: Final[dict[str, tuple[int, int]]] = {
    "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}
# A tampered keystore_meta must not make us burn unbounded memory or time deriving a key.
_MAX_OPSLIMIT: Final = 64
_MAX_MEMLIMIT: Final = argon2id.MEMLIMIT_SENSITIVE
_VERIFIER: Final = b"bulkhead keystore verifier v1"
_BLOB_VERSION: Final = b"\x01"
_PERSON_SEAL: Final = b"bulkhead.seal.v1"  # BLAKE2b personalisation, 16 bytes max
_PERSON_FPR: Final = b"bulkhead.fpr.v1"
_PERSON_ED25519: Final = b"bulkhead.ed25519"
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EXCHANGE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_API_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no whitespace
_BLOB_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_MAX_SECRET_CHARS: Final = 8192
_MAX_BLOB_BYTES: Final = 1 << 20

KINDS: Final = ("hmac", "ed25519")
STATUSES: Final = ("active", "pending", "removed")


class KeystoreMeta(Base):
    """One row: how to re-derive the master key, and a verifier that says whether it is right."""

    __tablename__ = "keystore_meta"
    __table_args__ = (CheckConstraint("id = 1", name="ck_keystore_meta_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    keystore_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    kdf: Mapped[str] = mapped_column(String(16))  # 'argon2id' | 'keyfile'
    salt: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    opslimit: Mapped[int | None] = mapped_column(BigInteger)
    memlimit: Mapped[int | None] = mapped_column(BigInteger)
    verifier: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class ExchangeKey(Base):
    """An exchange API key. Sealed columns are NULL once the key is removed; the row stays."""

    __tablename__ = "exchange_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('hmac', 'ed25519')", name="ck_exchange_keys_kind"),
        CheckConstraint(
            "status IN ('active', 'pending', 'removed')", name="ck_exchange_keys_status"
        ),
    )

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    api_key: Mapped[str] = mapped_column(String(256))
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    sealed_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    public_key_pem: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    rotated_ms: Mapped[int | None] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(Integer)


class SealedBlob(Base):
    """Internal secrets (the audit signing key, say), sealed like exchange secrets."""

    __tablename__ = "sealed_blobs"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


KEYSTORE_TABLES: Final = (KeystoreMeta.__table__, ExchangeKey.__table__, SealedBlob.__table__)
KeyRow = ExchangeKey  # the name other signer modules use (admin status counts keys)


@dataclass(frozen=True, repr=False)
class Credentials:
    """What an exchange adapter needs to sign: ccxt's apiKey / secret / password.

    `secret` is the HMAC secret, or for an Ed25519 key its PKCS#8 PEM private key (ccxt's binance
    signs with Ed25519 when the secret is such a PEM of at most 120 characters).
    """

    api_key: str
    secret: str
    password: str | None

    def __repr__(self) -> str:
        password = "None" if self.password is None else "<hidden>"
        return f"Credentials(api_key={self.api_key!r}, secret=<hidden>, password={password})"

    __str__ = __repr__


@dataclass(frozen=True)
class KeyStatus:
    """A key's routing facts for the hot path: which exchange, what kind, live or not."""

    key_id: str
    exchange: str
    kind: str
    status: str
    generation: int


@dataclass(frozen=True)
class KeyInfo:
    """Everything about a key that may be shown: no secret, only a fingerprint."""

    key_id: str
    exchange: str
    kind: str
    api_key: str
    fingerprint: str
    status: str
    created_ms: int
    rotated_ms: int | None
    generation: int
    public_key_pem: str | None


class MasterKey:
    """The 32-byte master key. It never leaves this object; repr and pickling are refused."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"master key must be {KEY_BYTES} bytes (got {len(key)})")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    def __reduce__(self) -> object:
        raise TypeError("MasterKey cannot be pickled")

    @classmethod
    def from_keyfile(cls, path: Path | str) -> MasterKey:
        """Read 32 raw bytes or 64 hex characters; refuse a file group or others can access."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"key file {path} does not exist or is not a regular file")
        check_private_path(path)
        data = path.read_bytes()
        if len(data) == KEY_BYTES:
            return cls(data)
        stripped = data.strip()
        if len(stripped) == 2 * KEY_BYTES and re.fullmatch(rb"[0-9a-fA-F]+", stripped):
            return cls(bytes.fromhex(stripped.decode("ascii")))
        raise ConfigError(f"key file {path} must hold exactly 32 raw bytes or 64 hex characters")

    @classmethod
    def from_passphrase(
        cls, passphrase: bytes, salt: bytes, opslimit: int, memlimit: int
    ) -> MasterKey:
        """Argon2id(passphrase, salt): the same inputs always give the same key."""
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        if not passphrase:
            raise ConfigError("passphrase: an empty passphrase is refused")
        if len(salt) != SALT_BYTES:
            raise KeystoreError(f"KDF salt must be {SALT_BYTES} bytes (got {len(salt)})")
        if not argon2id.OPSLIMIT_MIN <= opslimit <= _MAX_OPSLIMIT:
            raise KeystoreError(f"KDF opslimit {opslimit} outside 1..{_MAX_OPSLIMIT}")
        if not argon2id.MEMLIMIT_MIN <= memlimit <= _MAX_MEMLIMIT:
            raise KeystoreError(
                f"KDF memlimit {memlimit} outside {argon2id.MEMLIMIT_MIN}..{_MAX_MEMLIMIT}"
            )
        return cls(argon2id.kdf(KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit))

    @classmethod
    def generate_keyfile(cls, path: Path | str) -> MasterKey:
        """Create a new key file (hex, mode 0600); never overwrites an existing file."""
        path = Path(path)
        key = nacl.utils.random(KEY_BYTES)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise ConfigError(f"{path} already exists; refusing to overwrite a key file") from None
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(key.hex().encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return cls(key)

    def _subkey(self, context: tuple[bytes, ...]) -> bytes:
        data = b"".join(len(part).to_bytes(4, "big") + part for part in context)
        return nacl.hash.blake2b(
            data, digest_size=KEY_BYTES, key=self._key, person=_PERSON_SEAL, encoder=RawEncoder
        )

    def seal(self, context: tuple[bytes, ...], plaintext: bytes) -> bytes:
        """Encrypt under the subkey for `context` (random nonce, prepended)."""
        box = nacl.secret.SecretBox(self._subkey(context))
        return _BLOB_VERSION + bytes(box.encrypt(plaintext))

    def unseal(self, context: tuple[bytes, ...], blob: bytes) -> bytes:
        """Decrypt; raises CryptoError if the blob was altered or sealed under another context."""
        if not blob.startswith(_BLOB_VERSION):
            raise CryptoError("unknown sealed blob version")
        return nacl.secret.SecretBox(self._subkey(context)).decrypt(blob[1:])

    def tag(self, context: tuple[bytes, ...], data: bytes, size: int = 8) -> bytes:
        """A keyed hash: stable for this master key, meaningless without it."""
        key = self._subkey(context)
        return nacl.hash.blake2b(
            data, digest_size=size, key=key, person=_PERSON_FPR, encoder=RawEncoder
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise ConfigError(f"key_id {str(key_id)[:80]!r} must be 1..64 characters of [A-Za-z0-9_.-]")


def _check_exchange(exchange: str) -> None:
    if not isinstance(exchange, str) or not _EXCHANGE_RE.fullmatch(exchange):
        raise ConfigError(
            f"exchange {str(exchange)[:40]!r} must be a ccxt exchange id ([a-z][a-z0-9_], 1..32)"
        )


def _check_api_key(api_key: str, *, required: bool) -> str:
    if api_key == "" and not required:
        return api_key
    if not isinstance(api_key, str) or not _API_KEY_RE.fullmatch(api_key):
        raise ConfigError("api_key must be 1..256 printable ASCII characters without whitespace")
    return api_key


def _check_secret(field: str, value: str) -> None:
    """Validate without ever quoting the value back."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field}: an empty value is refused")
    if len(value) > _MAX_SECRET_CHARS:
        raise ConfigError(f"{field} is longer than {_MAX_SECRET_CHARS} characters")
    if "\x00" in value:
        raise ConfigError(f"{field} contains a NUL character")
    if field == "secret" and value != value.strip():
        raise ConfigError("secret has leading or trailing whitespace (a paste error?)")


def _exactly_one(passphrase: bytes | None, keyfile: Path | None) -> None:
    if (passphrase is None) == (keyfile is None):
        raise ConfigError("give exactly one of a passphrase or a key file")


def _ed25519_fingerprint(public_pem: str) -> str:
    """Unkeyed hash of the raw public key: public anyway, and recomputable from the printed PEM."""
    pub = serialization.load_pem_public_key(public_pem.encode("ascii"))
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return nacl.hash.blake2b(raw, digest_size=8, person=_PERSON_ED25519).decode("ascii")


def _public_pem_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 key")
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def _secure_delete(session: Session) -> None:
    """SQLite: zero freed cells, so replaced or removed ciphertext is not left in the file."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete = ON"))


def purge_stale_pages(engine: Engine) -> bool:
    """After committing a remove/rotate on SQLite, fold the WAL into the DB and truncate it.

    With secure_delete on, this leaves no copy of the old ciphertext in the data directory.
    Returns False if a reader kept the checkpoint from completing (call again later).
    PostgreSQL keeps dead tuples until VACUUM reuses their space; nothing to do here.
    """
    if not is_sqlite(engine):
        return True
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = cur.fetchone()[0]
        cur.close()
        return busy == 0
    finally:
        raw.close()


class Keystore:
    """Seals and unseals key material. Every write flushes only; the caller commits."""

    __slots__ = ("_master", "_keystore_id")

    def __init__(self, master: MasterKey, keystore_id: bytes) -> None:
        self._master = master
        self._keystore_id = keystore_id

    def __repr__(self) -> str:
        return f"Keystore(id={self._keystore_id.hex()[:8]})"

    @classmethod
    def initialize(
        cls,
        session: Session,
        *,
        passphrase: bytes | None = None,
        keyfile: Path | None = None,
        kdf_profile: str = "moderate",
    ) -> Keystore:
        """Create the keystore's meta row. Refuses if one exists."""
        _exactly_one(passphrase, keyfile)
        if session.get(KeystoreMeta, 1) is not None:
            raise KeystoreError("keystore is already initialized; open it instead")
        salt: bytes | None = None
        opslimit: int | None = None
        memlimit: int | None = None
        if passphrase is not None:
            if kdf_profile not in KDF_PROFILES:
                raise ConfigError(
                    f"kdf_profile {kdf_profile!r} is not one of {', '.join(KDF_PROFILES)}"
                )
            opslimit, memlimit = KDF_PROFILES[kdf_profile]
            salt = nacl.utils.random(SALT_BYTES)
            master = MasterKey.from_passphrase(passphrase, salt, opslimit, memlimit)
            kdf = "argon2id"
        else:
            assert keyfile is not None
            master = MasterKey.from_keyfile(keyfile)
            kdf = "keyfile"
        store = cls(master, nacl.utils.random(16))
        session.add(
            KeystoreMeta(
                id=1,
                keystore_id=store._keystore_id,
                kdf=kdf,
                salt=salt,
                opslimit=opslimit,
                memlimit=memlimit,
                verifier=master.seal(store._ctx("verifier"), _VERIFIER),
                created_ms=_now_ms(),
            )
        )
        try:
            session.flush()
        except IntegrityError:
            raise KeystoreError("keystore is already initialized; open it instead") from None
        return store

    @classmethod
    def open(
        cls, session: Session, *, passphrase: bytes | None = None, keyfile: Path | None = None
    ) -> Keystore:
        """Re-derive the master key and check it against the stored verifier."""
        _exactly_one(passphrase, keyfile)
        meta = session.get(KeystoreMeta, 1)
        if meta is None:
            raise KeystoreError("keystore is not initialized (run the init command first)")
        if meta.kdf == "argon2id":
            if passphrase is None:
                raise KeystoreError("this keystore is sealed under a passphrase, not a key file")
            if meta.salt is None or meta.opslimit is None or meta.memlimit is None:
                raise KeystoreError("keystore_meta lacks its KDF parameters (database altered?)")
            master = MasterKey.from_passphrase(passphrase, meta.salt, meta.opslimit, meta.memlimit)
        elif meta.kdf == "keyfile":
            if keyfile is None:
                raise KeystoreError("this keystore is sealed under a key file, not a passphrase")
            master = MasterKey.from_keyfile(keyfile)
        else:
            raise KeystoreError(f"keystore_meta names an unknown kdf {meta.kdf[:32]!r}")
        store = cls(master, meta.keystore_id)
        try:
            ok = master.unseal(store._ctx("verifier"), meta.verifier) == _VERIFIER
        except CryptoError:
            ok = False
        if not ok:
            raise KeystoreError("master key does not match this keystore")
        return store

    # -- exchange keys -------------------------------------------------------------------------

    def add_hmac(
        self,
        session: Session,
        key_id: str,
        exchange: str,
        api_key: str,
        secret: str,
        password: str | None = None,
    ) -> KeyInfo:
        """Import an exchange-generated HMAC key (secret entered once, sealed from then on)."""
        _check_key_id(key_id)
        _check_exchange(exchange)
        _check_api_key(api_key, required=True)
        _check_secret("secret", secret)
        if password is not None:
            _check_secret("password", password)
        self._ensure_new(session, key_id)
        row = ExchangeKey(key_id=key_id, exchange=exchange, kind="hmac", api_key=api_key)
        row.status, row.created_ms, row.rotated_ms, row.generation = "active", _now_ms(), None, 1
        self._fill_hmac(row, secret, password)
        session.add(row)
        session.flush()
        return self._info(row)

    def generate_ed25519(
        self, session: Session, key_id: str, exchange: str, api_key: str = ""
    ) -> KeyInfo:
        """A key born inside: only the public half (KeyInfo.public_key_pem) ever leaves."""
        _check_key_id(key_id)
        _check_exchange(exchange)
        _check_api_key(api_key, required=False)
        self._ensure_new(session, key_id)
        row = ExchangeKey(key_id=key_id, exchange=exchange, kind="ed25519", api_key=api_key)
        row.status = "active" if api_key else "pending"
        row.created_ms, row.rotated_ms, row.generation = _now_ms(), None, 1
        self._fill_ed25519(row)
        session.add(row)
        session.flush()
        return self._info(row)

    def set_api_key(self, session: Session, key_id: str, api_key: str) -> KeyInfo:
        """Record the API key id the exchange assigned; a pending key becomes active."""
        _check_api_key(api_key, required=True)
        row = self._live_row(session, key_id)
        row.api_key = api_key
        if row.status == "pending":
            row.status = "active"
        session.flush()
        return self._info(row)

    def rotate(
        self,
        session: Session,
        key_id: str,
        *,
        api_key: str | None,
        secret: str | None,
        password: str | None = None,
        generate: bool = False,
    ) -> KeyInfo:
        """Replace the key material (generation + 1); the old material is gone afterwards.

        generate=True: a new Ed25519 pair is born inside; without an api_key the key is pending
        until the new public key is registered. Otherwise a new HMAC secret is imported; api_key
        None keeps the current one; password replaces the old one (None: no password).
        """
        row = self._live_row(session, key_id)
        if generate:
            if secret is not None or password is not None:
                raise ConfigError("rotate with generate takes no secret or password")
            new_api_key = _check_api_key(api_key or "", required=False)
        else:
            if secret is None:
                raise ConfigError("rotate needs a new secret (or generate for a key born inside)")
            _check_secret("secret", secret)
            if password is not None:
                _check_secret("password", password)
            new_api_key = _check_api_key(row.api_key if api_key is None else api_key, required=True)
        _secure_delete(session)
        row.generation += 1
        row.rotated_ms = _now_ms()
        row.api_key = new_api_key
        if generate:
            row.kind, row.sealed_password = "ed25519", None
            row.status = "active" if new_api_key else "pending"
            self._fill_ed25519(row)
        else:
            assert secret is not None
            row.kind, row.public_key_pem, row.status = "hmac", None, "active"
            self._fill_hmac(row, secret, password)
        session.flush()
        return self._info(row)

    def remove(self, session: Session, key_id: str) -> KeyInfo:
        """Destroy the sealed material; keep the row (status 'removed') for the audit trail."""
        row = self._live_row(session, key_id)
        _secure_delete(session)
        row.sealed_secret = None
        row.sealed_password = None
        row.status = "removed"
        session.flush()
        return self._info(row)

    def list(self, session: Session) -> list[KeyInfo]:
        rows = session.scalars(select(ExchangeKey).order_by(ExchangeKey.key_id))
        return [self._info(row) for row in rows]

    def get(self, session: Session, key_id: str) -> KeyInfo:
        return self._info(self._row(session, key_id))

    def status_of(self, session: Session, key_id: str) -> KeyStatus | None:
        """The few columns a signing decision needs, in one Core read (no unsealing)."""
        sql = "SELECT exchange, kind, status, generation FROM exchange_keys WHERE key_id = ?"
        row = fastsql.run(session, sql, (key_id,)).first()
        return None if row is None else KeyStatus(key_id, row[0], row[1], row[2], int(row[3]))

    def credentials(self, session: Session, key_id: str) -> Credentials:
        """Unseal a key for signing. Only an active key has usable credentials."""
        row = self._row(session, key_id)
        if row.status != "active":
            hint = (
                " (register its public key, then set its API key)"
                if row.status == "pending"
                else ""
            )
            raise KeystoreError(f"key {key_id!r} is {row.status}, not active{hint}")
        secret = self._unseal_field(row, "secret")
        if secret is None:
            raise KeystoreError(f"key {key_id!r} has no sealed secret (database altered?)")
        return Credentials(row.api_key, secret, self._unseal_field(row, "password"))

    # -- internal secrets ----------------------------------------------------------------------

    def put_secret(self, session: Session, name: str, data: bytes) -> None:
        """Seal an internal secret under `name` (replacing any previous value)."""
        if not isinstance(name, str) or not _BLOB_NAME_RE.fullmatch(name):
            raise ConfigError(f"secret name {str(name)[:80]!r} must be 1..128 of [A-Za-z0-9_.:/-]")
        if not isinstance(data, bytes) or not 0 < len(data) <= _MAX_BLOB_BYTES:
            raise ConfigError(f"secret {name!r} must be 1..{_MAX_BLOB_BYTES} bytes")
        sealed = self._master.seal(self._ctx("sealed_blobs", name), data)
        row = session.get(SealedBlob, name)
        if row is None:
            session.add(SealedBlob(name=name, sealed=sealed, updated_ms=_now_ms()))
        else:
            _secure_delete(session)
            row.sealed, row.updated_ms = sealed, _now_ms()
        session.flush()

    def get_secret(self, session: Session, name: str) -> bytes:
        row = session.get(SealedBlob, name) if isinstance(name, str) else None
        if row is None:
            raise KeystoreError(f"no sealed secret named {str(name)[:128]!r}")
        try:
            return self._master.unseal(self._ctx("sealed_blobs", name), row.sealed)
        except CryptoError:
            raise KeystoreError(f"sealed secret {name!r} failed authentication") from None

    # -- helpers -------------------------------------------------------------------------------

    def _ctx(self, *parts: str) -> tuple[bytes, ...]:
        return (b"bulkhead.keystore.v1", self._keystore_id, *(p.encode("utf-8") for p in parts))

    def _key_ctx(self, row: ExchangeKey, field: str) -> tuple[bytes, ...]:
        gen = str(row.generation)
        return self._ctx("exchange_keys", row.key_id, row.exchange, row.kind, gen, field)

    def _row(self, session: Session, key_id: str) -> ExchangeKey:
        row = session.get(ExchangeKey, key_id) if isinstance(key_id, str) else None
        if row is None:
            raise KeystoreError(f"unknown key id {str(key_id)[:64]!r}")
        return row

    def _live_row(self, session: Session, key_id: str) -> ExchangeKey:
        row = self._row(session, key_id)
        if row.status == "removed":
            raise KeystoreError(f"key {key_id!r} was removed; add a new key under a new id")
        return row

    def _ensure_new(self, session: Session, key_id: str) -> None:
        if session.get(ExchangeKey, key_id) is not None:
            raise KeystoreError(f"key id {key_id!r} already exists (removed ids are not reused)")

    def _fill_hmac(self, row: ExchangeKey, secret: str, password: str | None) -> None:
        row.sealed_secret = self._master.seal(self._key_ctx(row, "secret"), secret.encode())
        row.sealed_password = (
            None
            if password is None
            else self._master.seal(self._key_ctx(row, "password"), password.encode())
        )
        tag = self._master.tag(self._ctx("fingerprint", "hmac"), secret.encode())
        row.fingerprint = tag.hex()

    def _fill_ed25519(self, row: ExchangeKey) -> None:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        row.sealed_secret = self._master.seal(self._key_ctx(row, "secret"), pem)
        row.public_key_pem = _public_pem_of(pem.decode("ascii"))
        row.fingerprint = _ed25519_fingerprint(row.public_key_pem)

    def _unseal_field(self, row: ExchangeKey, field: str) -> str | None:
        blob = row.sealed_secret if field == "secret" else row.sealed_password
        if blob is None:
            return None
        try:
            return self._master.unseal(self._key_ctx(row, field), blob).decode("utf-8")
        except (CryptoError, UnicodeDecodeError):
            raise KeystoreError(
                f"sealed {field} of key {row.key_id!r} failed authentication: the row was altered, "
                "or the blob was moved from another row or an older generation"
            ) from None

    def _info(self, row: ExchangeKey) -> KeyInfo:
        """Build the public view; for Ed25519, prove the shown public key is the sealed key's."""
        if row.kind == "ed25519" and row.sealed_secret is not None:
            private_pem = self._unseal_field(row, "secret")
            try:
                matches = (
                    private_pem is not None and _public_pem_of(private_pem) == row.public_key_pem
                )
            except (ValueError, TypeError, UnsupportedAlgorithm):
                matches = False
            if not matches:
                raise KeystoreError(
                    f"public key of key {row.key_id!r} does not match its sealed private key "
                    "(database altered); do not register it"
                )
        return KeyInfo(
            key_id=row.key_id,
            exchange=row.exchange,
            kind=row.kind,
            api_key=row.api_key,
            fingerprint=row.fingerprint,
            status=row.status,
            created_ms=row.created_ms,
            rotated_ms=row.rotated_ms,
            generation=row.generation,
            public_key_pem=row.public_key_pem,
        )
