"""Key custody: sealed at rest, bound to its row, wrong master keys refused, secrets never shown."""

from __future__ import annotations

import base64
import io
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import ccxt
import nacl.hash
import nacl.pwhash.argon2id as argon2id
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, text, update

from signer.db import Base, make_engine, read_session, sqlite_url, write_txn
from signer.errors import ConfigError, InsecureStorage, KeystoreError
from signer.keystore import (
    KEYSTORE_TABLES,
    Credentials,
    ExchangeKey,
    Keystore,
    KeystoreMeta,
    MasterKey,
    purge_stale_pages,
)
from signer.prompt import read_new_secret, read_secret, read_secret_lines

ROOT = Path(__file__).resolve().parents[2]


# -- fixtures ----------------------------------------------------------------------------------


def _engine(data_dir: Path) -> Engine:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    engine = make_engine(sqlite_url(data_dir))
    Base.metadata.create_all(engine, tables=list(KEYSTORE_TABLES))
    return engine


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    engine = _engine(data_dir)
    yield engine
    engine.dispose()


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    """The master key file lives outside the data directory, as in production."""
    (tmp_path / "secrets").mkdir(mode=0o700)
    path = tmp_path / "secrets" / "master.key"
    MasterKey.generate_keyfile(path)
    return path


@pytest.fixture
def store(engine: Engine, keyfile: Path) -> Keystore:
    with write_txn(engine) as s:
        return Keystore.initialize(s, keyfile=keyfile)


def _hmac_secret() -> str:
    return secrets.token_urlsafe(48)


