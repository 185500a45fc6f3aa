"""Self-signed serving certificate for the test API server (``cryptography``).

kubectl (client-go's clientcmd) only sends kubeconfig credentials over TLS:
with an ``http://`` server it drops the token, so the server speaks HTTPS."""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_CACHE: dict[str, tuple[bytes, bytes]] = {}


def _generate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubectl-record test apiserver")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def make_self_signed(directory: str) -> tuple[str, str]:
    """Write ``tls.crt``/``tls.key`` to ``directory`` (one key pair per process) and return their paths."""
    if "pair" not in _CACHE:
        _CACHE["pair"] = _generate()
    cert_pem, key_pem = _CACHE["pair"]
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
    with open(cert, "wb") as fh:
        fh.write(cert_pem)
    with open(key, "wb") as fh:
        fh.write(key_pem)
    os.chmod(key, 0o600)
    return cert, key
