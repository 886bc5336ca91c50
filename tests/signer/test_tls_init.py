"""`bulkhead-signer tls init`: files an operator can deploy as they are.

The certificates are made by the real CLI in a subprocess, then a real `bulkhead-signer serve`
process serves mutual TLS on a TCP port with exactly those files, and bots connect with the
client certificates over real sockets: a signed order goes through to simexchange; a client
certificate from another CA, a server certificate used as a client certificate and a name the
server certificate does not carry are all refused at the handshake.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from botengine.signer_client import AdminClient, SignerClient
from signer.cli import main as cli_main
from signer.errors import ConfigError
from signer.tlsinit import check_server_name
from tests.signer.stack import KEY_ID, Stack, build_stack

SERVER_NAME = "signer.bulkhead.test"


def tls_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", "tls", "init", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def tls_init(out: Path, *args: str) -> dict[str, object]:
    done = tls_cli("--out", str(out), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def tls_main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The same entry point in-process (no interpreter start-up): for the many bad-input cases."""
    argv = ["tls", "init", *args]
    try:
        cli_main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def creds(tls_dir: Path, client: str, ca_dir: Path | None = None) -> tuple[bytes, bytes, bytes]:
    """(trusted CA, client key, client cert) as the bot side takes them."""
    ca = ((ca_dir or tls_dir) / "ca.pem").read_bytes()
    return ca, (tls_dir / f"{client}.key").read_bytes(), (tls_dir / f"{client}.pem").read_bytes()


@dataclass
class MtlsSigner:
    stack: Stack
    tls: Path
    proc: subprocess.Popen[str]
    addresses: dict[str, str]


def start_serve(stack: Stack, log: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A real `bulkhead-signer serve` process on the stack's data directory."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signer.cli",
            "serve",
            "--data-dir",
            str(stack.data_dir),
            "--master-key-file",
            str(stack.keyfile),
        ],
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # the child writes it; freed with the test
        stdin=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # serve prints its bound addresses once it is listening
    assert line, log.read_text()
    return proc, json.loads(line)["serving"]


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsSigner]:
    root = tmp_path_factory.mktemp("tlsinit")
    tls = root / "tls"
    tls_init(tls, "--server-name", SERVER_NAME, "--client", "engine-1", "--client", "admin")
    config = (
        'tcp = "127.0.0.1:0"\nadmin_tcp = "127.0.0.1:0"\n'
        f'[tls]\ncert = "{tls / "server.pem"}"\nkey = "{tls / "server.key"}"\n'
        f'client_ca = "{tls / "ca.pem"}"\n'
    )
    stack = build_stack(root, None, config_extra=config)
    stack.server.stop(0)  # the in-process server only did the set-up; the CLI process serves
    proc, addresses = start_serve(stack, root / "serve.log")
    try:
        yield MtlsSigner(stack, tls, proc, addresses)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0, (root / "serve.log").read_text()
        finally:
            if proc.poll() is None:  # never leave a signer behind
                proc.kill()
                proc.wait(timeout=30)
            stack.stop()


def test_tls_init_writes_private_keys_owner_only_in_an_owner_only_directory(
    tmp_path: Path,
) -> None:
    out = tmp_path / "tls"
    report = tls_init(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{n}.{ext}" for n in ("ca", "server", "engine", "admin") for ext in ("pem", "key")
    )
    for key in out.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert report["server"]["names"] == ["localhost", "127.0.0.1"]  # type: ignore[index]
    assert [c["name"] for c in report["clients"]] == ["engine", "admin"]  # type: ignore[union-attr]


