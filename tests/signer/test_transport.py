"""Listeners: Unix socket modes, TCP with mutual TLS (and refusals), insecure-dev TCP, health.

Everything runs over real sockets: the signer's gRPC servers on Unix sockets and on TCP port 0
(the kernel picks a free port; `SignerServer.start()` reports it in `addresses`), with X.509
material generated at run time by tests/support/certs.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from botengine.signer_client import Identity, SignerClient, channel_for
from bulkhead.signer.v1 import admin_pb2 as apb
from bulkhead.signer.v1 import admin_pb2_grpc, signer_pb2_grpc
from bulkhead.signer.v1 import signer_pb2 as pb
from signer.config import SignerConfig
from signer.errors import ConfigError
from signer.keystore import MasterKey
from signer.server import MasterKeySource, OpenSigner, SignerServer, initialize, open_signer
from tests.signer.stack import KEY_ID, Stack, build_stack
from tests.support.certs import TlsFiles, write_tls_files

SERVER_NAME = "localhost"  # the server certificate's SAN; we dial 127.0.0.1


def mode_of(path: Path) -> int:
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), f"{path} is not a socket"
    return stat.S_IMODE(st.st_mode)


def socket_path(address: str) -> Path:
    assert address.startswith("unix://"), address
    return Path(address.removeprefix("unix://"))


def health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def tls_config(tls: TlsFiles) -> str:
    return (
        'tcp = "127.0.0.1:0"\nadmin_tcp = "127.0.0.1:0"\n'
        f'[tls]\ncert = "{tls.server_cert}"\nkey = "{tls.server_key}"\nclient_ca = "{tls.ca}"\n'
    )


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return write_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_stack(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Stack]:
    s = build_stack(tmp_path, None, config_extra=tls_config(tls_files))
    try:
        yield s
    finally:
        s.stop()


def second_server(stack: Stack, tmp_path: Path, **update: object) -> OpenSigner:
    """Another signer process's view of the same data: own sockets, a changed config."""
    cfg = SignerConfig.model_validate(
        {
            **stack.opened.config.model_dump(),
            "socket": tmp_path / "second.sock",
            "admin_socket": tmp_path / "second-admin.sock",
            "reconcile_interval_s": 0,
            **update,
        }
    )
    o = stack.opened
    return OpenSigner(o.data_dir, o.engine, o.keystore, o.audit, cfg)


# --- Unix sockets -----------------------------------------------------------------------------


def test_unix_sockets_are_owner_only_by_default(sqlite_stack: Stack) -> None:
    bot_sock = socket_path(sqlite_stack.addresses["bot_unix"])
    admin_sock = socket_path(sqlite_stack.addresses["admin_unix"])
    assert mode_of(bot_sock) == 0o600
    assert mode_of(admin_sock) == 0o600
    assert stat.S_IMODE(os.stat(bot_sock.parent).st_mode) == 0o700
    # ... and the sockets really serve.
    assert sqlite_stack.client().get_policy().key_id == KEY_ID
    assert sqlite_stack.admin().status().keys == 1


def test_socket_mode_0660_opens_the_bot_socket_to_the_group_but_not_the_admin_socket(
    tmp_path: Path,
) -> None:
    stack = build_stack(tmp_path, None, config_extra='socket_mode = "0660"')
    try:
        assert mode_of(socket_path(stack.addresses["bot_unix"])) == 0o660
        assert mode_of(socket_path(stack.addresses["admin_unix"])) == 0o600
        assert stack.client().get_policy().key_id == KEY_ID
    finally:
        stack.stop()


# --- TCP with mutual TLS ----------------------------------------------------------------------


def test_tcp_port_zero_reports_the_bound_port(tls_stack: Stack) -> None:
    for name in ("bot_tcp", "admin_tcp"):
        host, _, port = tls_stack.addresses[name].rpartition(":")
        assert host == "127.0.0.1" and port.isdigit() and int(port) > 0
    assert tls_stack.addresses["bot_tcp"] != tls_stack.addresses["admin_tcp"]


def test_mtls_accepts_a_client_certificate_from_the_configured_ca(
    tls_stack: Stack, tls_files: TlsFiles
) -> None:
    tls = (tls_files.ca_pem, tls_files.client.key, tls_files.client.cert)
    client = SignerClient(
        tls_stack.addresses["bot_tcp"], tls_stack.bot, KEY_ID, tls=tls, server_name=SERVER_NAME
    )
    tls_stack.clients.append(client)
    view = client.get_policy()
    assert view.key_id == KEY_ID and view.policy_version == 1
    # The signature still matters over mTLS: the TLS client cert is not a bot identity.
    forger = SignerClient(
        tls_stack.addresses["bot_tcp"],
        Identity.generate(tls_stack.bot.name),
        KEY_ID,
        tls=tls,
        server_name=SERVER_NAME,
    )
    tls_stack.clients.append(forger)
    with pytest.raises(grpc.RpcError) as e:
        forger.get_policy()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bad_signature" in (e.value.details() or "")