def _db_bytes(data_dir: Path) -> bytes:
    """Every byte SQLite keeps for this database: main file, WAL and shared-memory index."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("signer.db*")))


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode(), raw.hex().upper().encode()]


# -- sealing at rest ---------------------------------------------------------------------------


def test_hmac_secret_round_trips_and_never_appears_in_db_file(
    data_dir: Path, engine: Engine, store: Keystore, keyfile: Path
) -> None:
    secret, password = _hmac_secret(), "kucoin-" + secrets.token_hex(8)
    with write_txn(engine) as s:
        info = store.add_hmac(s, "kucoin-main", "kucoin", "AK-PUBLIC-123", secret, password)
    assert (info.status, info.kind, info.generation, info.public_key_pem) == (
        "active",
        "hmac",
        1,
        None,
    )
    engine.dispose()

    reopened = make_engine(sqlite_url(data_dir))
    with read_session(reopened) as s:
        creds = Keystore.open(s, keyfile=keyfile).credentials(s, "kucoin-main")
    reopened.dispose()
    assert creds == Credentials("AK-PUBLIC-123", secret, password)

    blob = _db_bytes(data_dir)
    assert b"AK-PUBLIC-123" in blob  # the grep itself works: plain columns are visible
    for needle in _encodings(secret) + _encodings(password):
        assert needle not in blob
    assert keyfile.read_bytes().strip() not in blob


def test_passphrase_rederives_master_key_and_wrong_passphrase_is_refused(
    data_dir: Path, engine: Engine
) -> None:
    secret = _hmac_secret()
    with write_txn(engine) as s:
        ks = Keystore.initialize(s, passphrase=b"correct horse", kdf_profile="interactive")
        ks.add_hmac(s, "k1", "binance", "AK1", secret)
    with read_session(engine) as s:
        meta = s.get(KeystoreMeta, 1)
        assert meta is not None and meta.kdf == "argon2id"
        assert (meta.opslimit, meta.memlimit) == (
            argon2id.OPSLIMIT_INTERACTIVE,
            argon2id.MEMLIMIT_INTERACTIVE,
        )
        assert meta.salt is not None and len(meta.salt) == argon2id.SALTBYTES
        assert Keystore.open(s, passphrase=b"correct horse").credentials(s, "k1").secret == secret
        with pytest.raises(KeystoreError, match="master key does not match this keystore"):
            Keystore.open(s, passphrase=b"correct horsf")
        with pytest.raises(KeystoreError, match="passphrase, not a key file"):
            Keystore.open(s, keyfile=data_dir / "nope")


def test_default_kdf_profile_is_moderate(engine: Engine) -> None:
    with write_txn(engine) as s:
        Keystore.initialize(s, passphrase=b"a long passphrase")
        meta = s.get(KeystoreMeta, 1)
        assert meta is not None
        assert (meta.opslimit, meta.memlimit) == (
            argon2id.OPSLIMIT_MODERATE,
            argon2id.MEMLIMIT_MODERATE,
        )


def test_unknown_kdf_profile_and_empty_passphrase_are_refused(engine: Engine) -> None:
    with write_txn(engine) as s:
        with pytest.raises(ConfigError, match="kdf_profile 'fast' is not one of"):
            Keystore.initialize(s, passphrase=b"pw", kdf_profile="fast")
        with pytest.raises(ConfigError, match="empty passphrase"):
            Keystore.initialize(s, passphrase=b"", kdf_profile="interactive")
        with pytest.raises(ConfigError, match="exactly one"):
            Keystore.initialize(s)


def test_wrong_keyfile_is_refused(engine: Engine, store: Keystore, tmp_path: Path) -> None:
    other = MasterKey.generate_keyfile(tmp_path / "secrets" / "other.key")
    assert other is not None
    with read_session(engine) as s:
        with pytest.raises(KeystoreError, match="master key does not match this keystore"):
            Keystore.open(s, keyfile=tmp_path / "secrets" / "other.key")
        with pytest.raises(KeystoreError, match="key file, not a passphrase"):
            Keystore.open(s, passphrase=b"anything")


def test_initialize_twice_is_refused(engine: Engine, store: Keystore, keyfile: Path) -> None:
    with write_txn(engine) as s, pytest.raises(KeystoreError, match="already initialized"):
        Keystore.initialize(s, keyfile=keyfile)


def test_open_before_initialize_is_refused(engine: Engine, keyfile: Path) -> None:
    with read_session(engine) as s, pytest.raises(KeystoreError, match="not initialized"):
        Keystore.open(s, keyfile=keyfile)


def test_altered_verifier_reads_as_wrong_master_key(
    engine: Engine, store: Keystore, keyfile: Path
) -> None:
    with write_txn(engine) as s:
        s.execute(update(KeystoreMeta).values(keystore_id=os.urandom(16)))
    with read_session(engine) as s, pytest.raises(KeystoreError, match="does not match"):
        Keystore.open(s, keyfile=keyfile)


# -- key files ---------------------------------------------------------------------------------


def test_generated_keyfile_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "mk"
    MasterKey.generate_keyfile(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        MasterKey.generate_keyfile(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_keyfile_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "mk"
    MasterKey.generate_keyfile(path)
    path.chmod(mode)
    with pytest.raises(InsecureStorage, match="chmod 600"):
        MasterKey.from_keyfile(path)


def test_raw_and_hex_keyfiles_unseal_the_same_keystore(engine: Engine, tmp_path: Path) -> None:
    key = os.urandom(32)
    raw, hexed = tmp_path / "raw.key", tmp_path / "hex.key"
    for path, content in ((raw, key), (hexed, key.hex().upper().encode() + b"\n")):
        path.write_bytes(content)
        path.chmod(0o600)
    with write_txn(engine) as s:
        Keystore.initialize(s, keyfile=raw).add_hmac(s, "k", "binance", "AK", "s3cr3t-value")
    with read_session(engine) as s:
        assert Keystore.open(s, keyfile=hexed).credentials(s, "k").secret == "s3cr3t-value"


@pytest.mark.parametrize("content", [b"", b"\x00" * 31, b"ab" * 31, b"zz" * 32, b"\x01" * 33])
def test_malformed_keyfile_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32 raw bytes or 64 hex"):
        MasterKey.from_keyfile(path)


def test_master_key_is_not_shown_or_pickled(tmp_path: Path) -> None:
    import pickle

    mk = MasterKey.generate_keyfile(tmp_path / "mk")
    hexkey = (tmp_path / "mk").read_text().strip()
    assert hexkey not in repr(mk) and hexkey not in str(mk)
    with pytest.raises(TypeError):
        pickle.dumps(mk)


# -- binding each blob to its row --------------------------------------------------------------


def test_swapping_sealed_blobs_between_rows_is_detected(engine: Engine, store: Keystore) -> None:
    sa, sb, pw = _hmac_secret(), _hmac_secret(), "okx-pass-" + secrets.token_hex(6)
    with write_txn(engine) as s:
        store.add_hmac(s, "a", "binance", "AKA", sa)
        store.add_hmac(s, "b", "binance", "AKB", sb, pw)
    with write_txn(engine) as s:
        blob_a = s.get(ExchangeKey, "a").sealed_secret
        blob_b = s.get(ExchangeKey, "b").sealed_secret
        s.execute(update(ExchangeKey).where(ExchangeKey.key_id == "a").values(sealed_secret=blob_b))
        s.execute(update(ExchangeKey).where(ExchangeKey.key_id == "b").values(sealed_secret=blob_a))
    with read_session(engine) as s:
        for key_id in ("a", "b"):
            with pytest.raises(KeystoreError, match="failed authentication") as excinfo:
                store.credentials(s, key_id)
            assert sa not in str(excinfo.value) and sb not in str(excinfo.value)
            assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    # a field moved within one row (password blob into the secret column) is caught too
    with write_txn(engine) as s:
        row = s.get(ExchangeKey, "b")
        row.sealed_secret = row.sealed_password
    with read_session(engine) as s, pytest.raises(KeystoreError, match="failed authentication"):
        store.credentials(s, "b")


def test_changing_a_rows_exchange_is_detected(engine: Engine, store: Keystore) -> None:
    with write_txn(engine) as s:
        store.add_hmac(s, "a", "binance", "AKA", _hmac_secret())
    with write_txn(engine) as s:
        s.execute(update(ExchangeKey).values(exchange="kraken"))
    with read_session(engine) as s, pytest.raises(KeystoreError, match="failed authentication"):
        store.credentials(s, "a")


def test_blob_from_an_older_generation_is_refused_after_rotation(
    engine: Engine, store: Keystore
) -> None:
    old, new = _hmac_secret(), _hmac_secret()
    with write_txn(engine) as s:
        first = store.add_hmac(s, "k", "binance", "AK1", old)
        old_blob = s.get(ExchangeKey, "k").sealed_secret
    with write_txn(engine) as s:
        rotated = store.rotate(s, "k", api_key="AK2", secret=new)
    assert rotated.generation == 2 and rotated.rotated_ms is not None
    assert rotated.api_key == "AK2" and rotated.fingerprint != first.fingerprint
    with read_session(engine) as s:
        assert store.credentials(s, "k") == Credentials("AK2", new, None)
    with write_txn(engine) as s:  # restore the old ciphertext, as from a backup
        s.execute(update(ExchangeKey).values(sealed_secret=old_blob))
    with read_session(engine) as s, pytest.raises(KeystoreError, match="older generation"):
        store.credentials(s, "k")


def test_rotate_keeps_api_key_when_none_and_can_switch_to_a_key_born_inside(
    engine: Engine, store: Keystore
) -> None:
    with write_txn(engine) as s:
        store.add_hmac(s, "k", "binance", "AK1", _hmac_secret(), "pw")
        info = store.rotate(s, "k", api_key=None, secret="new-secret-value")
        assert (info.api_key, info.generation) == ("AK1", 2)
        assert store.credentials(s, "k") == Credentials("AK1", "new-secret-value", None)
        info = store.rotate(s, "k", api_key=None, secret=None, generate=True)
    assert (info.kind, info.status, info.api_key, info.generation) == ("ed25519", "pending", "", 3)
    assert info.public_key_pem is not None
    with read_session(engine) as s, pytest.raises(KeystoreError, match="pending, not active"):
        store.credentials(s, "k")
    with write_txn(engine) as s:
        with pytest.raises(ConfigError, match="takes no secret"):
            store.rotate(s, "k", api_key=None, secret="x", generate=True)
        with pytest.raises(ConfigError, match="needs a new secret"):
            store.rotate(s, "k", api_key="AK", secret=None)
        with pytest.raises(ConfigError, match="api_key"):  # pending key has no api_key to keep
            store.rotate(s, "k", api_key=None, secret="another-secret")
        assert store.get(s, "k").generation == 3  # refused rotations changed nothing


# -- removal -----------------------------------------------------------------------------------


def test_removed_key_has_no_recoverable_material(data_dir: Path, keyfile: Path) -> None:
    # Many SQLite builds (Debian's among them) compile secure_delete on by default; start from
    # OFF so this test shows the keystore turning it on itself, as on builds without it.
    data_dir.mkdir(mode=0o700)
    engine = make_engine(sqlite_url(data_dir))
    event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA secure_delete=OFF"))
    Base.metadata.create_all(engine, tables=list(KEYSTORE_TABLES))
    with write_txn(engine) as s:
        store = Keystore.initialize(s, keyfile=keyfile)
    secret = _hmac_secret()
    with write_txn(engine) as s:
        store.add_hmac(s, "gone", "binance", "AK-GONE", secret, "pw-" + secrets.token_hex(8))
        store.generate_ed25519(s, "gone-ed", "binance", "AK-ED")
    with read_session(engine) as s:
        sealed = [s.get(ExchangeKey, k).sealed_secret for k in ("gone", "gone-ed")]
        sealed.append(s.get(ExchangeKey, "gone").sealed_password)
    assert purge_stale_pages(engine)
    assert all(blob[8:40] in _db_bytes(data_dir) for blob in sealed)  # present before removal

    with write_txn(engine) as s:
        info = store.remove(s, "gone")
        store.remove(s, "gone-ed")
    assert info.status == "removed" and len(info.fingerprint) == 16
    assert purge_stale_pages(engine)

    with read_session(engine) as s:
        row = s.get(ExchangeKey, "gone")
        assert row.sealed_secret is None and row.sealed_password is None
        with pytest.raises(KeystoreError, match="removed, not active"):
            store.credentials(s, "gone")
        assert store.get(s, "gone-ed").public_key_pem is not None  # public half kept for audit
    contents = _db_bytes(data_dir)
    for blob in sealed:
        assert blob[8:40] not in contents  # no ciphertext left in the file or the WAL
    with write_txn(engine) as s:
        with pytest.raises(KeystoreError, match="was removed"):
            store.rotate(s, "gone", api_key="AK", secret="x-secret")
        with pytest.raises(KeystoreError, match="was removed"):
            store.set_api_key(s, "gone", "AK2")
        with pytest.raises(KeystoreError, match="was removed"):
            store.remove(s, "gone")
        with pytest.raises(KeystoreError, match="already exists"):
            store.add_hmac(s, "gone", "binance", "AK", "fresh-secret")
    engine.dispose()


# -- keys born inside --------------------------------------------------------------------------


def test_key_born_inside_signs_what_its_printed_public_key_verifies(
    data_dir: Path, engine: Engine, store: Keystore
) -> None:
    with write_txn(engine) as s:
        info = store.generate_ed25519(s, "bn-ed", "binance")
    assert (info.kind, info.status, info.api_key) == ("ed25519", "pending", "")
    assert info.public_key_pem is not None
    assert info.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    public = serialization.load_pem_public_key(info.public_key_pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    raw_pub = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected_fpr = nacl.hash.blake2b(raw_pub, digest_size=8, person=b"bulkhead.ed25519")
    assert info.fingerprint == expected_fpr.decode()  # recomputable from the printed PEM

    with read_session(engine) as s, pytest.raises(KeystoreError, match="pending"):
        store.credentials(s, "bn-ed")
    with write_txn(engine) as s:
        assert store.set_api_key(s, "bn-ed", "BINANCE-ED-KEY").status == "active"
    with read_session(engine) as s:
        creds = store.credentials(s, "bn-ed")
        assert store.get(s, "bn-ed").fingerprint == info.fingerprint  # stable across set_api_key

    private = serialization.load_pem_private_key(creds.secret.encode(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    message = b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=50000"
    public.verify(private.sign(message), message)  # raises InvalidSignature on mismatch

    # ccxt's binance takes its Ed25519 branch for this secret and signs verifiably.
    assert "PRIVATE KEY" in creds.secret and len(creds.secret) <= 120
    exchange = ccxt.binance({"apiKey": creds.api_key, "secret": creds.secret})
    req = exchange.sign("order", ["private"], "POST", {"symbol": "BTCUSDT", "side": "BUY"})
    payload, _, signature = req["body"].rpartition("&signature=")
    public.verify(base64.b64decode(unquote(signature)), payload.encode())
    assert req["headers"]["X-MBX-APIKEY"] == "BINANCE-ED-KEY"

    private_b64 = creds.secret.splitlines()[1].encode()
    assert private_b64 not in _db_bytes(data_dir)


def test_substituted_public_key_is_refused(engine: Engine, store: Keystore) -> None:
    """A DB writer must not get the operator to register the writer's own public key."""
    attacker = Ed25519PrivateKey.generate().public_key()
    pem = attacker.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with write_txn(engine) as s:
        store.generate_ed25519(s, "victim", "binance")
    with write_txn(engine) as s:
        s.execute(update(ExchangeKey).values(public_key_pem=pem))
    with read_session(engine) as s:
        with pytest.raises(KeystoreError, match="does not match its sealed private key"):
            store.get(s, "victim")
        with pytest.raises(KeystoreError, match="do not register it"):
            store.list(s)


