"""Listeners: Unix domain sockets (default) and TCP with mutual TLS; insecure TCP only for dev.

The Unix socket's file mode is set explicitly (0600 or 0660) right after binding, inside a
directory the signer owns with mode 0700 by default, so only the intended local user (or group)
can reach it. Over TCP the client certificate is required and checked against the configured CA.
"""

from __future__ import annotations

import os
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from signer.config import TlsEntry
from signer.errors import ConfigError
from signer.wirecheck import WireCheckInterceptor

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # oversize is refused by gRPC itself (RESOURCE_EXHAUSTED)


def make_server(workers: int) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="signer"),
        interceptors=[WireCheckInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )


def add_health(server: grpc.Server, services: list[str]) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *services]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def bind_unix(server: grpc.Server, path: Path) -> str:
    """Bind a Unix socket; the caller applies the mode with `secure_unix_socket` after start()."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        path.unlink()
    address = f"unix://{path}"
    server.add_insecure_port(address)  # local socket: protected by file permissions
    return address


def secure_unix_socket(path: Path, mode: str) -> None:
    os.chmod(path, int(mode, 8))


def server_tls_credentials(tls: TlsEntry) -> grpc.ServerCredentials:
    try:
        key = tls.key.read_bytes()
        cert = tls.cert.read_bytes()
        ca = tls.client_ca.read_bytes()
    except OSError as e:
        raise ConfigError(f"tls: cannot read {e.filename}: {e.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def bind_tcp(
    server: grpc.Server, hostport: str, tls: TlsEntry | None, insecure_dev: bool, field: str = "tcp"
) -> str:
    """Bind TCP with mTLS; plain TCP only when `insecure_dev` was given explicitly."""
    if tls is not None:
        port = server.add_secure_port(hostport, server_tls_credentials(tls))
    elif insecure_dev:
        port = server.add_insecure_port(hostport)
    else:
        raise ConfigError(
            f"{field}: {hostport} needs [tls] cert, key and client_ca (mutual TLS); plain TCP is "
            "refused unless you pass --insecure-dev"
        )
    if port == 0:
        raise ConfigError(f"{field}: could not bind {hostport}")
    host = hostport.rpartition(":")[0]
    return f"{host}:{port}"


def client_channel(
    address: str, tls: tuple[bytes, bytes, bytes] | None = None, server_name: str | None = None
) -> grpc.Channel:
    """A channel for bots, operators and tests: `unix://...` or host:port (mTLS when tls given).

    tls = (root CA PEM, client key PEM, client cert PEM).
    """
    opts = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if tls is None:
        return grpc.insecure_channel(address, options=opts)
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls[0], private_key=tls[1], certificate_chain=tls[2]
    )
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, creds, options=opts)