@pytest.mark.parametrize("client_kind", ["no_client_cert", "rogue_ca", "plaintext"])
def test_mtls_refuses_clients_without_a_certificate_from_the_configured_ca(
    tls_stack: Stack, tls_files: TlsFiles, client_kind: str
) -> None:
    address = tls_stack.addresses["bot_tcp"]
    opts = [("grpc.ssl_target_name_override", SERVER_NAME)]
    if client_kind == "no_client_cert":
        creds = grpc.ssl_channel_credentials(root_certificates=tls_files.ca_pem)
        channel = grpc.secure_channel(address, creds, options=opts)
    elif client_kind == "rogue_ca":
        rogue = tls_files.rogue_client
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls_files.ca_pem, private_key=rogue.key, certificate_chain=rogue.cert
        )
        channel = grpc.secure_channel(address, creds, options=opts)
    else:
        channel = grpc.insecure_channel(address)
    bot = tls_stack.client()  # used only to build a correctly signed request
    request = bot.sign(pb.PolicyQuery(header=bot.header("GetPolicy")))
    before = tls_stack.audit_size()
    try:
        with pytest.raises(grpc.RpcError) as e:
            signer_pb2_grpc.SignerStub(channel).GetPolicy(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            health(channel)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
    assert tls_stack.audit_size() == before  # refused at the handshake: never reached the signer


def test_health_reports_serving_on_every_listener(tls_stack: Stack, tls_files: TlsFiles) -> None:
    tls = (tls_files.ca_pem, tls_files.client.key, tls_files.client.cert)
    listeners = {
        "bot_unix": ("bulkhead.signer.v1.Signer", None),
        "admin_unix": ("bulkhead.signer.v1.Admin", None),
        "bot_tcp": ("bulkhead.signer.v1.Signer", tls),
        "admin_tcp": ("bulkhead.signer.v1.Admin", tls),
    }
    serving = health_pb2.HealthCheckResponse.SERVING
    for name, (service, creds) in listeners.items():
        channel = channel_for(tls_stack.addresses[name], creds, SERVER_NAME if creds else None)
        try:
            assert health(channel) == serving, name
            assert health(channel, service) == serving, name
            with pytest.raises(grpc.RpcError) as e:
                health(channel, "no.such.Service")
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            channel.close()


def test_admin_service_is_not_served_on_the_bot_listener(sqlite_stack: Stack) -> None:
    """Separate listeners: the bot socket has no Admin service, the admin socket no Signer."""
    admin = sqlite_stack.admin()
    channel = channel_for(sqlite_stack.addresses["bot_unix"])
    try:
        stub = admin_pb2_grpc.AdminStub(channel)
        request = admin.sign(apb.StatusCommand(header=admin.header("Status")))
        with pytest.raises(grpc.RpcError) as e:
            stub.Status(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
    channel = channel_for(sqlite_stack.addresses["admin_unix"])
    try:
        bot = sqlite_stack.client()
        request = bot.sign(pb.PolicyQuery(header=bot.header("GetPolicy")))
        with pytest.raises(grpc.RpcError) as e:
            signer_pb2_grpc.SignerStub(channel).GetPolicy(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()


# --- plain TCP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "tcp",
        "admin_tcp",
    ],
)
def test_plain_tcp_without_tls_is_refused_at_start_naming_the_field(
    tmp_path: Path, field: str
) -> None:
    data_dir = tmp_path / "data"
    keyfile = tmp_path / "master.key"
    MasterKey.generate_keyfile(keyfile)
    source = MasterKeySource(keyfile=keyfile)
    initialize(data_dir, source, kdf_profile="interactive", actor="test")
    cfg = SignerConfig.model_validate({field: "127.0.0.1:0", "reconcile_interval_s": 0})
    opened = open_signer(data_dir, source, config=cfg)
    server = SignerServer(opened)
    try:
        with pytest.raises(ConfigError, match=r"needs .*mutual TLS.*--insecure-dev") as e:
            server.start()
    finally:
        server.bot_server.stop(None)
        server.admin_server.stop(None)
        server.gateways.close()
        opened.close()
    assert "bot_tcp" not in server.addresses and "admin_tcp" not in server.addresses
    assert str(e.value).startswith(f"{field}: 127.0.0.1:0 needs"), str(e.value)


def test_plain_tcp_serves_when_insecure_dev_is_given(sqlite_stack: Stack, tmp_path: Path) -> None:
    opened = second_server(sqlite_stack, tmp_path, tcp="127.0.0.1:0", admin_tcp="127.0.0.1:0")
    server = SignerServer(opened, insecure_dev=True)
    addresses = server.start()
    try:
        client = SignerClient(addresses["bot_tcp"], sqlite_stack.bot, KEY_ID)
        sqlite_stack.clients.append(client)
        assert client.get_policy().key_id == KEY_ID
        for name in ("bot_tcp", "admin_tcp"):
            channel = channel_for(addresses[name])
            try:
                assert health(channel) == health_pb2.HealthCheckResponse.SERVING
            finally:
                channel.close()
    finally:
        server.stop(0)
