"""Certificates for the injection webhook: a self-signed CA and a serving certificate it signs.

The API server calls the webhook over HTTPS only and checks the serving certificate against the
``caBundle`` of the MutatingWebhookConfiguration, by name: a DNS name for ``service:`` (the
Service's ``<name>.<namespace>.svc``), an IP address SAN for ``url: https://127.0.0.1:…``
(a certificate naming only a DNS name "localhost" is refused for an IP).

Used by the tests and by ``a11i operator --role webhook --self-signed`` on a laptop; the chart
generates its own (or cert-manager does). kopf's built-in generator needs ``oscrypto``, which
fails against OpenSSL 3, hence ``cryptography`` here.

Pure apart from :func:`write`: no network, no kopf.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: File names in a certificate directory, as a kubernetes.io/tls Secret mounts them.
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    """PEM bytes: the CA (for the ``caBundle``), the serving certificate and its key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def self_signed(
    names: Iterable[str],
    *,
    common_name: str = "a11i-webhook",
    days: int = 365,
    now: datetime.datetime | None = None,
) -> ServingCertificate:
    """A fresh CA and a serving certificate for ``names``: each an IP address (an IP SAN) or
    a DNS name (a DNS SAN). EC P-256 keys: small and fast to make, accepted by the API server."""
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    if not sans:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCertificate(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write(certificate: ServingCertificate, directory: Path) -> None:
    """``tls.crt``, ``tls.key`` (mode 0600) and ``ca.crt`` into ``directory``, each replaced
    atomically (written beside, then renamed), so a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data, mode in (
        (KEY_FILE, certificate.key_pem, 0o600),
        (CERT_FILE, certificate.cert_pem, 0o644),
        (CA_FILE, certificate.ca_pem, 0o644),
    ):
        partial = directory / f".{name}.tmp"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(partial, directory / name)
