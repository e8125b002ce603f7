"""TLS between clients, routers and nodes: contexts that follow their files,
and a small CA to issue the certificates.

A node or router serves HTTPS with a certificate and key from files (the
operator's Secret, mounted); when the kubelet swaps the files for renewed
ones, :class:`Reloading` loads them again into the same ``SSLContext``, so new
connections get the new certificate without a restart. Nodes require a client
certificate signed by the cluster's CA (mutual TLS): the router presents one.

:class:`Authority` is the operator's CA: a self-signed EC key that issues one
certificate per cluster for nodes and routers (server and client use).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentmem.runtime.serve import run_while_serving

log = logging.getLogger(__name__)

#: How long issued certificates last, and when they are renewed (time left).
CERT_DAYS = 90
RENEW_DAYS = 30
CA_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    ca: str | None = None  # trusted CA: clients' certificates (server), the server's (client)


class Reloading:
    """An ``SSLContext`` that loads its files again when they change."""

    def __init__(self, files: TlsFiles, server: bool, require_client_cert: bool = False) -> None:
        self.files = files
        purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
        self.context = ssl.create_default_context(purpose)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if server and files.ca:
            # Optional at the handshake (the kubelet's probes present none); the
            # data endpoints refuse a connection without one (has_client_cert).
            self.context.verify_mode = (
                ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
            )
        self._stamp: tuple[float, ...] = ()
        self.load()

    def _stamps(self) -> tuple[float, ...]:
        paths = [self.files.cert, self.files.key, *([self.files.ca] if self.files.ca else [])]
        return tuple(os.stat(p).st_mtime for p in paths)

    def load(self) -> None:
        stamp = self._stamps()
        self.context.load_cert_chain(self.files.cert, self.files.key)
        if self.files.ca:
            self.context.load_verify_locations(self.files.ca)  # adds: an old CA stays trusted
        self._stamp = stamp

    def reload(self) -> bool:
        """Load the files again if they changed; True when they did."""
        try:
            if self._stamps() == self._stamp:
                return False
            self.load()
        except (OSError, ssl.SSLError) as exc:
            log.warning("keeping the TLS certificate we have: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return True

    async def follow(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()


def serve_tls(app: web.Application, files: TlsFiles | None, mutual: bool) -> ssl.SSLContext | None:
    """The server context of ``files`` (None: plain HTTP), kept following its files
    while ``app`` serves; with ``mutual``, clients' certificates are asked for."""
    if files is None:
        return None
    reloading = Reloading(files, server=True)
    run_while_serving(app, reloading.follow)
    app[MUTUAL_TLS] = mutual
    return reloading.context


#: Whether the app wants a verified client certificate on its data endpoints.
MUTUAL_TLS = web.AppKey("mutual_tls", bool)


def has_client_cert(request: web.Request) -> bool:
    """Whether the request's connection presented a certificate the CA signed."""
    return bool(request.transport and request.transport.get_extra_info("peercert"))


def client_context(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client's context: trust ``ca`` (else the system's), present ``cert`` if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


# The operator's CA ---------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (for a Secret or a 0600 file)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A CA: its certificate and key, PEM."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC private key")
        self.key = key

    @classmethod
    def create(cls, name: str, days: int = CA_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), private_pem(key))

    def issue(
        self,
        common_name: str,
        dns_names: Iterable[str],
        ips: Iterable[str] = (),
        days: int = CERT_DAYS,
    ) -> tuple[bytes, bytes]:
        """A certificate for servers and clients alike, and its key (PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), private_pem(key)


def needs_renewal(cert_pem: bytes, renew_days: int = RENEW_DAYS) -> bool:
    """Whether a certificate expires within ``renew_days`` (or cannot be read)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    return cert.not_valid_after_utc - _now() < datetime.timedelta(days=renew_days)