# -- listing, fingerprints, validation ---------------------------------------------------------


def test_list_shows_fingerprints_and_no_secret(engine: Engine, store: Keystore) -> None:
    secret = _hmac_secret()
    with write_txn(engine) as s:
        store.add_hmac(s, "b-key", "binance", "AKB", secret)
        store.generate_ed25519(s, "a-key", "binance", "AKA")
    with read_session(engine) as s:
        infos = store.list(s)
        assert [i.key_id for i in infos] == ["a-key", "b-key"]
        assert [i.status for i in infos] == ["active", "active"]
        assert all(len(i.fingerprint) == 16 and int(i.fingerprint, 16) >= 0 for i in infos)
        assert secret not in repr(infos)
        with pytest.raises(KeystoreError, match="unknown key id 'nope'"):
            store.get(s, "nope")


def test_hmac_fingerprint_is_stable_but_keyed_to_the_keystore(
    tmp_path: Path, engine: Engine, store: Keystore
) -> None:
    """Same secret, same keystore: same fingerprint. Another master key: unrelated fingerprint,
    so a fingerprint cannot be used to test guesses of the secret without the master key."""
    secret = _hmac_secret()
    with write_txn(engine) as s:
        one = store.add_hmac(s, "one", "binance", "AK1", secret)
        two = store.add_hmac(s, "two", "binance", "AK2", secret)
    other_engine = _engine(tmp_path / "other")
    (tmp_path / "other.key").write_bytes(os.urandom(32))
    (tmp_path / "other.key").chmod(0o600)
    with write_txn(other_engine) as s:
        other = Keystore.initialize(s, keyfile=tmp_path / "other.key")
        three = other.add_hmac(s, "one", "binance", "AK1", secret)
    other_engine.dispose()
    assert one.fingerprint == two.fingerprint != three.fingerprint
    assert one.fingerprint not in secret


