"""Signer lifecycle: initialise a data directory, open it (master key), and serve gRPC.

The data directory (mode 0700) holds signer.toml, the SQLite database (unless signer.toml's
`database_url` points at PostgreSQL), the public audit key and the sockets. The master key
never lives there: it is a key file elsewhere or an Argon2id passphrase typed at a prompt.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bulkhead.signer.v1 import admin_pb2_grpc, signer_pb2_grpc
from signer import state, transport
from signer.admin import AdminActions
from signer.audit import AuditLog, write_public_key
from signer.auditheads import check_anchor, issue_tree_head
from signer.config import SignerConfig, load_config
from signer.core import SignerCore, now_ms
from signer.db import (
    check_private_path,
    create_schema,
    is_sqlite,
    make_engine,
    read_session,
    sqlite_url,
    write_txn,
)
from signer.errors import ConfigError, SignerError
from signer.gateways import Gateways
from signer.keystore import Keystore
from signer.reconcile import reconcile_pending
from signer.service import AdminService, SignerService

log = logging.getLogger("bulkhead.signer")
AUDIT_KEY_SECRET = "audit_signing_key"
AUDIT_PUBKEY_FILE = "audit_pubkey.hex"


@dataclass(frozen=True)
class MasterKeySource:
    """Where the master key comes from: a key file path, or passphrase bytes read from a prompt."""

    keyfile: Path | None = None
    passphrase: bytes | None = None

    def open_kwargs(self) -> dict[str, object]:
        if self.keyfile is not None:
            return {"keyfile": self.keyfile}
        if self.passphrase is not None:
            return {"passphrase": self.passphrase}
        raise ConfigError("master key: give --master-key-file PATH or a passphrase on stdin")


def database_url(data_dir: Path, url: str | None) -> str:
    return url or sqlite_url(data_dir)


def initialize(
    data_dir: Path,
    source: MasterKeySource,
    *,
    db_url: str | None = None,
    kdf_profile: str = "moderate",
    operators: list[tuple[str, bytes]] | None = None,
    actor: str | None = None,
) -> str:
    """Create the data dir, schema, keystore and audit key pair; return the audit public key hex."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private_path(data_dir)
    db_url = db_url or load_config(data_dir).database_url
    engine = make_engine(database_url(data_dir, db_url))
    create_schema(engine)
    if is_sqlite(engine):
        check_private_path(data_dir / "signer.db")
    actor = actor or f"cli:{getpass.getuser()}"
    signing_key = SigningKey.generate()
    with write_txn(engine) as s:
        ks = Keystore.initialize(s, kdf_profile=kdf_profile, **source.open_kwargs())  # type: ignore[arg-type]
        ks.put_secret(s, AUDIT_KEY_SECRET, bytes(signing_key))
        audit = AuditLog(signing_key)
        for op_id, pub in operators or []:
            state.add_operator(s, op_id, pub.hex(), now_ms())
        audit.append(
            s,
            "admin",
            {
                "action": "init",
                "actor": actor,
                "audit_public_key": audit.public_key_hex,
                "operators": [
                    {"operator_id": o, "public_key_hex": p.hex()} for o, p in operators or []
                ],
            },
            now_ms(),
        )
    write_public_key(data_dir / AUDIT_PUBKEY_FILE, audit.public_key_hex)
    engine.dispose()
    return audit.public_key_hex


@dataclass
class OpenSigner:
    """An opened data directory: storage, keystore, audit log; ready for CLI actions or serving."""

    data_dir: Path
    engine: Engine
    keystore: Keystore
    audit: AuditLog
    config: SignerConfig
    actions: AdminActions = field(init=False)

    def __post_init__(self) -> None:
        self.actions = AdminActions(self.engine, self.audit)

    def close(self) -> None:
        self.engine.dispose()


def open_signer(
    data_dir: Path,
    source: MasterKeySource,
    *,
    db_url: str | None = None,
    config: SignerConfig | None = None,
) -> OpenSigner:
    if not data_dir.is_dir():
        raise ConfigError(f"data dir: {data_dir} does not exist; run `bulkhead-signer init` first")
    check_private_path(data_dir)
    config = config or load_config(data_dir)
    engine = make_engine(database_url(data_dir, db_url or config.database_url))
    if is_sqlite(engine):
        db_file = data_dir / "signer.db"
        if not db_file.exists():
            raise ConfigError(f"data dir: {data_dir} has no signer.db; run `bulkhead-signer init`")
        check_private_path(db_file)
    try:
        create_schema(engine)  # no-op when present; adds tables introduced by upgrades
        with read_session(engine) as s:
            ks = Keystore.open(s, **source.open_kwargs())  # type: ignore[arg-type]
            audit = AuditLog(SigningKey(ks.get_secret(s, AUDIT_KEY_SECRET)))
    except SQLAlchemyError as e:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(e, "orig", None) or type(e).__name__).splitlines()[0][:200]
        raise ConfigError(f"database {where} cannot be opened: {reason}") from None
    return OpenSigner(data_dir, engine, ks, audit, config)


