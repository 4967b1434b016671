"""Test certificates and TLS peers (``openssl s_server``) for the lab.

Certificates are made when needed (a private CA per lab, EC P-256 keys, ~10 ms each) and
written as PEM files::

    certs = make_certs(tmp_path, addresses=["127.0.0.1", "::1"])
    certs.ca_bundle              # the private CA, for --ca-bundle tests
    certs.cert("expired"), certs.key("expired")

    with TlsPeer(None, 0, "wrong_name", certs=certs) as peer:   # loopback, any free port
        peer.address, peer.port
    peer = TlsPeer(lab.hosts["h2"], 443, "valid").start()       # inside a lab host

Kinds (``KINDS``): ``valid`` (CA-signed, SAN = ``tls.lab.test`` + the host's addresses),
``expired``, ``not_yet_valid``, ``self_signed`` (right names, no CA), ``wrong_name``
(CA-signed for ``other.lab.test`` only).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from tests.lab.netns import Host, Lab

TLS_HOSTNAME = "tls.lab.test"
WRONG_HOSTNAME = "other.lab.test"
KINDS = ("valid", "expired", "not_yet_valid", "self_signed", "wrong_name")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "portready lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class TlsCerts:
    """PEM files of one certificate set: ``<kind>.pem`` + ``<kind>.key`` and ``ca.pem``."""

    directory: Path
    hostname: str
    addresses: tuple[str, ...]

    @property
    def ca_bundle(self) -> Path:
        """The private CA certificate (PEM) that signed every kind but ``self_signed``."""
        return self.directory / "ca.pem"

    def cert(self, kind: str) -> Path:
        _check_kind(kind)
        return self.directory / f"{kind}.pem"

    def key(self, kind: str) -> Path:
        _check_kind(kind)
        return self.directory / f"{kind}.key"

    def certificate(self, kind: str) -> x509.Certificate:
        """The parsed certificate, e.g. to compare dates and names with a probe's evidence."""
        return x509.load_pem_x509_certificate(self.cert(kind).read_bytes())


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"certificate kind must be one of {KINDS}, not {kind!r}")