@pytest.mark.parametrize("key_id", ["", "x" * 65, "has space", "slash/no", "ünï", "a\n"])
def test_invalid_key_id_is_refused(engine: Engine, store: Keystore, key_id: str) -> None:
    with write_txn(engine) as s:
        with pytest.raises(ConfigError, match="key_id"):
            store.add_hmac(s, key_id, "binance", "AK", "secret-value")
        with pytest.raises(ConfigError, match="key_id"):
            store.generate_ed25519(s, key_id, "binance")


def test_bad_exchange_api_key_and_secret_are_refused_without_echo(
    engine: Engine, store: Keystore
) -> None:
    with write_txn(engine) as s:
        with pytest.raises(ConfigError, match="ccxt exchange id"):
            store.add_hmac(s, "k", "Binance!", "AK", "secret-value")
        with pytest.raises(ConfigError, match="api_key"):
            store.add_hmac(s, "k", "binance", "has space", "secret-value")
        with pytest.raises(ConfigError, match="empty"):
            store.add_hmac(s, "k", "binance", "AK", "")
        with pytest.raises(ConfigError, match="whitespace") as excinfo:
            store.add_hmac(s, "k", "binance", "AK", "paste-error-SECRETVALUE ")
        assert "SECRETVALUE" not in str(excinfo.value)
        assert store.list(s) == []


