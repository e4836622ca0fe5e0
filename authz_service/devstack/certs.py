"""Development certificates, made at start and never committed.

``dev.crt``/``dev.key`` serve Envoy's TLS listener (localhost, 127.0.0.1); a client CA
and one client certificate let the demo show mTLS identities.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LIFETIME = datetime.timedelta(days=7)


def ensure_dev_certificates(directory: Path) -> Path:
    """Write the certificates into ``directory`` unless they are there; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "dev.crt").exists() and (directory / "client.crt").exists():
        return directory
    server_key, client_ca_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(3)
    )
    server = _certificate(
        "authz-service dev server", server_key, server_key, server_name=True, is_ca=False
    )
    client_ca = _certificate(
        "authz-service dev client CA", client_ca_key, client_ca_key, server_name=False, is_ca=True
    )
    client = _certificate(
        "demo-client",
        client_key,
        client_ca_key,
        server_name=False,
        is_ca=False,
        issuer=client_ca.subject,
        uri="spiffe://demo.local/ns/default/sa/demo-client",
    )
    _write(directory / "dev.crt", server.public_bytes(serialization.Encoding.PEM))
    _write(directory / "dev.key", _key_bytes(server_key))
    _write(directory / "client-ca.crt", client_ca.public_bytes(serialization.Encoding.PEM))
    _write(directory / "client.crt", client.public_bytes(serialization.Encoding.PEM))
    _write(directory / "client.key", _key_bytes(client_key))
    return directory


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    server_name: bool,
    is_ca: bool,
    issuer: x509.Name | None = None,
    uri: str | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if server_name:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if uri:
        names = [x509.UniformResourceIdentifier(uri)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(file: Path, content: bytes) -> None:
    file.write_bytes(content)
    file.chmod(0o600)