class SignerServer:
    """The running signer: bot service and admin service on separate listeners."""

    def __init__(self, opened: OpenSigner, *, insecure_dev: bool = False) -> None:
        self.opened = opened
        cfg = opened.config
        self.gateways = Gateways(opened.engine, opened.keystore, cfg)
        self.core = SignerCore(opened.engine, opened.audit, self.gateways, cfg)
        self.insecure_dev = insecure_dev
        self.bot_server = transport.make_server(cfg.workers)
        self.admin_server = transport.make_server(4)
        self.addresses: dict[str, str] = {}
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._anchor: Path | None = None

    def start(self) -> dict[str, str]:
        cfg, data_dir = self.opened.config, self.opened.data_dir
        self._anchor = check_anchor(cfg.anchor_path, data_dir)  # refused before anything binds
        signer_pb2_grpc.add_SignerServicer_to_server(SignerService(self.core), self.bot_server)
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(self.core, self.opened.actions), self.admin_server
        )
        transport.add_health(self.bot_server, ["bulkhead.signer.v1.Signer"])
        transport.add_health(self.admin_server, ["bulkhead.signer.v1.Admin"])
        # TCP first: a refused TLS set-up must fail before any Unix socket file is replaced.
        if cfg.tcp:
            self.addresses["bot_tcp"] = transport.bind_tcp(
                self.bot_server, cfg.tcp, cfg.tls, self.insecure_dev, "tcp"
            )
        if cfg.admin_tcp:
            self.addresses["admin_tcp"] = transport.bind_tcp(
                self.admin_server, cfg.admin_tcp, cfg.tls, self.insecure_dev, "admin_tcp"
            )
        sock, admin_sock = cfg.socket_path(data_dir), cfg.admin_socket_path(data_dir)
        self.addresses["bot_unix"] = transport.bind_unix(self.bot_server, sock)
        self.addresses["admin_unix"] = transport.bind_unix(self.admin_server, admin_sock)
        self.bot_server.start()
        self.admin_server.start()
        transport.secure_unix_socket(sock, cfg.socket_mode)
        transport.secure_unix_socket(admin_sock, "0600")
        if cfg.reconcile_interval_s:
            threading.Thread(target=self._reconcile_loop, daemon=True, name="reconcile").start()
        if cfg.checkpoint_interval_s:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, daemon=True, name="audit-checkpoint"
            )
            self._checkpointer.start()
        return self.addresses

    def _checkpoint_loop(self) -> None:
        """Periodic signed tree heads (RFC 6962 root + chain head), stored and anchored."""
        op = self.opened
        while not self._stop.wait(op.config.checkpoint_interval_s):
            try:
                issue_tree_head(op.engine, op.audit, now_ms(), self._anchor)
            except SignerError as e:  # integrity or anchor trouble: say which, keep serving
                log.warning("periodic tree head failed: %s", e)
            except Exception as e:  # noqa: BLE001 - keep serving; the next tick retries
                log.warning("periodic tree head failed: %s", type(e).__name__)

    def _reconcile_loop(self) -> None:
        """First pass right away (a restart after a crash), then on the configured interval."""
        cfg = self.opened.config
        while True:
            try:
                reconcile_pending(self.core, cfg.reconcile_grace_s * 1000)
            except Exception as e:  # noqa: BLE001 - keep serving; the next pass retries
                log.warning("reconcile pass failed: %s", type(e).__name__)
            if self._stop.wait(cfg.reconcile_interval_s):
                return

    def wait(self) -> None:
        self.bot_server.wait_for_termination()

    def stop(self, grace: float | None = 2.0) -> None:
        self._stop.set()
        if self._checkpointer is not None:  # let a tree head being signed finish first
            self._checkpointer.join(30)
        self.bot_server.stop(grace).wait()
        self.admin_server.stop(grace).wait()
        self.gateways.close()