def test_internal_secrets_round_trip_and_are_bound_to_their_name(
    data_dir: Path, engine: Engine, store: Keystore, keyfile: Path
) -> None:
    audit_key = os.urandom(32)
    with write_txn(engine) as s:
        store.put_secret(s, "audit_signing_key", audit_key)
        store.put_secret(s, "other", b"other value")
        store.put_secret(s, "other", b"replaced value")
    with read_session(engine) as s:
        reopened = Keystore.open(s, keyfile=keyfile)
        assert reopened.get_secret(s, "audit_signing_key") == audit_key
        assert reopened.get_secret(s, "other") == b"replaced value"
        with pytest.raises(KeystoreError, match="no sealed secret named 'missing'"):
            reopened.get_secret(s, "missing")
    assert audit_key not in _db_bytes(data_dir) and audit_key.hex().encode() not in _db_bytes(
        data_dir
    )
    with write_txn(engine) as s:
        moved = s.execute(text("SELECT sealed FROM sealed_blobs WHERE name='other'")).scalar_one()
        s.execute(
            text("UPDATE sealed_blobs SET sealed=:b WHERE name='audit_signing_key'"), {"b": moved}
        )
    with read_session(engine) as s, pytest.raises(KeystoreError, match="failed authentication"):
        store.get_secret(s, "audit_signing_key")
    with write_txn(engine) as s, pytest.raises(ConfigError, match="secret name"):
        store.put_secret(s, "bad name", b"x")