class CertAuthority:
    """A private CA; ``issue`` signs leaf certificates with chosen names and dates."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        key_path = directory / "ca.key"
        if self.cert_path.exists() and key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self.key = loaded
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self.key = _key()
        now = dt.datetime.now(dt.timezone.utc)  # noqa: UP017 - Python 3.10
        name = _name("portready lab CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write_key(key_path, self.key)
        _write_cert(self.cert_path, self.cert)

    def issue(
        self,
        names: Sequence[str],
        addresses: Sequence[str],
        not_before: dt.datetime,
        not_after: dt.datetime,
        self_signed: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        subject = _name(names[0])
        issuer_name = subject if self_signed else self.cert.subject
        signer = key if self_signed else self.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256()), key


def make_certs(
    directory: Path,
    hostname: str = TLS_HOSTNAME,
    addresses: Sequence[str] = (),
    ca: CertAuthority | None = None,
) -> TlsCerts:
    """Write every kind of certificate for ``hostname`` + ``addresses`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or CertAuthority(directory)
    if ca.cert_path != directory / "ca.pem":
        (directory / "ca.pem").write_bytes(ca.cert_path.read_bytes())
    now = dt.datetime.now(dt.timezone.utc)  # noqa: UP017 - Python 3.10
    day = dt.timedelta(days=1)
    plan: dict[str, tuple[list[str], Sequence[str], dt.datetime, dt.datetime, bool]] = {
        "valid": ([hostname], addresses, now - day, now + 365 * day, False),
        "expired": ([hostname], addresses, now - 60 * day, now - day, False),
        "not_yet_valid": ([hostname], addresses, now + 30 * day, now + 365 * day, False),
        "self_signed": ([hostname], addresses, now - day, now + 365 * day, True),
        "wrong_name": ([WRONG_HOSTNAME], (), now - day, now + 365 * day, False),
    }
    for kind, (names, addrs, nb, na, self_signed) in plan.items():
        cert, key = ca.issue(names, addrs, nb, na, self_signed=self_signed)
        _write_cert(directory / f"{kind}.pem", cert)
        _write_key(directory / f"{kind}.key", key)
    return TlsCerts(directory, hostname, tuple(addresses))


def lab_ca(lab: Lab) -> CertAuthority:
    """The lab's private CA (made on first use, kept in the lab's work folder)."""
    return CertAuthority(lab.workdir / "tls" / "ca")


def certs_for_host(host: Host, hostname: str = TLS_HOSTNAME) -> TlsCerts:
    """Certificates naming ``hostname`` and the host's IPv4/IPv6 (cached per host)."""
    directory = host.lab.workdir / "tls" / host.name
    if (directory / "wrong_name.pem").exists():
        return TlsCerts(directory, hostname, (host.ipv4, host.ipv6))
    return make_certs(directory, hostname, (host.ipv4, host.ipv6), ca=lab_ca(host.lab))


def loopback_certs(directory: Path) -> TlsCerts:
    """Certificates for ``localhost``/127.0.0.1/::1 (and tls.lab.test) in ``directory``."""
    certs = make_certs(directory, TLS_HOSTNAME, ("127.0.0.1", "::1"))
    return certs


_ACCEPT = re.compile(rb"ACCEPT\s+\[?([^\]\s]*?)\]?:(\d+)\s*$", re.MULTILINE)


class TlsPeer:
    """``openssl s_server`` presenting one kind of certificate.

    ``host=None`` runs it on loopback in the calling namespace (``port=0``: any free port,
    read back from s_server). ``http=True`` answers HTTP requests (``-www``); otherwise it
    echoes lines reversed (``-rev``), a TLS service that is not HTTP.
    """

    def __init__(
        self,
        host: Host | None,
        port: int,
        cert_kind: str = "valid",
        http: bool = True,
        certs: TlsCerts | None = None,
        tls_versions: Sequence[str] = (),
    ) -> None:
        _check_kind(cert_kind)
        self.host = host
        self.cert_kind = cert_kind
        self.http = http
        self.requested_port = port
        self.port = port
        if certs is None:
            if host is None:
                raise ValueError("a loopback TlsPeer needs certs= (see loopback_certs)")
            certs = certs_for_host(host)
        self.certs = certs
        self.address = host.ipv4 if host is not None else "127.0.0.1"
        self.tls_versions = tuple(tls_versions)  # e.g. ("-tls1_2",) to pin a version
        self.process: subprocess.Popen[Any] | None = None
        self._log: Path | None = None

    def __enter__(self) -> TlsPeer:  # noqa: PYI034 - typing.Self is 3.11+
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> TlsPeer:
        # A bare port listens dual stack ("[::]:port" would be IPv6 only in openssl 3.0).
        accept = str(self.port) if self.host is not None else f"127.0.0.1:{self.port}"
        argv = [
            "openssl", "s_server", "-accept", accept,
            "-cert", str(self.certs.cert(self.cert_kind)),
            "-key", str(self.certs.key(self.cert_kind)),
            "-www" if self.http else "-rev", *self.tls_versions,
        ]  # fmt: skip
        self._log = self.certs.directory / f"s_server-{self.cert_kind}-{self.port}-{id(self)}.log"
        with open(self._log, "wb") as log:
            if self.host is not None:
                self.process = self.host.popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            else:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            output = self._log.read_bytes()
            match = _ACCEPT.search(output)
            if match:  # "ACCEPT 127.0.0.1:43751": the port s_server really bound
                self.port = int(match.group(2))
            # For a bare port openssl 3.0 prints a bare "ACCEPT": the requested port it is.
            if (match or b"ACCEPT" in output) and self.port and _connects(self.address, self.port):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                out = self._log.read_text(errors="replace")[-1000:]
                self.stop()
                raise RuntimeError(f"openssl s_server did not start on {accept}: {out}")
            time.sleep(0.05)

    def stop(self) -> None:
        from tests.lab.netns import _kill_group

        if self.process is not None:
            _kill_group(self.process, grace=2.0)
            if self.host is not None:
                try:
                    self.host.lab._processes.remove(self.process)
                except ValueError:
                    pass
            self.process = None


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False
