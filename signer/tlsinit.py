"""`bulkhead-signer tls init`: a private CA, a server certificate and client certificates.

Mutual TLS between bots and a signer on another host needs three things: a CA that only this
deployment trusts, a server certificate whose names the bots dial, and one client certificate per
engine (or admin) host. Keys are ECDSA P-256, written 0600 in a fresh 0700 directory; nothing is
overwritten unless asked. The CA key should then move offline: the signer needs only
`server.pem`, `server.key` and `ca.pem`; each client needs its own pair and `ca.pem`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signer.errors import ConfigError

DEFAULT_CLIENTS = ("engine", "admin")
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
CA_DAYS = 3650
MAX_DAYS = 3650
RESERVED = {"ca", "server"}  # client names that would collide with the CA's or server's files
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Issued:
    """One certificate as written: who it names, its files, and its SHA-256 fingerprint."""

    name: str
    cert: Path
    key: Path
    fingerprint: str


@dataclass(frozen=True)
class TlsBundle:
    out: Path
    ca: Issued
    server: Issued
    server_names: tuple[str, ...]
    clients: tuple[Issued, ...]
    not_after: dt.datetime


def check_server_name(name: str) -> str:
    """A DNS name (RFC 1123 labels, no wildcard) or an IP address; returned normalised."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        if getattr(ip, "scope_id", None) is None:  # a scoped IPv6 (fe80::1%eth0) names no host
            return str(ip)
    host = name.rstrip(".").lower()
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(lbl) for lbl in labels):
        raise ConfigError(
            f"--server-name: {name[:80]!r} is not an IP address or a DNS name (labels of 1-63 "
            "letters, digits or '-', not starting or ending with '-'; no wildcards)"
        )
    return host


def check_client_name(name: str) -> str:
    """A client name becomes a file name and the certificate's CN: keep it plain."""
    if not _CLIENT_NAME.fullmatch(name) or name.lower() in RESERVED:
        raise ConfigError(
            f"--client: {name[:80]!r} is not allowed; use 1-64 letters, digits, '.', '_' or '-' "
            f"starting with a letter or digit, and not {' or '.join(sorted(RESERVED))}"
        )
    return name


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"--days: {days} is out of range; allowed 1..{MAX_DAYS}")
    return days


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bulkhead"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cn: str,
    days: int,
    eku: x509.ObjectIdentifier,
    sans: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        _builder(_name(cn), ca_cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        b = b.add_extension(_san(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with `mode` from the start: no readable window."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _save(out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return Issued(str(name), cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex())


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"--out: {out} exists and is not empty; refusing to overwrite keys (pass --force)"
        )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)


def init_tls(
    out: Path,
    *,
    server_names: list[str] | None = None,
    clients: list[str] | None = None,
    days: int = 365,
    force: bool = False,
) -> TlsBundle:
    """Create ca.pem/.key, server.pem/.key and NAME.pem/.key per client in `out`.

    Every argument is checked before anything is written, so bad input changes nothing.
    """
    days = check_days(days)
    given = list(dict.fromkeys(check_server_name(n) for n in server_names or []))
    names = tuple(dict.fromkeys([*DEFAULT_SERVER_NAMES, *given]))
    client_names = [check_client_name(c) for c in clients or DEFAULT_CLIENTS]
    lowered = [c.lower() for c in client_names]
    for i, low in enumerate(lowered):
        if low in lowered[:i]:
            first = client_names[lowered.index(low)]
            raise ConfigError(
                f"--client: {client_names[i]!r} is given more than once (as {first!r}; names are "
                "case-insensitive since they become file names)"
            )
    _prepare_out(out, force)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Bulkhead signer CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, max(CA_DAYS, days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca = _save(out, "ca", ca_cert, ca_key)
    cn = given[0] if given else names[0]
    cert, key = _leaf(ca_key, ca_cert, cn, days, ExtendedKeyUsageOID.SERVER_AUTH, names)
    server = _save(out, "server", cert, key)
    issued = []
    for c in client_names:
        cert, key = _leaf(ca_key, ca_cert, c, days, ExtendedKeyUsageOID.CLIENT_AUTH)
        issued.append(_save(out, c, cert, key))
    return TlsBundle(out, ca, server, names, tuple(issued), cert.not_valid_after_utc)


def signer_toml_snippet(bundle: TlsBundle, listen: str = "0.0.0.0:7443") -> str:
    """What the operator pastes into signer.toml to serve bots over mutual TLS."""
    return (
        f'tcp = "{listen}"\n'
        "[tls]\n"
        f'cert = "{bundle.server.cert.resolve()}"\n'
        f'key = "{bundle.server.key.resolve()}"\n'
        f'client_ca = "{bundle.ca.cert.resolve()}"\n'
    )


def bundle_json(bundle: TlsBundle) -> dict[str, object]:
    def one(i: Issued) -> dict[str, str]:
        return {"name": i.name, "cert": str(i.cert), "key": str(i.key), "sha256": i.fingerprint}

    return {
        "out": str(bundle.out),
        "ca": one(bundle.ca),
        "server": {**one(bundle.server), "names": list(bundle.server_names)},
        "clients": [one(c) for c in bundle.clients],
        "not_after": bundle.not_after.isoformat(),
    }


def describe(bundle: TlsBundle) -> str:
    """Human output: what was written, where each file goes, and the signer.toml lines."""
    lines = [
        f"CA:     {bundle.ca.cert}  (key {bundle.ca.key}: keep it offline)",
        f"server: {bundle.server.cert}, {bundle.server.key}  names: "
        + ", ".join(bundle.server_names),
    ]
    lines += [f"client: {c.cert}, {c.key}  ({c.name})" for c in bundle.clients]
    lines += [
        f"valid until {bundle.not_after:%Y-%m-%d}",
        "",
        "signer host: server.pem, server.key, ca.pem; in signer.toml:",
        signer_toml_snippet(bundle).rstrip(),
        "each client host: its NAME.pem, NAME.key and ca.pem",
    ]
    return "\n".join(lines)