# -- nothing secret in repr or exception text --------------------------------------------------


_SECRETS = st.text(
    alphabet=st.characters(
        min_codepoint=33, max_codepoint=0x2FF, exclude_categories=("Cc", "Zs", "Cs")
    ),
    min_size=16,
    max_size=96,
)


@settings(max_examples=60, deadline=None)
@given(secret=_SECRETS, password=st.one_of(st.none(), _SECRETS))
def test_credentials_repr_never_shows_secret_or_password(secret: str, password: str | None) -> None:
    creds = Credentials("AK-VISIBLE", secret, password)
    for shown in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert secret not in shown
        assert password is None or password not in shown
        assert "AK-VISIBLE" in shown


def test_exception_texts_never_contain_the_secret(tmp_path: Path) -> None:
    """Drive every refusal path that sees a secret, over random secrets."""
    engine = _engine(tmp_path / "hyp")
    keyfile = tmp_path / "hyp.key"
    MasterKey.generate_keyfile(keyfile)
    with write_txn(engine) as s:
        store = Keystore.initialize(s, keyfile=keyfile)
    counter = iter(range(10_000))

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(secret=_SECRETS, other=_SECRETS)
    def check(secret: str, other: str) -> None:
        n = next(counter)
        messages: list[str] = []
        with write_txn(engine) as s:
            store.add_hmac(s, f"a{n}", "binance", "AKA", secret, other)
            store.add_hmac(s, f"b{n}", "binance", "AKB", other)
            for bad in (secret + " ", " " + secret, secret + "\x00", secret * 600):
                try:
                    store.add_hmac(s, f"c{n}", "binance", "AKC", bad)
                except ConfigError as exc:
                    messages.append(str(exc) + repr(exc))
            row_a, row_b = s.get(ExchangeKey, f"a{n}"), s.get(ExchangeKey, f"b{n}")
            row_a.sealed_secret, row_b.sealed_secret = row_b.sealed_secret, row_a.sealed_secret
            for key_id in (f"a{n}", f"b{n}"):
                try:
                    store.credentials(s, key_id)
                except KeystoreError as exc:
                    messages.append(str(exc) + repr(exc))
            s.rollback()
        assert len(messages) == 6
        for message in messages:
            assert secret not in message and other not in message

    try:
        check()
    finally:
        engine.dispose()


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.pg
def test_keystore_round_trip_on_postgresql(tmp_path: Path, keyfile: Path) -> None:
    url = os.environ.get("BULKHEAD_TEST_PG_URL")
    if not url:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    schema = f"ks_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        Base.metadata.create_all(engine, tables=list(KEYSTORE_TABLES))
        secret = _hmac_secret()
        with write_txn(engine) as s:
            store = Keystore.initialize(s, keyfile=keyfile)
            store.add_hmac(s, "pg-key", "okx", "AK-OKX", secret, "okx-pass")
            store.generate_ed25519(s, "pg-ed", "binance", "AK-ED")
            store.put_secret(s, "audit_signing_key", b"\x00\x01" * 16)
        with read_session(engine) as s:
            reopened = Keystore.open(s, keyfile=keyfile)
            assert reopened.credentials(s, "pg-key") == Credentials("AK-OKX", secret, "okx-pass")
            assert reopened.get_secret(s, "audit_signing_key") == b"\x00\x01" * 16
            assert [i.key_id for i in reopened.list(s)] == ["pg-ed", "pg-key"]
        with write_txn(engine) as s:
            reopened.rotate(s, "pg-key", api_key=None, secret="rotated-secret")
            reopened.remove(s, "pg-ed")
        with read_session(engine) as s:
            assert reopened.credentials(s, "pg-key").secret == "rotated-secret"
            assert reopened.get(s, "pg-ed").status == "removed"
            raw = s.execute(text("SELECT sealed_secret FROM exchange_keys")).scalars().all()
            assert all(secret.encode() not in bytes(b) for b in raw if b is not None)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- reading secrets from the operator ---------------------------------------------------------