def test_certificates_carry_the_names_and_usages_mtls_needs(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    tls_init(out, "--server-name", SERVER_NAME, "--server-name", "10.1.2.3", "--client", "eng")
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    client = x509.load_pem_x509_certificate((out / "eng.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", SERVER_NAME]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    for cert, usage in (
        (server, ExtendedKeyUsageOID.SERVER_AUTH),
        (client, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]


def test_a_real_signer_serves_mtls_with_the_generated_files_and_signs_an_order(
    mtls: MtlsSigner,
) -> None:
    stack = mtls.stack
    # Dialled by IP: the certificate's 127.0.0.1 SAN is what is checked (no name override).
    client = SignerClient(
        mtls.addresses["bot_tcp"], stack.bot, KEY_ID, tls=creds(mtls.tls, "engine-1")
    )
    stack.clients.append(client)
    price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
    reply = client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "tls-init-1")
    assert reply.decision.allowed, reply.decision.violations
    assert reply.order.client_order_id == "tls-init-1" and reply.order.status == "open"
    # The extra --server-name is in the certificate too.
    named = SignerClient(
        mtls.addresses["bot_tcp"],
        stack.bot,
        KEY_ID,
        tls=creds(mtls.tls, "engine-1"),
        server_name=SERVER_NAME,
    )
    stack.clients.append(named)
    assert named.get_policy().key_id == KEY_ID
    # The admin client certificate reaches the admin listener (the operator still signs).
    admin = AdminClient(mtls.addresses["admin_tcp"], stack.operator, tls=creds(mtls.tls, "admin"))
    stack.clients.append(admin)
    assert admin.status().keys == 1
    assert stack.verify().ok


@pytest.mark.parametrize("case", ["other_ca", "server_cert_as_client", "wrong_server_name"])
def test_mtls_refuses_what_the_generated_ca_did_not_issue_for_that_use(
    mtls: MtlsSigner, tmp_path: Path, case: str
) -> None:
    stack = mtls.stack
    server_name = None
    if case == "other_ca":
        other = tmp_path / "other"
        tls_init(other, "--client", "engine-1")  # same client name, another CA
        tls = creds(other, "engine-1", ca_dir=mtls.tls)
    elif case == "server_cert_as_client":
        tls = creds(mtls.tls, "server")  # issued by the right CA, but for serverAuth only
    else:
        tls = creds(mtls.tls, "engine-1")
        server_name = "evil.example"  # not in the server certificate
    client = SignerClient(
        mtls.addresses["bot_tcp"], stack.bot, KEY_ID, tls=tls, server_name=server_name, timeout=10
    )
    stack.clients.append(client)
    before = stack.audit_size()
    with pytest.raises(grpc.RpcError) as e:
        client.get_policy()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
    assert stack.audit_size() == before  # refused at the handshake: never reached the signer


def test_existing_directory_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    tls_init(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(tls_cli("--out", str(out)), "--out", str(out), "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    tls_init(out, "--force")
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.keys() == before.keys() and after["ca.key"] != before["ca.key"]


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "file"
    out.write_text("not a directory")
    one_line_error(tls_main(capsys, "--out", str(out)), "--out", "not a directory")
    assert out.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--client", "a/b"], ["--client", "'a/b'"]),
        (["--client", "../x"], ["--client", "'../x'"]),
        (["--client", "ca"], ["--client", "'ca'", "not ca or server"]),
        (["--client", ""], ["--client", "''"]),
        (["--client", "e" * 65], ["--client", "1-64"]),
        (["--client", "bot", "--client", "BOT"], ["--client", "'BOT'", "more than once", "'bot'"]),
        (["--server-name", "*.example.com"], ["--server-name", "'*.example.com'", "wildcard"]),
        (["--server-name", "a..b"], ["--server-name", "'a..b'"]),
        (["--server-name=-a.example"], ["--server-name", "'-a.example'"]),
        (["--server-name", "a_b.example"], ["--server-name", "'a_b.example'"]),
        (["--server-name", "x" * 64 + ".example"], ["--server-name", "1-63"]),
        (["--days", "0"], ["--days", "0", "1..3650"]),
        (["--days", "3651"], ["--days", "3651", "1..3650"]),
    ],
)
def test_bad_names_and_ranges_are_refused_naming_field_and_value_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needles: list[str]
) -> None:
    out = tmp_path / "tls"
    one_line_error(tls_main(capsys, "--out", str(out), *args), *needles)
    assert not out.exists()


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=4))
def test_every_rfc1123_host_name_is_accepted_as_given(labels: list[str]) -> None:
    name = ".".join(labels)
    assert check_server_name(name) == name


OUTSIDE_DNS_AND_IP = st.builds(
    lambda a, bad, b: a + bad + b,
    st.text(max_size=20),
    st.sampled_from(list("*/ _@%\\\0")),
    st.text(max_size=20),
)


@given(OUTSIDE_DNS_AND_IP)
def test_a_name_with_a_character_outside_dns_and_ip_syntax_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^--server-name: "):
        check_server_name(name)
