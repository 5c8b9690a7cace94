"""TLS for the agent: its self-signed certificate, and the host's pin of that certificate.

The agent makes an EC P-256 certificate on first start (``cryptography``) and
keeps it beside its work directory (``<workdir>.tls/``: ``cert.pem``, and
``key.pem`` readable by its user only). There is no certificate authority: the
host pins the certificate itself, by the SHA-256 of its DER form (the
*fingerprint*), and checks it on every connection before it sends a byte of a
request, so the token never goes to a machine that merely answers on the
device's address.

Fingerprints are printed as upper-case hex pairs joined by colons (the form
``openssl x509 -fingerprint -sha256`` prints); plain hex, either case, is
accepted on input.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from .fstree import write_private

CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
CERT_DAYS = 3650


class FingerprintError(ValueError):
    """A fingerprint that is not 32 bytes of hex; one line."""


class PinMismatch(ssl.SSLError):
    """The agent presented another certificate than the pinned one (an ``ssl.SSLError``, so urllib passes it up)."""

    def __init__(self, expected: str, presented: str) -> None:
        super().__init__(f"the agent's certificate changed: pinned fingerprint {expected}, presented {presented}")
        self.expected, self.presented = expected, presented

    def __str__(self) -> str:
        return str(self.args[0])


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:…`` or ``abcd…`` (64 hex digits) -> the canonical ``AB:CD:…`` form."""
    raw = re.sub(r"[:\s]", "", str(text)).removeprefix("sha256/").removeprefix("SHA256/")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        raise FingerprintError(f"fingerprint {str(text)[:120]!r} is not a SHA-256 (64 hex digits, colons optional)")
    return format_fingerprint(bytes.fromhex(raw))


def der_fingerprint(der: bytes) -> str:
    return format_fingerprint(hashlib.sha256(der).digest())


def tls_dir_for(workdir: Path) -> Path:
    """Where an agent with this work directory keeps its certificate: beside it, not in it."""
    workdir = Path(workdir)
    return workdir.with_name(workdir.name + ".tls")


@dataclass(frozen=True)
class AgentCertificate:
    cert: Path
    key: Path
    fingerprint: str
    created: bool  # made by this call (first start)
    key_mode_fixed: bool = False  # the key was readable by others and has been made 0600

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def ensure_certificate(tls_dir: Path, hostname: str | None = None) -> AgentCertificate:
    """The agent's certificate in ``tls_dir``, made there (EC P-256, self-signed) when absent."""
    tls_dir = Path(tls_dir)
    cert, key = tls_dir / CERT_FILE, tls_dir / KEY_FILE
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False
    if not (cert.is_file() and key.is_file()):
        _make_certificate(cert, key, hostname or socket.gethostname())
        created = True
    fixed = False
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        key.chmod(0o600)
        fixed = True
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return AgentCertificate(cert=cert, key=key, fingerprint=der_fingerprint(der), created=created, key_mode_fixed=fixed)


def _make_certificate(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edgepack-agent {hostname}"[:64])])
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    if hostname and hostname != "localhost":
        try:
            names.append(x509.DNSName(hostname))
        except ValueError:
            pass
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_private(key_path, key_pem)
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))


# -- the host's side: pinning -------------------------------------------------------------

def client_context() -> ssl.SSLContext:
    """TLS without certificate authorities: the pin (checked by the caller on every connection) is the trust."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(sock: ssl.SSLSocket, expected: str) -> None:
    """Raise ``PinMismatch`` unless the peer's certificate has the pinned fingerprint."""
    der = sock.getpeercert(binary_form=True)
    presented = der_fingerprint(der) if der else "(no certificate)"
    if presented != expected:
        raise PinMismatch(expected, presented)


def presented_fingerprint(host: str, port: int, timeout_s: float = 10.0) -> str:
    """Connect, complete the handshake, and return the certificate's fingerprint; nothing else is sent."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw, \
            client_context().wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der_fingerprint(der)