def test_piped_secrets_are_read_one_line_each() -> None:
    stdin = io.StringIO("first-secret\r\nsecond secret with spaces\nthird")
    assert read_secret("API secret: ", stdin=stdin) == "first-secret"
    assert read_secret_lines(2, stdin=stdin) == ["second secret with spaces", "third"]
    with pytest.raises(ConfigError, match="API secret: no input"):
        read_secret("API secret: ", stdin=stdin)


def test_empty_piped_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="Passphrase: an empty secret is refused"):
        read_secret("Passphrase: ", stdin=io.StringIO("\nnext\n"))
    assert read_new_secret("Passphrase: ", stdin=io.StringIO("once\n")) == "once"
    with pytest.raises(ConfigError, match="2 prompts for 3"):
        read_secret_lines(3, prompts=["a", "b"], stdin=io.StringIO("x\n"))


_TTY_CHILD = r"""
import hashlib, os, sys
os.setsid()
fd = os.open(sys.argv[1], os.O_RDWR)  # first terminal opened after setsid: controlling tty
for target in (0, 1, 2):
    os.dup2(fd, target)
sys.stdin = open(0, "r", closefd=False)
from signer.prompt import read_secret
value = read_secret("Enter API secret: ")
with open(sys.argv[2], "w") as fh:
    fh.write(hashlib.sha256(value.encode()).hexdigest())
"""


def test_terminal_prompt_does_not_echo_the_secret(tmp_path: Path) -> None:
    """A real pseudo-terminal: getpass must turn echo off before the secret is typed."""
    import hashlib

    master, slave = os.openpty()
    result = tmp_path / "digest"
    secret = "TypedSecret-" + secrets.token_hex(8)
    child = subprocess.Popen(
        [sys.executable, "-c", _TTY_CHILD, os.ttyname(slave), str(result)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = b""
    try:
        # Keep our slave fd open until the child has the terminal, or reads race into EIO.
        while b"Enter API secret: " not in seen:  # prompt is written after echo is off
            chunk = os.read(master, 1024)
            assert chunk, "child closed the terminal before prompting"
            seen += chunk
        os.close(slave)
        slave = -1
        os.write(master, secret.encode() + b"\n")
        assert child.wait(timeout=20) == 0
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        if child.poll() is None:
            child.kill()
    assert result.read_text() == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in seen
